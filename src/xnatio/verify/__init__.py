"""Verify: what the server holds for a session, compared with the local inventory."""

from __future__ import annotations

from xnatio.verify.compare import Comparison, compare
from xnatio.verify.session import VerifyReport, await_session, verify_session

__all__ = ["Comparison", "VerifyReport", "await_session", "compare", "verify_session"]
