"""``upload_many``: plan every session, check every target once, then run them all.

One XNAT login and one connection budget serve the whole run (in this process; on a Dask
cluster each worker process logs in once and the budget is a cluster-wide semaphore). Every
problem the plan finds stops the run before anything is sent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from xnatio.budget import LocalBudget
from xnatio.config import XnatConfig
from xnatio.errors import InputError
from xnatio.many.journal import RunJournal, default_run_journal, run_id
from xnatio.many.local import Sink, run_local
from xnatio.many.outcome import ManyEvent, RunResult, SessionOutcome
from xnatio.many.plan import PlannedSession, RunPlan, check_labels, plan_run
from xnatio.many.preflight import ServerView, look_at_server
from xnatio.many.session import ManyOptions, SessionRun
from xnatio.many.spec import SessionSpec
from xnatio.result.journal import _public_server
from xnatio.xnat.session import XnatSession

__all__ = ["PlanRefused", "plan_many", "upload_many"]


class PlanRefused(InputError):
    """The plan found problems; nothing was sent. ``plan`` holds every row and its problems."""

    def __init__(self, message: str, plan: RunPlan) -> None:
        super().__init__(message)
        self.plan = plan


def _client(
    config: XnatConfig, options: ManyOptions, budget: LocalBudget, *, cluster: bool = False
) -> XnatSession:
    # When C-STORE associations or a cluster's workers share the budget, an idle HTTP
    # connection kept open here would be one the budget does not see: close each after use.
    shared = options.transport == "dicom-store" or cluster
    return XnatSession(
        config,
        timeout=options.rest.timeout,
        max_connections=options.max_connections,
        budget=budget,
        max_keepalive=0 if shared else None,
    )


def _view(client: XnatSession, specs: list[SessionSpec]) -> ServerView:
    valid = {s.project for s in specs if not check_labels(s.project, "x", "x")}
    return look_at_server(client, valid)


def plan_many(
    specs: list[SessionSpec],
    *,
    server: XnatConfig | None,
    options: ManyOptions | None = None,
    # The last three are passed on to many.plan.plan_run as they are (hence the same lines).
    scan_sources: bool = True,
    done_earlier: Mapping[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RunPlan:
    """The plan of a run, as ``--dry-run`` shows it; nothing is sent.

    Parameters
    ----------
    specs
        The sessions (:func:`~xnatio.many.spec.read_manifest`, :func:`~xnatio.many.discover`).
    server
        The XNAT server, to check projects and existing sessions; None skips those checks.
    options
        The run's settings.
    scan_sources
        Read every manifest source's headers for its numbers (discovered sessions have them).
    done_earlier
        Sessions a run journal records as landed, with their source (``SessionSpec.source_id``).
    progress
        Called as ``progress(done, total)`` per session.
    """
    options = options or ManyOptions()
    options.check()
    view: ServerView | None = None
    if server is not None:
        with _client(server, options, LocalBudget(options.max_connections)) as client:
            view = _view(client, specs)
    return plan_run(
        specs,
        view=view,
        transport=options.transport,
        overwrite=options.rest.overwrite,
        resume=options.resume,
        allow_multiple_studies=options.allow_multiple_studies,
        scan_sources=scan_sources,
        done_earlier=done_earlier,
        progress=progress,
    )


def _refuse(plan: RunPlan) -> None:
    blocked = plan.blocked
    if not blocked:
        return
    first = blocked[0]
    raise PlanRefused(
        f"{len(blocked)} of {len(plan.sessions)} sessions cannot be uploaded, so nothing was "
        f"sent; first: {first.spec.origin} {first.spec.key}: {first.problems[0]} "
        "(--dry-run shows the whole plan)",
        plan,
    )


def _skipped(row: PlannedSession) -> SessionOutcome:
    s = row.spec
    return SessionOutcome(
        s.key, s.project, s.subject, s.session, origin=s.origin, status="done-earlier",
        files=row.files or 0, bytes=row.bytes or 0, verified=True,
    )  # fmt: skip


def _open_journal(
    run_journal: str | Path | bool, server: XnatConfig, specs: list[SessionSpec], name: str,
    shard: tuple[int, int] | None,
) -> RunJournal | None:  # fmt: skip
    if run_journal is False:
        return None
    rid = run_id(_public_server(server.server), name)
    path = default_run_journal(name, rid, shard) if run_journal is True else Path(run_journal)
    header = {
        "run": rid,
        "server": _public_server(server.server),
        "sessions": len(specs),
        "shard": list(shard) if shard else None,
    }
    return RunJournal(path.expanduser(), header)


def upload_many(
    specs: list[SessionSpec],
    *,
    server: XnatConfig,
    options: ManyOptions | None = None,
    run_journal: str | Path | bool = True,
    name: str = "run",
    shard: tuple[int, int] | None = None,
    dask: str | None = None,
    progress_callback: Sink | None = None,
) -> RunResult:
    """Upload many sessions to one XNAT server.

    Parameters
    ----------
    specs
        The sessions, from a manifest (:func:`~xnatio.many.spec.read_manifest`) or discovery
        (:func:`~xnatio.many.discover.discover`); a shard's part with
        :func:`~xnatio.many.spec.take_shard`.
    server
        The XNAT server and credentials.
    options
        The run's settings (:class:`~xnatio.many.session.ManyOptions`).
    run_journal
        The run journal: True (default) under the user's cache folder, a path, or False.
    name
        Names the run: its default run journal is the same for the same name and server (the
        command line uses the manifest's path, or ``discover`` and the root).
    shard
        ``(K, N)`` when this run is shard K of N (recorded in the run journal).
    dask
        A Dask scheduler address: run the sessions as tasks on that cluster.
    progress_callback
        Receives :class:`~xnatio.many.outcome.ManyEvent` objects, from worker threads too.

    Returns
    -------
    RunResult
        One outcome per session, in plan order.

    Raises
    ------
    PlanRefused
        The plan found problems (bad labels, collisions, missing sources or projects, sessions
        that exist); nothing was sent.
    AuthenticationError, ConnectionFailedError
        The login failed or the server (or the Dask scheduler) could not be reached; nothing
        was sent.
    """
    options = options or ManyOptions()
    options.check()
    if not specs:
        raise InputError("no sessions to upload")
    sink: Sink = progress_callback or (lambda _: None)
    started = time.time()
    cluster = None
    if dask is not None:
        from xnatio.many.dask import connect

        cluster = connect(dask)  # an unreachable scheduler stops us before the login
    journal = _open_journal(run_journal, server, specs, name, shard)
    budget = LocalBudget(options.max_connections)
    try:
        with _client(server, options, budget, cluster=cluster is not None) as client:
            plan = plan_run(
                specs,
                view=_view(client, specs),
                transport=options.transport,
                overwrite=options.rest.overwrite,
                resume=options.resume,
                allow_multiple_studies=options.allow_multiple_studies,
                scan_sources=False,
                done_earlier=journal.done_earlier() if journal is not None else None,
            )
            _refuse(plan)
            run = SessionRun(options, server, client, budget)
            try:
                result = _execute(run, plan, sink, journal, cluster)
            finally:
                budget.reopen()  # a stopped run closed the budget; the logout needs a slot
    finally:
        if journal is not None:
            journal.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
    result.started = started
    result.finished = time.time()
    result.peak_connections = max(result.peak_connections, budget.stats().peak)
    return result


def _execute(
    run: SessionRun,
    plan: RunPlan,
    sink: Sink,
    journal: RunJournal | None,
    cluster: Any,
) -> RunResult:
    rows = plan.to_send
    sink(
        ManyEvent(
            "start",
            total=len(plan.sessions),
            files=sum(r.files or 0 for r in plan.sessions),
            bytes=sum(r.bytes or 0 for r in plan.sessions),
        )
    )
    if journal is not None:
        address = str(cluster.scheduler.address) if cluster is not None else None
        journal.start_run(resume=run.options.resume, sessions=len(rows), dask=address)
    outcomes: dict[str, SessionOutcome] = {}
    for row in plan.sessions:
        if row.action == "skip":
            outcomes[row.spec.key] = _skipped(row)
            sink(ManyEvent("outcome", session=row.spec.key, outcome=outcomes[row.spec.key]))

    sources = {row.spec.key: row.spec.source_id for row in plan.sessions}

    def on_outcome(outcome: SessionOutcome) -> None:
        if journal is not None:
            journal.outcome(outcome, sources.get(outcome.key, ""))

    def on_start(key: str) -> None:
        if journal is not None:
            journal.session_started(key)

    if cluster is not None:
        from xnatio.many.dask import run_dask

        ran, cancelled, fatal = run_dask(
            cluster, run, rows, sink, on_outcome=on_outcome, on_start=on_start, journal=journal,
        )  # fmt: skip
    else:
        ran, cancelled, fatal = run_local(run, rows, sink, on_outcome=on_outcome, on_start=on_start)
    outcomes.update(ran)
    ordered = []
    for row in plan.sessions:
        s = row.spec
        ordered.append(
            outcomes.get(s.key)
            or SessionOutcome(s.key, s.project, s.subject, s.session, origin=s.origin)
        )
    result = RunResult(
        ordered, 0.0, 0.0, str(journal.path) if journal else None, cancelled=cancelled, fatal=fatal
    )
    if journal is not None:
        journal.end_run(result.counts(), cancelled=cancelled)
    sink(ManyEvent("end"))
    return result
