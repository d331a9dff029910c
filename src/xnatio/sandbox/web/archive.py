"""Archived sessions over HTTP: scans, a scan and the session's files
(docs/xnat-behaviour.md §4.2, §14.5)."""

from __future__ import annotations

from xnatio.sandbox.web.columns import SCANS, select
from xnatio.sandbox.web.downloads import file_listing
from xnatio.sandbox.web.messages import App, HttpError, Request, Response, items, table

__all__ = ["scan", "scan_files", "scans"]

_NO_SESSION = "Unable to identify image session"


def scans(app: App, req: Request, project: str, subject: str, label: str) -> Response:
    """``GET …/experiments/{E}/scans``."""
    rows = app.store.scans(project, subject, label)
    if rows is None:
        raise HttpError(404, _NO_SESSION)
    return table(req, select(req, SCANS, rows), "Scans")


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
                return items(req, scan_item)
    raise HttpError(404, "Unable to identify scan")


def scan_files(
    app: App, req: Request, project: str, subject: str, label: str, scans: str
) -> Response:
    """``GET …/experiments/{E}/scans/{ALL|*|a,b}/files``: the listing, or the files as one
    archive (``format=zip``, ``tar``, ``tar.gz``)."""
    listings = app.store.listings
    return file_listing(
        app, req, lambda: listings.scan_file_sources(project, subject, label, scans), _NO_SESSION
    )
