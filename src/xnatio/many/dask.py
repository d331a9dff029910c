"""``--dask ADDRESS``: the sessions of a run as tasks on a Dask distributed cluster.

Each session is one task (:func:`session_task`). The connection budget is one
``distributed.Semaphore`` held by the scheduler, so the XNAT server sees at most
``--max-connections`` connections however many workers there are; a lost worker's slots come
back after the semaphore's lease timeout. Each worker process logs in once and shares that XNAT
session among its tasks; its connections are closed after each request, so that no idle
connection escapes the budget.

A task whose worker dies is run again by the scheduler on another worker. The task counts its
attempts in the scheduler's metadata, and a second attempt resumes: it asks the server (archive
and prearchive) what the first attempt delivered and sends only the rest, so every session lands
exactly once. Outcomes and the sessions' journals come back to the submitting process, which
writes the run journal and the report.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnatio.config import XnatConfig
from xnatio.errors import AuthenticationError, ConnectionFailedError, InputError
from xnatio.many.journal import RunJournal
from xnatio.many.local import Sink
from xnatio.many.outcome import ManyEvent, SessionOutcome
from xnatio.many.plan import PlannedSession
from xnatio.many.session import ManyOptions, SessionRun, run_session
from xnatio.many.spec import SessionSpec
from xnatio.progress import ProgressEvent
from xnatio.result.journal import default_journal_dir
from xnatio.xnat.session import XnatSession

__all__ = ["DaskBudget", "TaskPayload", "TaskResult", "connect", "run_dask", "session_task"]

logger = logging.getLogger(__name__)
_PROGRESS_EVERY = 0.5  # seconds between forwarded progress events of one session


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise InputError(
            "--dask needs the dask and distributed packages: pip install 'xnatio[dask]'"
        ) from None
    return distributed


def connect(address: str) -> Any:
    """A ``distributed.Client`` for the scheduler at ``address``.

    It waits as long as Dask's ``distributed.comm.timeouts.connect`` setting says (30 s unless
    configured, e.g. ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s``).

    Raises
    ------
    ConnectionFailedError
        The scheduler cannot be reached (exit code 3).
    """
    distributed = _distributed()
    import dask.config
    from dask.utils import parse_timedelta

    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    try:
        return distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConnectionFailedError(
            f"cannot reach the Dask scheduler at {address}: {exc or type(exc).__name__}; check "
            "the address (tcp://host:8786) and that the scheduler is running"
        ) from None


class DaskBudget:
    """A :class:`~xnatio.budget.ConnectionBudget` shared by a whole cluster: one
    ``distributed.Semaphore`` on the scheduler.

    Parameters
    ----------
    semaphore
        The semaphore (it pickles as its name and size, so tasks carry it to the workers).
    """

    def __init__(self, semaphore: Any) -> None:
        self._semaphore = semaphore

    @property
    def capacity(self) -> int:
        """The most connections open at once, cluster-wide."""
        return int(self._semaphore.max_leases)

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a lease of the semaphore (a round trip to the scheduler)."""
        return bool(self._semaphore.acquire(timeout=timeout))

    def release(self) -> None:
        """Give the lease back."""
        self._semaphore.release()


@dataclass(frozen=True)
class TaskPayload:
    """Everything a worker needs for one session (the password travels with it: use TLS
    between the cluster's processes when they are on different machines)."""

    run: str
    spec: SessionSpec
    action: str
    options: ManyOptions
    config: XnatConfig
    semaphore: Any
    topic: str
    journal: tuple[str, str] | None = None


@dataclass(frozen=True)
class TaskResult:
    """A task's answer: the outcome, and the session's journal (file name, text)."""

    outcome: SessionOutcome
    journal: tuple[str, str] | None = None


# One XNAT login per worker process and run, shared by the run's tasks. A run is known by its
# semaphore's name; the sessions of the last few runs are kept (a worker may serve several).
_SESSIONS: dict[tuple[str, str, str], XnatSession] = {}
_SESSIONS_LOCK = threading.Lock()
_KEEP_SESSIONS = 4


