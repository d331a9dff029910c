"""Work in progress: files being written, sessions and destinations being archived.

XNAT keeps these in memory too (its per-file locks and the archive operation's guards,
docs/xnat-behaviour.md §3.4 step 10 and §3.8); they are not in the index and do not survive a
restart. Every method expects the caller to hold the index lock this object was built with.
"""

from __future__ import annotations

import threading

from xnatio.sandbox.store.model import ClientError

__all__ = ["FileKey", "InFlight"]

FileKey = tuple[int, str, str]
"""(session row number, scan folder, file name): one stored file of a session."""


class InFlight:
    """What the store is doing right now; guarded by the index lock.

    Parameters
    ----------
    lock
        The index lock (:attr:`xnatio.sandbox.store.index.Index.lock`).
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._drained = threading.Condition(lock)
        self._files: set[FileKey] = set()
        self._writers: dict[int, int] = {}  # session row -> files being written into it
        self._sessions: set[int] = set()  # session rows being archived
        self._targets: set[tuple[str, str]] = set()  # (project, label) being archived into

    # -- files being written -------------------------------------------------------------------

    def claim_file(self, key: FileKey) -> None:
        """Take the per-file lock for ``key`` and count one more writer in its session.

        Raises
        ------
        ClientError
            "Concurrent file sends of the same data is not supported." if another request
            is writing the same file.
        """
        if key in self._files:
            raise ClientError("Concurrent file sends of the same data is not supported.")
        self._files.add(key)
        self._writers[key[0]] = self._writers.get(key[0], 0) + 1

    def release_file(self, key: FileKey) -> None:
        """Give back a per-file lock; wake archive steps waiting for the session to drain."""
        self._files.discard(key)
        left = self._writers.get(key[0], 1) - 1
        if left <= 0:
            self._writers.pop(key[0], None)
            self._drained.notify_all()
        else:
            self._writers[key[0]] = left

    def writing(self, session: int) -> bool:
        """Whether files are being written into session row ``session``."""
        return bool(self._writers.get(session))

    def wait_drained(self, session: int) -> None:
        """Wait (releasing the lock meanwhile) until no file is being written into ``session``."""
        while self._writers.get(session):
            self._drained.wait(1.0)

    # -- archiving -----------------------------------------------------------------------------

    def archiving(self, session: int) -> bool:
        """Whether session row ``session`` is being archived."""
        return session in self._sessions

    def check_archive(self, session: int, target: tuple[str, str]) -> None:
        """Refuse a second archive of a session or into a destination (§3.8: 423).

        Raises
        ------
        ClientError
            423 when ``session`` or the destination ``(project, label)`` is in use.
        """
        if session in self._sessions:
            raise ClientError(
                "Duplicate archive attempt. Prearchive session already archiving.", 423
            )
        if target in self._targets:
            raise ClientError("Duplicate archive attempt.  Destination session in use.", 423)

    def begin_archive(self, session: int, target: tuple[str, str]) -> None:
        """Mark ``session`` and its destination as being archived (after :meth:`check_archive`)."""
        self._sessions.add(session)
        self._targets.add(target)

    def end_archive(self, session: int, target: tuple[str, str]) -> None:
        """Forget an archive step, whatever its outcome."""
        self._sessions.discard(session)
        self._targets.discard(target)
