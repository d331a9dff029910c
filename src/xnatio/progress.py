"""Progress events shared by both transports.

Uploaders call a user-supplied ``progress_callback`` with :class:`ProgressEvent` objects.

Threads: an event arrives on the thread that made the progress. Scanning, committing, waiting,
verifying and ``done`` arrive on the calling thread; ``uploading`` events arrive on the upload's
worker threads (REST batches, C-STORE associations) and, for the first and the last of the
phase, on the calling thread. xnatio never runs two callbacks at once (one lock is held around
every call), so events arrive one after another, in the order they were made, and a callback need
not guard its own state against itself. It must still be quick: the thread that emits waits for
it. Exceptions it raises are logged and ignored so that a faulty display never breaks an upload
(``KeyboardInterrupt`` is not an exception here: Ctrl-C in the calling thread stops the upload).

Amounts: bytes are the DICOM files' own bytes (not the archive framing, not the compressed body),
and they count only this run's work: a resume counts what it sends, not what the server already
held. ``elapsed`` is the seconds since the phase began; for ``uploading`` the rate of the upload
is ``bytes_sent / elapsed``, the same definition the results use (``send_rate``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

Phase = Literal["scanning", "archiving", "uploading", "committing", "waiting", "verifying", "done"]

# Seconds between two events of one throttled stream (scanning, bytes): a display redraws about
# ten times a second, so more events would only cost the upload time.
THROTTLE_INTERVAL = 0.1


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One step of progress.

    Attributes
    ----------
    phase
        ``scanning``, ``archiving``, ``uploading``, ``committing``, ``waiting`` (for XNAT to
        build and archive a C-STORE session, or to finish with it before a resume),
        ``verifying`` or ``done``.
    current, total
        Units done and expected in this phase: files while scanning; batches acknowledged by
        XNAT (REST) or instances the receiver answered for with success (C-STORE) while
        uploading; instances XNAT holds of those expected while waiting (0 of 0 when the server
        does not say); instances checked while verifying; files sent of those to send at
        ``done``.
    message
        A short human-readable description.
    bytes_sent, bytes_total
        File bytes sent so far and to send in this run (0 when not applicable). While uploading,
        ``bytes_sent`` runs ahead of ``current``: a batch's bytes are all sent before XNAT
        acknowledges it.
    batch
        The batch (REST) or association (C-STORE) index the event concerns, if any.
    retries
        Retries so far in the whole upload.
    elapsed
        Seconds since this phase began (for ``done``: since the upload began).
    state
        While waiting: what XNAT is doing with the session, ``absent`` (nothing to see yet),
        ``receiving`` (still taking files in, until it has received nothing for its idle time),
        ``building``, ``archiving``, ``ready`` (built, in the prearchive), ``conflict``,
        ``error`` or ``archived``. Empty in the other phases.
    failed
        Units of this phase that failed so far (batches or instances; 0 when none).
    """

    phase: Phase
    current: int
    total: int
    message: str = ""
    bytes_sent: int = 0
    bytes_total: int = 0
    batch: int | None = None
    retries: int = 0
    elapsed: float = 0.0
    state: str = ""
    failed: int = 0


ProgressCallback = Callable[[ProgressEvent], None]

# One lock around every callback, for every upload of the process: events are few (throttled),
# and one lock means a callback shared by several uploads (upload-many) is never run twice at once.
_CALLBACK_LOCK = threading.RLock()


def emit(callback: ProgressCallback | None, event: ProgressEvent) -> None:
    """Call ``callback`` with ``event``, logging and swallowing any error it raises."""
    if callback is None:
        return
    with _CALLBACK_LOCK:
        try:
            callback(event)
        except Exception:
            logger.exception("progress callback failed (ignored)")


def emit_ordered() -> threading.RLock:
    """The lock :func:`emit` holds: a producer that computes an event from shared counters takes
    it around computing and emitting, so events leave in the order of their counts."""
    return _CALLBACK_LOCK


class Throttle:
    """Lets through at most one event per ``interval`` seconds, and always the last one.

    Parameters
    ----------
    interval
        Seconds between two events let through.
    """

    def __init__(self, interval: float = THROTTLE_INTERVAL) -> None:
        self.interval = interval
        self._last = float("-inf")
        self._lock = threading.Lock()

    def ready(self, final: bool = False) -> bool:
        """True when an event may go out now (always when ``final``)."""
        now = time.monotonic()
        with self._lock:
            if not final and now - self._last < self.interval:
                return False
            self._last = now
            return True


def scan_reporter(callback: ProgressCallback | None) -> Callable[[int, int], None] | None:
    """A ``progress(done, total)`` hook for :func:`~xnatio.inventory.build_inventory` that turns
    header reads into ``scanning`` events, about ten a second and always the last one."""
    if callback is None:
        return None
    throttle = Throttle()
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        if throttle.ready(final=done >= total):
            emit(
                callback,
                ProgressEvent(
                    "scanning",
                    done,
                    total,
                    "reading DICOM headers",
                    elapsed=time.monotonic() - started,
                ),
            )

    return report