def _worker_session(payload: TaskPayload) -> tuple[XnatSession, DaskBudget]:
    budget = DaskBudget(payload.semaphore)
    key = (payload.config.server, payload.config.username, str(payload.semaphore.name))
    old: list[XnatSession] = []
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = XnatSession(
                payload.config,
                timeout=payload.options.rest.timeout,
                max_connections=payload.options.max_connections,
                budget=budget,
                max_keepalive=0,
            )
            _SESSIONS[key] = session
            while len(_SESSIONS) > _KEEP_SESSIONS:
                old.append(_SESSIONS.pop(next(iter(_SESSIONS))))
    for stale in old:
        with contextlib.suppress(Exception):
            stale.close()
    return session, budget


def _forwarder(worker: Any, topic: str, key: str) -> Callable[[ProgressEvent], None]:
    last: dict[str, Any] = {"time": 0.0, "phase": ""}

    def forward(e: ProgressEvent) -> None:
        now = time.monotonic()
        recent = now - last["time"] < _PROGRESS_EVERY
        if e.phase == last["phase"] and recent and e.current < e.total:
            return
        last.update(time=now, phase=e.phase)
        worker.log_event(topic, {"session": key, "phase": e.phase, "current": e.current,
                                 "total": e.total, "bytes_sent": e.bytes_sent,
                                 "bytes_total": e.bytes_total})  # fmt: skip

    return forward


def _restore_journal(journal: tuple[str, str] | None) -> None:
    if journal is None:
        return
    path = default_journal_dir() / Path(journal[0]).name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(journal[1], encoding="utf-8")


def session_task(payload: TaskPayload) -> TaskResult:
    """Run one session on a Dask worker (the function the scheduler runs)."""
    distributed = _distributed()
    worker = distributed.get_worker()
    client = distributed.get_client()
    meta = ["xnatio", payload.run, payload.spec.key]
    attempt = int(client.get_metadata(meta, default=0)) + 1
    client.set_metadata(meta, attempt)
    action = payload.action
    if attempt > 1 and action == "upload":
        # An earlier attempt died with its worker: the server says what it delivered.
        action = "resume"
    _restore_journal(payload.journal)
    session, budget = _worker_session(payload)
    run = SessionRun(payload.options, payload.config, session, budget, worker=worker.address)
    worker.log_event(payload.topic, {"session": payload.spec.key, "phase": "started"})
    outcome = run_session(
        run, payload.spec, action, progress=_forwarder(worker, payload.topic, payload.spec.key)
    )
    outcome.attempts = attempt
    journal = None
    if outcome.journal and Path(outcome.journal).is_file():
        journal = (Path(outcome.journal).name, Path(outcome.journal).read_text(encoding="utf-8"))
    return TaskResult(outcome, journal)


