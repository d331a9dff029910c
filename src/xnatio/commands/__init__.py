"""The ``xio`` sub-commands, one module each, imported lazily by :mod:`xnatio.cli`."""

from __future__ import annotations
