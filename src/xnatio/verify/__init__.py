"""Verify: what the server holds for a session, compared with the local inventory.

Identity by SOP Instance UID (:mod:`~xnatio.verify.identify`), the comparison per scan
(:mod:`~xnatio.verify.compare`), the content checks on the stored files (listing sizes and
digests, or every data element: :mod:`~xnatio.verify.content`, :mod:`~xnatio.verify.deep`), and
the look at the server, waiting for XNAT to settle (:mod:`~xnatio.verify.session`).
"""

from __future__ import annotations

from xnatio.verify.compare import Comparison, compare
from xnatio.verify.content import VERIFY_LEVELS, ContentCheck, VerifyLevel, verify_level
from xnatio.verify.deep import ExpectedEdits
from xnatio.verify.session import VerifyReport, await_session, verify_session

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
