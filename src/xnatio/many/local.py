"""Running the sessions of a plan in this process, pipelined.

Up to ``max_sessions`` sessions upload at once, sharing one logged-in XNAT session and one
connection budget. Meanwhile the next sessions' sources are read (headers only) by a separate
pool, up to ``max_sessions`` ahead, so a session's inventory is ready when its turn comes.
Sessions start in plan order.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
from collections.abc import Callable
from typing import Any

from xnatio.errors import AuthenticationError, XnatioError
from xnatio.many.outcome import ManyEvent, SessionOutcome
from xnatio.many.plan import PlannedSession
from xnatio.many.session import Prepared, SessionRun, prepare, run_session
from xnatio.plan import UploadPlan
from xnatio.progress import ProgressEvent

__all__ = ["Sink", "run_local"]

logger = logging.getLogger(__name__)

#: Receives a run's events (from worker threads too).
Sink = Callable[[ManyEvent], None]


def _tagged(sink: Sink, key: str) -> Callable[[ProgressEvent], None]:
    def callback(event: ProgressEvent) -> None:
        sink(ManyEvent("progress", session=key, event=event))

    return callback


class _Pipeline:
    """The driver: prepares ahead, starts uploads in order, collects outcomes."""

    def __init__(
        self,
        run: SessionRun,
        rows: list[PlannedSession],
        sink: Sink,
        on_outcome: Callable[[SessionOutcome], None],
        on_start: Callable[[str], None],
    ) -> None:
        self.run = run
        self.sink = sink
        self.on_outcome = on_outcome
        self.on_start = on_start
        self.todo = collections.deque(rows)
        self.preparing: dict[cf.Future[Prepared], PlannedSession] = {}
        self.ready: collections.deque[tuple[PlannedSession, Prepared | None]] = collections.deque()
        self.running: dict[cf.Future[SessionOutcome], PlannedSession] = {}
        self.outcomes: dict[str, SessionOutcome] = {}
        self.fatal: str | None = None
        workers = run.options.max_sessions
        self.prep_pool = cf.ThreadPoolExecutor(min(2, workers), thread_name_prefix="xio-prep")
        self.pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="xio-session")

    def stop(self, reason: str) -> None:
        """Start nothing new; sessions in flight are interrupted."""
        if not self.run.stop.is_set():
            logger.info("stopping the run: %s", reason)
            self.run.stop.set()
            close = getattr(self.run.budget, "close", None)
            if close is not None:
                close(reason)

    def fill(self) -> None:
        limit = self.run.options.max_sessions
        while self.todo and not self.run.stop.is_set():
            if len(self.preparing) + len(self.ready) >= limit:
                break
            row = self.todo.popleft()
            self.preparing[self.prep_pool.submit(prepare, row.spec, self.run.options)] = row
        while self.ready and len(self.running) < limit and not self.run.stop.is_set():
            row, prepared = self.ready.popleft()
            key = row.spec.key
            self.on_start(key)
            self.sink(ManyEvent("session", session=key))
            future = self.pool.submit(
                run_session,
                self.run,
                row.spec,
                row.action,
                prepared=prepared,
                progress=_tagged(self.sink, key),
            )
            self.running[future] = row

    def collect(self, done: set[cf.Future[Any]]) -> None:
        for future in done:
            if future in self.preparing:
                row = self.preparing.pop(future)
                try:
                    self.ready.append((row, future.result()))
                except XnatioError:
                    # run_session reads the source again and reports the error as the outcome.
                    self.ready.append((row, None))
                continue
            row = self.running.pop(future)
            try:
                outcome: SessionOutcome = future.result()
            except AuthenticationError as exc:
                self.fatal = exc.message
                self.stop(exc.message)
                s = row.spec
                outcome = SessionOutcome(
                    s.key, s.project, s.subject, s.session, origin=s.origin, status="failed",
                    errors=[exc.message],
                )  # fmt: skip
            self.finish(outcome)

    def finish(self, outcome: SessionOutcome) -> None:
        assert isinstance(outcome, SessionOutcome)
        self.outcomes[outcome.key] = outcome
        self.on_outcome(outcome)
        self.sink(ManyEvent("outcome", session=outcome.key, outcome=outcome))
        if outcome.status == "failed" and self.run.options.fail_fast:
            self.stop(f"--fail-fast: {outcome.key} failed")

    def loop(self) -> None:
        while self.todo or self.preparing or self.ready or self.running:
            if self.run.stop.is_set() and not self.preparing and not self.running:
                break
            self.fill()
            pending: set[cf.Future[Any]] = set(self.preparing) | set(self.running)
            if not pending:
                continue
            # Short waits keep the main thread responsive to Ctrl-C.
            done, _ = cf.wait(pending, timeout=0.25, return_when=cf.FIRST_COMPLETED)
            self.collect(done)

    def drain(self) -> None:
        """After a stop: wait for what is in flight, close what was prepared for nothing."""
        for prep in self.preparing:
            prep.cancel()
        for future in cf.as_completed(list(self.running)):
            self.collect({future})
        for prep in self.preparing:
            if not prep.cancelled() and prep.exception() is None:
                _discard(prep.result())
        self.preparing.clear()
        for _, prepared in self.ready:
            _discard(prepared)
        self.ready.clear()
        self.prep_pool.shutdown(wait=True, cancel_futures=True)
        self.pool.shutdown(wait=True, cancel_futures=True)


def _discard(prepared: Prepared | None) -> None:
    if prepared is None:
        return
    if isinstance(prepared, UploadPlan):
        prepared.inventory.close()
    else:
        prepared.close()


def run_local(
    run: SessionRun,
    rows: list[PlannedSession],
    sink: Sink,
    *,
    on_outcome: Callable[[SessionOutcome], None],
    on_start: Callable[[str], None],
) -> tuple[dict[str, SessionOutcome], bool, str | None]:
    """Run ``rows`` (sessions to send) in this process.

    Returns
    -------
    tuple
        Outcomes by session key (sessions never started are absent), whether Ctrl-C stopped the
        run, and the fatal error that stopped it (an authentication failure), if any.
    """
    pipe = _Pipeline(run, rows, sink, on_outcome, on_start)
    cancelled = False
    try:
        pipe.loop()
    except KeyboardInterrupt:
        cancelled = True
        pipe.stop("interrupted (Ctrl-C)")
    finally:
        pipe.drain()
    return pipe.outcomes, cancelled, pipe.fatal
