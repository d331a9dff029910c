"""Verify: what the server holds for a session, compared with the local inventory.

Identity by SOP Instance UID (:mod:`~xnatio.verify.identify`), the comparison per scan
(:mod:`~xnatio.verify.comparison`), the content checks on the stored files (listing sizes and
digests, or every data element: :mod:`~xnatio.verify.content`, :mod:`~xnatio.verify.deep`), and
the look at the server, waiting for XNAT to settle (:mod:`~xnatio.verify.session`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from xnatio.verify.levels import VERIFY_LEVELS, VerifyLevel, verify_level

if TYPE_CHECKING:
    from xnatio.verify.comparison import Comparison, compare
    from xnatio.verify.content import ContentCheck
    from xnatio.verify.deep import ExpectedEdits
    from xnatio.verify.session import VerifyReport, await_session, verify_session

# Loaded on first use: the checks need the HTTP client, which an upload without a server (or one
# that only parses its options) never loads.
_LAZY = {
    "Comparison": "xnatio.verify.comparison",
    "compare": "xnatio.verify.comparison",
    "ContentCheck": "xnatio.verify.content",
    "ExpectedEdits": "xnatio.verify.deep",
    "VerifyReport": "xnatio.verify.session",
    "await_session": "xnatio.verify.session",
    "verify_session": "xnatio.verify.session",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "VERIFY_LEVELS",
    "Comparison",
    "ContentCheck",
    "ExpectedEdits",
    "VerifyLevel",
    "VerifyReport",
    "await_session",
    "compare",
    "verify_level",
    "verify_session",
]
