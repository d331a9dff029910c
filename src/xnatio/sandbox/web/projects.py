"""Projects, subjects and experiments over HTTP: listings (docs/xnat-behaviour.md §4.2, with
``columns=`` and filters, §14.6), creation with PUT (§5), and the project's prearchive code."""

from __future__ import annotations

import re

from xnatio.sandbox.web.columns import EXPERIMENTS, PROJECTS, SUBJECTS, select
from xnatio.sandbox.web.messages import App, HttpError, Request, Response, items, table

__all__ = ["need_project"]

_VALID_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_NO_SESSION = "Unable to identify image session"


def need_project(app: App, project: str) -> None:
    """Raise HttpError 404 "Unable to identify project" unless ``project`` exists."""
    if not app.store.project_exists(project):
        raise HttpError(404, "Unable to identify project")


def _created(created: bool, accession_id: str) -> Response:
    """XNAT's answer to a PUT that creates: 201 with the new ID, 200 if it existed."""
    return Response(201 if created else 200, accession_id.encode())


def projects(app: App, req: Request) -> Response:
    """``GET /data/projects``."""
    return table(req, select(req, PROJECTS, app.store.list_projects()), "Projects")


def project(app: App, req: Request, project: str) -> Response:
    """``GET|PUT /data/projects/{P}``: the project as item JSON, or create it."""
    store = app.store
    if req.method == "PUT":
        if not _VALID_ID.match(project):
            raise HttpError(417, "Invalid character in project ID.")
        store.create_project(project)
        return Response(200, b"")
    rows = [r for r in store.list_projects() if r.get("ID") == project]
    if not rows:
        raise HttpError(404, f"Unable to find project {project}")
    fields = {k: v for k, v in rows[0].items() if k != "URI"}
    return items(req, {"meta": _meta("xnat:projectData"), "data_fields": fields, "children": []})


def prearchive_code_get(app: App, req: Request, project: str) -> Response:
    """``GET /data/projects/{P}/prearchive_code``: 0, 4 or 5 as text."""
    need_project(app, project)
    return Response(200, str(app.store.get_prearchive_code(project)).encode())


def prearchive_code_put(app: App, req: Request, project: str, code: str) -> Response:
    """``PUT|POST /data/projects/{P}/prearchive_code/{code}``."""
    need_project(app, project)
    if code not in ("0", "4", "5"):
        raise HttpError(400, f"Invalid prearchive code: {code}")
    app.store.set_prearchive_code(project, int(code))
    return Response(200, b"")


def subjects(app: App, req: Request, project: str | None = None) -> Response:
    """``GET /data/projects/{P}/subjects``, or every project's (``GET /data/subjects``)."""
    if project is not None:
        need_project(app, project)
    return table(req, select(req, SUBJECTS, app.store.subjects(project)), "Subjects")


def subject(app: App, req: Request, project: str, subject: str) -> Response:
    """``GET|PUT /data/projects/{P}/subjects/{S}``: by ID or label (case-insensitive)."""
    store = app.store
    need_project(app, project)
    if req.method == "PUT":
        if not _VALID_ID.match(subject):
            raise HttpError(417, "Invalid character in subject label.")
        subject_id, created = store.put_subject(project, subject)
        return _created(created, subject_id)
    for row in store.subjects(project):
        if subject in (row.get("ID"), row.get("label")) or (
            row.get("label", "").lower() == subject.lower()
        ):
            fields = {k: v for k, v in row.items() if k != "URI"}
            return items(
                req, {"meta": _meta("xnat:subjectData"), "data_fields": fields, "children": []}
            )
    raise HttpError(404, "Unable to identify subject")


def subject_by_id(app: App, req: Request, subject_id: str) -> Response:
    """``GET /data/subjects/{ID}``: as the project path answers."""
    project = app.store.subject_project(subject_id)
    if project is None:
        raise HttpError(404, "Unable to identify subject")
    return subject(app, req, project, subject_id)


def experiments(
    app: App, req: Request, project: str | None = None, subject: str | None = None
) -> Response:
    """``GET /data/projects/{P}[/subjects/{S}]/experiments``, or every project's
    (``GET /data/experiments``; ``project=P`` filters)."""
    if project is not None:
        need_project(app, project)
    rows = app.store.experiments(project, subject)
    return table(req, select(req, EXPERIMENTS, rows), "Experiments")


def experiment(app: App, req: Request, project: str, subject: str, label: str) -> Response:
    """``GET|PUT /data/projects/{P}/subjects/{S}/experiments/{E}``: item JSON, or create an
    empty session of ``xsiType``."""
    store = app.store
    need_project(app, project)
    if req.method == "PUT":
        if not _VALID_ID.match(label):
            raise HttpError(417, "Invalid character in experiment label.")
        xsi = req.param("xsiType") or req.param("xsi:type") or "xnat:mrSessionData"
        exp_id, created = store.put_experiment(project, subject, label, xsi)
        return _created(created, exp_id)
    item = store.experiment_item(project, subject, label)
    if item is None:
        raise HttpError(404, _NO_SESSION)
    return items(req, item["items"][0])


def project_experiment(app: App, req: Request, project: str, label: str) -> Response:
    """``GET /data/projects/{P}/experiments/{E}``."""
    need_project(app, project)
    item = app.store.experiment_item(project, None, label)
    if item is None:
        raise HttpError(404, _NO_SESSION)
    return items(req, item["items"][0])


def _meta(xsi_type: str) -> dict[str, object]:
    """An item's ``meta`` (§1.5): its type and that it is the current version."""
    return {"xsi:type": xsi_type, "isHistory": False}
