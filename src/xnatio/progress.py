"""Progress events shared by both transports.

Uploaders call a user-supplied ``progress_callback`` with :class:`ProgressEvent` objects. The
callback runs in worker threads, so it must be quick and thread-safe; exceptions it raises are
logged and ignored so that a faulty display never breaks an upload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

Phase = Literal["scanning", "archiving", "uploading", "committing", "verifying", "done"]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One step of progress.

    Attributes
    ----------
    phase
        ``scanning``, ``archiving``, ``uploading``, ``committing``, ``verifying`` or ``done``.
    current, total
        Units done and expected in this phase (files while scanning, batches or instances while
        sending).
    message
        A short human-readable description.
    bytes_sent, bytes_total
        Payload bytes sent so far and expected in total (0 when not applicable).
    batch
        The batch (REST) or association (C-STORE) index the event concerns, if any.
    retries
        Retries so far in the whole upload.
    """

    phase: Phase
    current: int
    total: int
    message: str = ""
    bytes_sent: int = 0
    bytes_total: int = 0
    batch: int | None = None
    retries: int = 0


ProgressCallback = Callable[[ProgressEvent], None]


def emit(callback: ProgressCallback | None, event: ProgressEvent) -> None:
    """Call ``callback`` with ``event``, logging and swallowing any error it raises."""
    if callback is None:
        return
    try:
        callback(event)
    except Exception:
        logger.exception("progress callback failed (ignored)")
