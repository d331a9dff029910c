"""Files in resources over HTTP: list, download, upload and delete (docs/xnat-behaviour.md §7).

The same handlers serve a scan's resources and the session's own (``scan`` ``None``).
"""

from __future__ import annotations

import json
from typing import BinaryIO, cast
from xml.sax.saxutils import quoteattr

from xnatio.sandbox.bodies import read_multipart
from xnatio.sandbox.web.downloads import file_listing
from xnatio.sandbox.web.messages import App, HttpError, Request, Response, file_response, table

__all__ = ["resource", "resource_file", "resource_files", "resources"]

# Where a resource is: project, subject, label, scan (None for a session resource), resource;
# the route's captured parts, in the order SandboxStore's resource methods take them.
_Where = tuple[str, str, str, str | None, str]

_NO_SCAN = "Unable to identify scan"
_EMPTY_PUT = (
    "You tried to PUT to this service, but didn't provide any data (found request entity size of "
    "0). Please check your request and try again."
)


def resources(
    app: App, req: Request, project: str, subject: str, label: str, scan: str | None = None
) -> Response:
    """``GET …/experiments/{E}[/scans/{id}]/resources``: the resources with their file counts."""
    rows = app.store.listings.scan_resources(project, subject, label, scan)
    if rows is None:
        raise HttpError(404, "Unable to identify image session" if scan is None else _NO_SCAN)
    return table(req, rows, "Resources")


def resource(
    app: App, req: Request, project: str, subject: str, label: str, scan: str | None, res: str
) -> Response:
    """``GET|PUT|POST|DELETE …/resources/{R}``: the resource's catalog document, or create an
    empty resource (``format``, ``content``), or delete it with its files (§7, §14.4)."""
    store = app.store
    if req.method in ("PUT", "POST"):
        store.resources.create(
            project,
            subject,
            label,
            scan,
            res,
            fmt=req.param("format") or "",
            content=req.param("content") or "",
        )
        return Response(200, b"")
    if req.method == "DELETE":
        store.resources.delete(project, subject, label, scan, res)
        return Response(200, b"")
    files = store.resources.file_sources(project, subject, label, scan, res)
    if files is None:
        raise HttpError(404, "Unable to find the specified catalog.")
    entries = "".join(
        f"<cat:entry URI={quoteattr(f.path)} ID={quoteattr(f.path)} "
        f"name={quoteattr(f.path.rsplit('/', 1)[-1])} digest={quoteattr(f.row['digest'])} "
        f"size={quoteattr(f.row['Size'])}/>"
        for f in files
    )
    document = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<cat:Catalog '
        'xmlns:cat="http://nrg.wustl.edu/catalog" '
        f"ID={quoteattr(res)}><cat:entries>{entries}</cat:entries></cat:Catalog>"
    )
    return Response(200, document.encode(), "text/xml")


def resource_files(
    app: App, req: Request, project: str, subject: str, label: str, scan: str | None, resource: str
) -> Response:
    """``GET|PUT|POST …/resources/{R}/files``: the listing (or its files as one archive with
    ``format=zip``, ``tar``, ``tar.gz``), or an upload (multipart)."""
    if req.method in ("PUT", "POST"):
        return _put(app, req, (project, subject, label, scan, resource), None)
    return file_listing(
        app,
        req,
        lambda: app.store.resources.file_sources(project, subject, label, scan, resource),
        "Unable to identify image session",
    )


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
        return file_response(req, found)
    return _put(app, req, (project, subject, label, scan, resource), path)


def session_resource(
    app: App, req: Request, project: str, subject: str, label: str, res: str
) -> Response:
    """``…/experiments/{E}/resources/{R}``: a session resource."""
    return resource(app, req, project, subject, label, None, res)


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
