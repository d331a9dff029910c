"""The ``xio`` command line: parse options, call the library, render the outcome.

:mod:`xnatio.cli.app` holds the command group and the entry point; each sub-command lives in its
own module here and is imported only when it runs.
"""

from __future__ import annotations

from xnatio.cli.app import app, configure_logging, main

__all__ = ["app", "configure_logging", "main"]
