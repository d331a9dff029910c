"""What happened to each session of a run, and to the run as a whole (data, not exceptions)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from xnatio.progress import ProgressEvent

__all__ = ["ManyEvent", "RunResult", "SessionOutcome", "Status"]

#: ``landed``: sent (or already there) and verified; ``done-earlier``: landed in an earlier run
#: of the same manifest and still on the server, so not sent again; ``failed``: the upload or its
#: verification failed; ``blocked``: the plan refused it (nothing sent); ``interrupted``: Ctrl-C or
#: ``--fail-fast`` stopped it; ``not-started``: the run ended before its turn.
Status = Literal["landed", "done-earlier", "failed", "blocked", "interrupted", "not-started"]
OK_STATUSES = ("landed", "done-earlier")


@dataclass
class SessionOutcome:
    """One session's result: one row of the report and of the run journal.

    Attributes
    ----------
    key, project, subject, session
        The target (``key`` is ``project/subject/session``).
    origin
        Manifest line or study the session came from.
    transport
        ``rest`` or ``dicom-store``.
    status
        See :data:`Status`.
    files, bytes
        Instances and bytes of the session's source.
    files_sent, bytes_sent
        What this run sent (a resume sends only what was missing).
    already_present
        Instances the server already held.
    verified
        True when every instance was found exactly once on the server, None when not checked.
    matched
        Instances the verification found.
    started, sending, finished
        Wall-clock times (seconds since the epoch): the session's turn began, its first byte
        could go (after the inventory), it ended. 0 when it did not happen.
    errors
        Why it failed (at most 20 messages; the session's journal and ``xio upload-dicom
        --resume`` give the rest).
    journal
        The session's own journal file.
    worker
        Where it ran (``local`` or a Dask worker's address).
    attempts
        Times it was started (a Dask task re-run after a lost worker counts twice).
    """

    key: str
    project: str
    subject: str
    session: str
    origin: str = ""
    transport: str = "rest"
    status: Status = "not-started"
    files: int = 0
    bytes: int = 0
    files_sent: int = 0
    bytes_sent: int = 0
    already_present: int = 0
    verified: bool | None = None
    matched: int = 0
    started: float = 0.0
    sending: float = 0.0
    finished: float = 0.0
    errors: list[str] = field(default_factory=list)
    journal: str | None = None
    worker: str = "local"
    attempts: int = 0

    @property
    def ok(self) -> bool:
        """Landed now or in an earlier run."""
        return self.status in OK_STATUSES

    @property
    def duration(self) -> float:
        """Seconds from the session's turn to its end (0 when it did not run)."""
        return max(0.0, self.finished - self.started) if self.started and self.finished else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the report's row), with ``duration`` added."""
        out = asdict(self)
        out["duration"] = round(self.duration, 3)
        return out

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> SessionOutcome:
        """Read a row written by :meth:`to_dict` (unknown keys are ignored)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in row.items() if k in names})


@dataclass(frozen=True, slots=True)
class ManyEvent:
    """A progress event of a run, tagged with its session.

    Attributes
    ----------
    kind
        ``start`` (the run: ``total`` sessions, ``files`` and ``bytes`` known so far),
        ``session`` (a session began), ``progress`` (a session's own event), ``outcome`` (a
        session ended), ``end`` (the run ended).
    session
        The session's key (``project/subject/session``), empty for run events.
    event
        The session's :class:`~xnatio.progress.ProgressEvent` (``progress`` only).
    outcome
        The session's outcome (``outcome`` only).
    total, files, bytes
        Sessions, instances and bytes of the run (``start`` only).
    """

    kind: Literal["start", "session", "progress", "outcome", "end"]
    session: str = ""
    event: ProgressEvent | None = None
    outcome: SessionOutcome | None = None
    total: int = 0
    files: int = 0
    bytes: int = 0


@dataclass
class RunResult:
    """What :func:`xnatio.many.upload_many` did.

    Attributes
    ----------
    outcomes
        One per session of the plan, in plan order.
    started, finished
        Wall-clock times of the run.
    journal
        The run journal's path (None without one).
    peak_connections
        The most connections the budget saw in use at once (this process).
    cancelled
        Ctrl-C stopped the run.
    fatal
        Why the run stopped early (an authentication failure), if it did.
    """

    outcomes: list[SessionOutcome]
    started: float
    finished: float
    journal: str | None = None
    peak_connections: int = 0
    cancelled: bool = False
    fatal: str | None = None

    @property
    def ok(self) -> bool:
        """Every session landed (now or earlier)."""
        return all(o.ok for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        """Sessions per status."""
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out
