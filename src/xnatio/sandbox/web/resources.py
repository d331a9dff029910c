"""Files in resources over HTTP: list, download, upload and delete (docs/xnat-behaviour.md §7).

The same handlers serve a scan's resources and the session's own (``scan`` ``None``).
"""

from __future__ import annotations

import json
from typing import BinaryIO, cast

from xnatio.sandbox.bodies import read_multipart
from xnatio.sandbox.web.messages import App, HttpError, Request, Response, table

__all__ = ["resource_file", "resource_files"]

# Where a resource is: project, subject, label, scan (None for a session resource), resource;
# the route's captured parts, in the order SandboxStore's resource methods take them.
_Where = tuple[str, str, str, str | None, str]

_EMPTY_PUT = (
    "You tried to PUT to this service, but didn't provide any data (found request entity size of "
    "0). Please check your request and try again."
)


def resource_files(
    app: App, req: Request, project: str, subject: str, label: str, scan: str | None, resource: str
) -> Response:
    """``GET|PUT|POST …/resources/{R}/files``: the listing, or an upload (multipart)."""
    if req.method in ("PUT", "POST"):
        return _put(app, req, (project, subject, label, scan, resource), None)
    rows = app.store.resource_files(project, subject, label, scan, resource)
    if rows is None:
        raise HttpError(404, "Unable to identify image session")
    return table(req, rows, "Files")


# The signature mirrors the route's captured parts, like SandboxStore.put_resource_file's.
def resource_file(
    app: App,
    req: Request,
    project: str,
    subject: str,
    label: str,
    scan: str | None,
    resource: str,
    path: str,
) -> Response:
    """``GET|PUT|POST|DELETE …/resources/{R}/files/{path}``."""
    store = app.store
    if req.method == "DELETE":
        store.delete_file(project, subject, label, scan, path, resource=resource)
        return Response(200, b"")
    if req.method in ("GET", "HEAD"):
        found = store.resource_file_path(project, subject, label, scan, resource, path)
        if found is None or not found.is_file():
            if req.flag("accept-not-found"):
                return Response(204, b"")
            raise HttpError(404, "Unable to find file.")
        return Response(200, b"", "application/octet-stream", file=found)
    return _put(app, req, (project, subject, label, scan, resource), path)


def session_resource_files(
    app: App, req: Request, project: str, subject: str, label: str, resource: str
) -> Response:
    """``…/experiments/{E}/resources/{R}/files``: a session resource."""
    return resource_files(app, req, project, subject, label, None, resource)


def session_resource_file(
    app: App, req: Request, project: str, subject: str, label: str, resource: str, path: str
) -> Response:
    """``…/experiments/{E}/resources/{R}/files/{path}``: a file of a session resource."""
    return resource_file(app, req, project, subject, label, None, resource, path)


def _put(app: App, req: Request, where: _Where, path: str | None) -> Response:
    """Store the body (or each file of a multipart form) with ``overwrite`` and ``extract``;
    the paths kept because they existed come back as ``{"duplicates": [...]}``."""
    store = app.store
    overwrite = req.flag("overwrite")
    extract = req.flag("extract")
    duplicates: list[str] = []
    if req.media_type == "multipart/form-data":
        form = read_multipart(req.body, str(req.headers["Content-Type"]), app.spool_dir)
        try:
            if not form.files:
                raise HttpError(400, "No files found in the multipart body.")
            for part in form.files:
                name = path if (path and len(form.files) == 1) else part.filename
                with part.path.open("rb") as fh:
                    duplicates += store.put_resource_file(
                        *where, name, fh, overwrite=overwrite, extract=extract
                    )
        finally:
            for part in form.files:
                part.path.unlink(missing_ok=True)
    else:
        if req.body.length == 0 or path is None:
            raise HttpError(400, _EMPTY_PUT)
        body = cast(BinaryIO, req.body)
        duplicates = store.put_resource_file(
            *where, path, body, overwrite=overwrite, extract=extract
        )
    if duplicates:
        return Response(200, json.dumps({"duplicates": duplicates}).encode(), "text/html")
    return Response(200, b"")
