"""XNAT-compatible sandbox server for tests, benchmarks and offline trials.

:class:`Sandbox` runs the HTTP server (and optionally a DICOM SCP) over a store in a data folder;
:class:`SandboxConfig` holds its settings; :class:`Faults` makes it misbehave on purpose.
"""

from __future__ import annotations

from xnatio.sandbox.faults import Faults
from xnatio.sandbox.server import Sandbox
from xnatio.sandbox.settings import SandboxConfig

__all__ = ["Faults", "Sandbox", "SandboxConfig"]
