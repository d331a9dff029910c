"""The prearchive over HTTP: listings, a session's row, commit and the other actions, the
archive service, and Direct-Archive sessions (docs/xnat-behaviour.md §3.5, §4.2, §9)."""

from __future__ import annotations

from urllib.parse import parse_qs

from xnatio.sandbox.web.messages import (
    App,
    HttpError,
    Request,
    Response,
    data_uri,
    file_response,
    json_response,
    table,
    true,
    uri_list,
)

__all__ = ["archive_service", "batch_action", "prearchive", "prearchive_session"]


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
    return file_response(req, found)


def archive_service(app: App, req: Request) -> Response:
    """``POST /data/services/archive?src=…[&src=…]``: archive prearchive sessions (§9);
    ``redirect=true``, or a single session that auto-archives, answers 303 to the archive URI
    on the site (§14.7)."""
    sources = req.query.get("src") or []
    if not sources:
        raise HttpError(400, "Missing src parameter")
    uris = []
    auto = False
    for src in sources:
        clean = src[len("/data") :] if src.startswith("/data/") else src
        auto = _auto_archives(app, req, *_triple(clean))
        uris.append(
            app.store.archive_service(
                clean,
                dest=req.param("dest"),
                overwrite=req.param("overwrite"),
                overwrite_files=req.flag("overwrite_files"),
            )
        )
    if req.flag("redirect") or (auto and len(uris) == 1):
        site = f"http://{req.headers.get('Host', 'localhost')}"
        return Response(303, b"", "text/plain", {"Location": site + data_uri(uris[0])})
    return uri_list(uris)


_YES = frozenset({"true", "on", "yes", "y", "t"})
_NO = frozenset({"false", "off", "no", "n", "f"})


def _auto_archives(app: App, req: Request, project: str, ts: str, folder: str) -> bool:
    """Whether XNAT counts a session as auto-archiving (``PrearcSession.isAutoArchive``, §14.7):
    its own code says so; else a parameter whose name holds ``AA`` or ``auto-archive`` (xnatpy
    sends ``auto-archive=false``); else the project's code is 4 or 5."""
    row = app.store.prearchive_session(project, ts, folder)
    if row is None or project == "Unassigned":
        return False
    if row["autoarchive"] != "Manual":
        return True
    for name, values in req.query.items():
        if ("AA" in name or "auto-archive" in name) and values:
            word = values[0].strip().lower()
            if word in _YES or word in _NO:
                return word in _YES
    code = app.store.catalog.project_code(project)
    return code is not None and code >= 4


def _triple(src: str) -> tuple[str, str, str]:
    """(project, timestamp, folder) of a prearchive URI; 400 for anything else."""
    parts = [p for p in src.split("/") if p]
    if parts[:1] in (["data"], ["REST"]):
        parts = parts[1:]
    if len(parts) != 5 or parts[:2] != ["prearchive", "projects"]:
        raise HttpError(400, f"Invalid src URI ({src})")
    return parts[2], parts[3], parts[4]


def batch_action(app: App, req: Request, action: str) -> Response:
    """``POST /data/services/prearchive/{delete|move|rebuild}?src=…[&src=…]`` (``newProject``
    for move); the parameters may come as a form body, as pyxnat sends them. The sandbox acts
    at once whatever ``async`` says, and answers the sessions' rows afterwards (§14.8)."""
    params = {k: list(v) for k, v in req.query.items()}
    if req.media_type == "application/x-www-form-urlencoded":
        for key, values in parse_qs(req.body.read(1 << 20).decode("utf-8", "replace")).items():
            params.setdefault(key, []).extend(values)
    sources = params.get("src") or []
    if not sources:
        raise HttpError(404, "Unknown prearchive session.")
    if action not in ("delete", "move", "rebuild"):
        raise HttpError(404, "The server has not found anything matching the request URI")
    store = app.store
    triples = [_triple(src) for src in sources]
    rows = []
    for project, ts, folder in triples:
        if store.prearchive_session(project, ts, folder) is None:
            raise HttpError(404, f"/prearchive/projects/{project}/{ts}/{folder} not found.")
    new_project = (params.get("newProject") or [""])[0]
    for project, ts, folder in triples:
        if action == "delete":
            store.delete_prearchive(project, ts, folder)
            continue
        now = project
        if action == "rebuild":
            store.build_prearchive(project, ts, folder)
        elif store.move_prearchive(project, ts, folder, new_project) is not None:
            now = new_project
        row = store.prearchive_session(now, ts, folder)
        if row is not None:
            rows.append(row)
    return table(req, rows, "Prearchive")


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
