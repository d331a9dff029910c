"""The prearchive over HTTP: listings, a session's row, commit and the other actions, the
archive service, and Direct-Archive sessions (docs/xnat-behaviour.md §3.5, §4.2, §9)."""

from __future__ import annotations

from xnatio.sandbox.web.messages import (
    App,
    HttpError,
    Request,
    Response,
    data_uri,
    json_response,
    table,
    true,
    uri_list,
)

__all__ = ["archive_service", "prearchive", "prearchive_session"]


def prearchive(app: App, req: Request, projects: str | None = None) -> Response:
    """``GET /data/prearchive[/projects/{P[,P2…]}]`` (``Unassigned`` names the unassigned rows)."""
    store = app.store
    if projects is None:
        return table(req, store.prearchive_rows(None), "Prearchive")
    rows: list[dict[str, str]] = []
    for project in projects.split(","):
        if project != "Unassigned" and not store.project_exists(project):
            raise HttpError(
                403,
                f"The current user does not have access to the requested project: {project}",
            )
        rows.extend(store.prearchive_rows(project))
    return table(req, rows, "Prearchive")


def prearchive_session(app: App, req: Request, project: str, ts: str, folder: str) -> Response:
    """``GET|POST|DELETE /data/prearchive/projects/{P}/{timestamp}/{folder}``."""
    store = app.store
    if req.method == "DELETE":
        store.delete_prearchive(project, ts, folder)
        return Response(200, b"")
    if req.method == "POST" and req.param("action") != "commit":
        return _action(app, req, project, ts, folder)
    if req.method == "POST":
        auto: bool | None = None
        for name, values in req.query.items():
            if ("AA" in name or "auto-archive" in name) and values and true(values[0]):
                auto = True
        status, uri = store.commit_prearchive(
            project,
            ts,
            folder,
            overwrite=req.param("overwrite"),
            overwrite_files=req.flag("overwrite_files"),
            auto_archive=auto,
            dest=req.param("dest"),
        )
        return uri_list([uri], status)
    row = store.prearchive_session(project, ts, folder)
    if row is None:
        raise HttpError(404, f"Unable to find prearchive session {project}/{ts}/{folder}")
    return table(req, [row], "Prearchive session")


def _action(app: App, req: Request, project: str, ts: str, folder: str) -> Response:
    """``action=build``, ``reset-status`` and ``move`` (§9); answers as XNAT does."""
    store = app.store
    action = req.param("action")
    if action == "build":
        uri = store.build_prearchive(project, ts, folder)
        return Response(200, data_uri(uri).encode(), "text/uri-list")
    if action == "reset-status":
        uri = store.reset_prearchive_status(project, ts, folder, tag=req.param("tag"))
        return Response(200, data_uri(uri).encode(), "text/uri-list")
    if action == "move":
        moved = store.move_prearchive(project, ts, folder, req.param("newProject") or "")
        if moved is None:  # locked: XNAT sets no status and no body
            return Response(200, b"")
        return Response(301, data_uri(moved).encode(), "text/uri-list")
    if action is None:
        message = f"No action parameter was specified for the request by user {req.user}"
    else:
        message = f"User {req.user} requested an unsupported action on prearchive session: {action}"
    raise HttpError(400, message)


def prearchive_scans(app: App, req: Request, project: str, ts: str, folder: str) -> Response:
    """``GET <prearchive session>/scans`` (404 before the first build)."""
    return table(req, app.store.prearchive_scans(project, ts, folder), "Scans")


def prearchive_scan_resources(
    app: App, req: Request, project: str, ts: str, folder: str, scan: str
) -> Response:
    """``GET <prearchive session>/scans/{id}/resources``."""
    rows = app.store.prearchive_scan_resources(project, ts, folder, scan)
    return table(req, rows, "Resources")


def prearchive_scan_files(
    app: App, req: Request, project: str, ts: str, folder: str, scan: str, resource: str
) -> Response:
    """``GET <prearchive session>/scans/{id}/resources/{R}/files``."""
    rows = app.store.prearchive_scan_files(project, ts, folder, scan, resource)
    # XNAT's URI column: the request's own path plus the file's path in the resource.
    base = req.path.rstrip("/")
    files = [{"Name": r["Name"], "Size": r["Size"], "URI": f"{base}/{r['path']}"} for r in rows]
    return table(req, files, "Files")


def prearchive_scan_file(
    app: App,
    req: Request,
    project: str,
    ts: str,
    folder: str,
    scan: str,
    resource: str,
    path: str,
) -> Response:
    """``GET <prearchive session>/scans/{id}/resources/{R}/files/{path}``: the file's bytes."""
    found = app.store.prearchive_file_path(project, ts, folder, scan, resource, path)
    if found is None or not found.is_file():
        raise HttpError(400, f"Unable to access the file at: {path}")
    return Response(200, b"", "application/octet-stream", file=found)


def archive_service(app: App, req: Request) -> Response:
    """``POST /data/services/archive?src=…[&src=…]``: archive prearchive sessions (§9);
    ``redirect=true`` answers 303 to the first archive URI."""
    sources = req.query.get("src") or []
    if not sources:
        raise HttpError(400, "Missing src parameter")
    uris = []
    for src in sources:
        clean = src[len("/data") :] if src.startswith("/data/") else src
        uris.append(
            app.store.archive_service(
                clean,
                dest=req.param("dest"),
                overwrite=req.param("overwrite"),
                overwrite_files=req.flag("overwrite_files"),
            )
        )
    if req.flag("redirect"):
        return Response(303, b"", "text/plain", {"Location": data_uri(uris[0])})
    return uri_list(uris)


def direct_archive(app: App, req: Request, project: str, uid: str, label: str) -> Response:
    """``GET|POST /xapi/direct-archive/{P}/{uid}/{label}``: the session's row, or archive it
    now."""
    store = app.store
    if req.method == "POST":
        uri = store.direct_archive_trigger(project, uid, label)
        return Response(200, data_uri(uri).encode())
    row = store.direct_archive_status(project, uid, label)
    if row is None:
        raise HttpError(404, f"No direct-archive session {project}/{uid}/{label}")
    return json_response(row)
