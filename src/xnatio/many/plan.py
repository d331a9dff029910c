"""The plan of a run: every session with its numbers, what will be done, and what stops it.

Problems are found before anything is sent: labels XNAT refuses (docs/xnat-behaviour.md §13),
two sessions with the same label in one project, a missing source, a missing project, a session
that exists when the overwrite mode does not allow it. Labels are reported as given, never
changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from xnatio.errors import InputError, XnatioError
from xnatio.inventory import Inventory, build_inventory
from xnatio.many.gathered import gathered_inventory
from xnatio.many.preflight import ServerView
from xnatio.many.spec import SessionSpec
from xnatio.options import Overwrite
from xnatio.plan import check_inventory
from xnatio.xnat.naming import scan_id_for, validate_label

__all__ = ["Action", "PlannedSession", "RunPlan", "check_labels", "plan_run"]

#: ``upload``: a new session; ``resume``: send what the server lacks, then verify; ``append`` and
#: ``replace``: add to (or replace files of) an existing session; ``skip``: landed in an earlier
#: run of the same manifest; ``blocked``: a problem stops it.
Action = Literal["upload", "resume", "append", "replace", "skip", "blocked"]


@dataclass
class PlannedSession:
    """One row of the plan.

    Attributes
    ----------
    spec
        The session.
    action
        What the run will do (:data:`Action`).
    problems
        What stops it (empty unless ``blocked``).
    notes
        Remarks that do not stop it.
    files, bytes, studies, series
        The source's numbers; None until its inventory is read (manifest rows in a real run).
    """

    spec: SessionSpec
    action: Action = "upload"
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int | None = None
    bytes: int | None = None
    studies: int | None = None
    series: int | None = None

    def block(self, problem: str) -> None:
        """Record a problem; the session will not be sent."""
        self.problems.append(problem)
        self.action = "blocked"


@dataclass
class RunPlan:
    """Every session of a run, in order.

    Attributes
    ----------
    sessions
        One row per session.
    server_checked
        Whether the server was asked (projects, existing sessions).
    """

    sessions: list[PlannedSession]
    server_checked: bool = False

    @property
    def blocked(self) -> list[PlannedSession]:
        """Rows that will not be sent because of a problem."""
        return [p for p in self.sessions if p.action == "blocked"]

    @property
    def to_send(self) -> list[PlannedSession]:
        """Rows the run will upload (or resume)."""
        return [p for p in self.sessions if p.action not in ("blocked", "skip")]


def check_labels(project: str, subject: str, session: str) -> list[str]:
    """Why XNAT would refuse these labels (empty when it would not); nothing is rewritten."""
    out: list[str] = []
    for kind, value in (("project", project), ("subject", subject), ("session", session)):
        try:
            validate_label(kind, value)
        except InputError as exc:
            out.append(exc.message.split("; ", 1)[0])
    return out


def _numbers(row: PlannedSession, inventory: Inventory) -> None:
    files = inventory.files
    row.files = len(files)
    row.bytes = inventory.total_bytes
    row.studies = len({f.study_instance_uid for f in files})
    row.series = len({scan_id_for(f) for f in files})


def _look_at_source(row: PlannedSession, allow_multiple: bool, scan: bool) -> None:
    """Fill in the numbers and report what :func:`xnatio.plan.check_inventory` would refuse."""
    spec = row.spec
    if spec.gathered is None and not Path(spec.source).exists():
        row.block(f"source {spec.source} does not exist")
        return
    if spec.gathered is None and not scan:
        return
    try:
        with (
            gathered_inventory(spec.gathered)
            if spec.gathered is not None
            else build_inventory(spec.source)
        ) as inventory:
            _numbers(row, inventory)
            check_inventory(inventory, allow_multiple_studies=allow_multiple)
    except XnatioError as exc:
        row.block(exc.message)


def _server_checks(
    row: PlannedSession, view: ServerView, overwrite: Overwrite, resume: bool, transport: str
) -> None:
    spec = row.spec
    if not view.project_exists(spec.project):
        row.block(f"project {spec.project} does not exist or cannot be read")
        return
    owner = view.session_subject(spec.project, spec.session)
    if owner is None:
        return
    if owner and owner.lower() != spec.subject.lower():
        row.block(f"session {spec.session} exists in {spec.project} under subject {owner}")
    elif resume:
        pass  # checked and completed by the session's own resume
    elif spec.direct_archive:
        row.block("the session exists; Direct-Archive only creates new sessions")
    elif overwrite == "append" and transport == "rest":
        row.action = "append"
    elif overwrite == "delete" and transport == "rest":
        row.action = "replace"
    else:
        row.block(
            f"session {spec.session} exists in {spec.project}; use --resume to check it and "
            "send what is missing, or --overwrite append"
        )


def plan_run(
    specs: list[SessionSpec],
    *,
    view: ServerView | None,
    transport: str,
    overwrite: Overwrite,
    resume: bool,
    allow_multiple_studies: bool,
    scan_sources: bool,
    done_earlier: Mapping[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RunPlan:
    """Check every session before anything is sent.

    Parameters
    ----------
    specs
        The sessions.
    view
        What the server holds (None: not asked, e.g. a dry run without a server).
    transport, overwrite, resume, allow_multiple_studies
        The run's settings (a session's own settings win).
    scan_sources
        Read the headers of manifest sources now (a dry run shows their numbers; a real run
        reads them later, while earlier sessions upload).
    done_earlier
        Sessions the run journal records as landed and verified in an earlier run, with their
        ``source_id``; only a session with the same source counts as done.
    progress
        Called as ``progress(done, total)`` per session.
    """
    rows = [PlannedSession(s, notes=list(s.notes)) for s in specs]
    same: dict[tuple[str, str], list[PlannedSession]] = {}
    for row in rows:
        same.setdefault((row.spec.project, row.spec.session), []).append(row)
    for n, row in enumerate(rows, 1):
        spec = row.spec
        for problem in check_labels(spec.project, spec.subject, spec.session):
            row.block(problem)
        others = [o.spec.origin for o in same[(spec.project, spec.session)] if o is not row]
        if others:
            row.block(
                f"label collision: {spec.project}/{spec.session} is also the label of "
                + ", ".join(others[:3])
                + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            )
        multiple = (
            spec.allow_multiple_studies
            if spec.allow_multiple_studies is not None
            else allow_multiple_studies
        )
        _look_at_source(row, multiple, scan_sources)
        if resume and row.action != "blocked":
            # The session's own resume sends what the server lacks: all of a new session,
            # the rest of an interrupted one, nothing of a complete one.
            row.action = "resume"
        if row.action != "blocked" and view is not None:
            kind = spec.transport or transport
            _server_checks(row, view, spec.overwrite or overwrite, resume, kind)
            if (
                done_earlier
                and done_earlier.get(spec.key) == spec.source_id
                and view.session_subject(spec.project, spec.session) is not None
                and not resume
                and row.problems
            ):
                # The session exists because an earlier run of this manifest put it there.
                row.problems.clear()
                row.action = "skip"
                row.notes.append("landed in an earlier run of this manifest (run journal)")
        if progress is not None:
            progress(n, len(rows))
    return RunPlan(rows, server_checked=view is not None)
