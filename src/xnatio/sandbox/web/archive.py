"""Archived sessions over HTTP: scans, a scan, its resources and the session's files
(docs/xnat-behaviour.md §4.2)."""

from __future__ import annotations

from xnatio.sandbox.web.messages import App, HttpError, Request, Response, items, table

__all__ = ["scan", "scan_files", "scan_resources", "scans"]

_NO_SESSION = "Unable to identify image session"


def scans(app: App, req: Request, project: str, subject: str, label: str) -> Response:
    """``GET …/experiments/{E}/scans``."""
    rows = app.store.scans(project, subject, label)
    if rows is None:
        raise HttpError(404, _NO_SESSION)
    return table(req, rows, "Scans")


def scan(app: App, req: Request, project: str, subject: str, label: str, scan: str) -> Response:
    """``GET …/experiments/{E}/scans/{id}``: the scan's item JSON from the experiment's."""
    item = app.store.experiment_item(project, subject, label)
    if item is None:
        raise HttpError(404, _NO_SESSION)
    for child in item["items"][0]["children"]:
        if child["field"] != "scans/scan":
            continue
        for scan_item in child["items"]:
            if scan_item["data_fields"]["ID"] == scan:
                return items(scan_item)
    raise HttpError(404, "Unable to identify scan")


def scan_resources(
    app: App, req: Request, project: str, subject: str, label: str, scan: str
) -> Response:
    """``GET …/experiments/{E}/scans/{id}/resources``."""
    rows = app.store.scan_resources(project, subject, label, scan)
    if rows is None:
        raise HttpError(404, "Unable to identify scan")
    return table(req, rows, "Resources")


def scan_files(
    app: App, req: Request, project: str, subject: str, label: str, scans: str
) -> Response:
    """``GET …/experiments/{E}/scans/{ALL|*|a,b}/files``."""
    rows = app.store.scan_files(project, subject, label, scans)
    if rows is None:
        raise HttpError(404, _NO_SESSION)
    return table(req, rows, "Files")