def _keep_journal(journal: tuple[str, str] | None, outcome: SessionOutcome) -> None:
    """Store a session's journal where this process keeps journals (unless it is there)."""
    if journal is None:
        return
    path = default_journal_dir() / Path(journal[0]).name
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == journal[1]:
            outcome.journal = str(path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_text(journal[1], encoding="utf-8")
        tmp.replace(path)
        outcome.journal = str(path)
    except OSError as exc:
        logger.warning("cannot keep the journal of %s: %s", outcome.key, exc)


def _journal_for(journal: RunJournal | None, key: str) -> tuple[str, str] | None:
    path = journal.session_journal(key) if journal is not None else None
    if path and Path(path).is_file():
        return Path(path).name, Path(path).read_text(encoding="utf-8")
    return None


def run_dask(
    client: Any,
    run: SessionRun,
    rows: list[PlannedSession],
    sink: Sink,
    *,
    on_outcome: Callable[[SessionOutcome], None],
    on_start: Callable[[str], None],
    journal: RunJournal | None,
) -> tuple[dict[str, SessionOutcome], bool, str | None]:
    """Run ``rows`` as tasks on the cluster of ``client``, ``max_sessions`` at a time.

    Returns the outcomes by session key, whether Ctrl-C stopped the run, and a fatal error.
    """
    distributed = _distributed()
    options = run.options
    token = uuid.uuid4().hex[:12]
    semaphore = distributed.Semaphore(
        options.max_connections,
        name=f"xnatio-{token}",
        scheduler_rpc=client.scheduler,
        loop=client.loop,
    )
    topic = f"xnatio-{token}"
    driver = _Driver(client, run, rows, sink, on_outcome, journal)
    driver.started_hook = on_start
    client.subscribe_topic(topic, driver.on_event)

    def payload(row: PlannedSession) -> TaskPayload:
        spec = row.spec
        return TaskPayload(
            token, spec, row.action, options, run.config, semaphore, topic,
            _journal_for(journal, spec.key),
        )  # fmt: skip

    try:
        driver.loop(payload, token)
    except KeyboardInterrupt:
        driver.cancelled = True
        driver.cancel_all("interrupted (Ctrl-C)")
        for row in driver.running.values():
            s = row.spec
            driver.outcomes[s.key] = SessionOutcome(
                s.key, s.project, s.subject, s.session, origin=s.origin, status="interrupted",
                errors=["the run stopped while this session was running on the cluster"],
            )  # fmt: skip
    finally:
        client.unsubscribe_topic(topic)
        with warnings.catch_warnings():
            # A worker that died held leases until their timeout: nothing to warn about now.
            warnings.filterwarnings("ignore", "Closing semaphore", RuntimeWarning)
            semaphore.close()
    return driver.outcomes, driver.cancelled, driver.fatal


class _Driver:
    """Keeps ``max_sessions`` tasks in flight and collects their results in the main thread."""

    def __init__(
        self,
        client: Any,
        run: SessionRun,
        rows: list[PlannedSession],
        sink: Sink,
        on_outcome: Callable[[SessionOutcome], None],
        journal: RunJournal | None,
    ) -> None:
        self.client = client
        self.run = run
        self.rows = list(rows)
        self.sink = sink
        self.on_outcome = on_outcome
        self.journal = journal
        self.outcomes: dict[str, SessionOutcome] = {}
        self.cancelled = False
        self.fatal: str | None = None
        self.started_hook: Callable[[str], None] = lambda _: None
        self.running: dict[Any, PlannedSession] = {}

    def on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """A worker's progress event (called by the client's event loop)."""
        msg = event[1]
        key = str(msg.get("session", ""))
        if msg.get("phase") == "started":
            self.started_hook(key)
            self.sink(ManyEvent("session", session=key))
            return
        progress = ProgressEvent(
            msg["phase"], int(msg["current"]), int(msg["total"]),
            bytes_sent=int(msg["bytes_sent"]), bytes_total=int(msg["bytes_total"]),
        )  # fmt: skip
        self.sink(ManyEvent("progress", session=key, event=progress))

    def cancel_all(self, reason: str) -> None:
        """Start nothing new; tasks already running finish on their workers."""
        self.run.stop.set()
        self.rows.clear()
        pending = [f for f in self.running if f.status == "pending"]
        self.client.cancel(pending)
        logger.info("stopping the run: %s", reason)

    def loop(self, payload: Callable[[PlannedSession], TaskPayload], token: str) -> None:
        distributed = _distributed()
        todo = list(self.rows)
        self.rows = todo
        queue = distributed.as_completed(loop=self.client.loop)
        n = 0
        while todo or self.running:
            while todo and len(self.running) < self.run.options.max_sessions:
                row = todo.pop(0)
                n += 1
                future = self.client.submit(
                    session_task, payload(row), key=f"xnatio-{token}-{n}", pure=False
                )
                self.running[future] = row
                queue.add(future)
            future = next(queue)
            self.collect(future, self.running.pop(future))

    def collect(self, future: Any, row: PlannedSession) -> None:
        spec = row.spec
        try:
            result: TaskResult = future.result()
        except AuthenticationError as exc:
            self.fatal = exc.message
            self.cancel_all(exc.message)
            outcome = SessionOutcome(
                spec.key, spec.project, spec.subject, spec.session, origin=spec.origin,
                status="failed", errors=[exc.message],
            )  # fmt: skip
        except Exception as exc:  # a cancelled or crashed task
            outcome = SessionOutcome(
                spec.key, spec.project, spec.subject, spec.session, origin=spec.origin,
                status="interrupted" if future.cancelled() else "failed",
                errors=[f"{type(exc).__name__}: {exc}"],
            )  # fmt: skip
        else:
            outcome = result.outcome
            _keep_journal(result.journal, outcome)
        self.outcomes[spec.key] = outcome
        self.on_outcome(outcome)
        self.sink(ManyEvent("outcome", session=spec.key, outcome=outcome))
        if outcome.status == "failed" and self.run.options.fail_fast:
            self.cancel_all(f"--fail-fast: {spec.key} failed")
