"""Site configuration over HTTP: the DICOM routing rules, ``/data/config/dicom/<kind>``
(docs/xnat-behaviour.md §6.2)."""

from __future__ import annotations

from xnatio.sandbox.bodies import read_multipart, single_file
from xnatio.sandbox.web.messages import App, HttpError, Request, Response, table, true

__all__ = ["dicom_config"]

_CONFIG_LIMIT = 1 << 22


def status_flag(req: Request) -> bool | None:
    """The config service's ``status`` parameter: True (enabled, true), False (disabled, false)
    or None when absent; anything else is the 400 XNAT answers."""
    status = req.param("status")
    if status is None:
        return None
    if status not in ("enabled", "disabled", "true", "false"):
        raise HttpError(
            400,
            "Only valid values for the status flag are enabled or true and disabled or "
            f"false: {status}",
        )
    return status in ("enabled", "true")


def dicom_config(app: App, req: Request, kind: str) -> Response:
    """``GET|PUT|DELETE /data/config/dicom/<kind>``, answered as XNAT's config service does."""
    if req.method == "GET":
        return _get(app, req, kind)
    store = app.store
    if req.method == "DELETE":
        store.set_routing_rules_enabled(kind, False, user=req.user)
        return Response(200, b"")
    # PUT: a site administrator's request (the sandbox's one user is one).
    enabled = status_flag(req)
    if enabled is not None:
        store.set_routing_rules_enabled(kind, enabled, user=req.user)
        if not enabled or not req.body.length:
            return Response(200, b"")
    text = _config_body(app, req)
    info = store.routing_rules_info(kind)
    if info is not None and info["contents"] == text:
        return Response(200, b"")
    store.set_routing_rules(kind, text, user=req.user)
    return Response(201, b"")


def _get(app: App, req: Request, kind: str) -> Response:
    """The text alone (``contents=true``) or the config service's record as a table."""
    info = app.store.routing_rules_info(kind)
    meta = true(req.param("meta"))
    if true(req.param("contents")) and not meta:
        if info is None or info["status"] == "disabled":
            raise HttpError(
                404,
                f"Config not found for user {req.user} and project null on tool "
                f"[dicom] path [{kind}]",
            )
        return Response(200, info["contents"].encode(), "text/plain;charset=UTF-8")
    if info is None:
        raise HttpError(
            404,
            f"Couldn't find config for user {req.user} and project null on tool "
            f"[dicom] path [{kind}]",
        )
    row = {
        "tool": "dicom",
        "path": kind,
        "project": "",
        "user": info["user"],
        "create_date": info["create_date"],
        "reason": "",
        "contents": "" if meta else info["contents"],
        "unversioned": "false",
        "version": info["version"],
        "status": info["status"],
    }
    return table(req, [row], "Configuration")


def _config_body(app: App, req: Request) -> str:
    """The text of a config PUT: the raw body, or the one file of a multipart form."""
    if req.media_type == "multipart/form-data":
        form = read_multipart(req.body, str(req.headers["Content-Type"]), app.spool_dir)
        try:
            return single_file(form).path.read_text("utf-8")
        finally:
            for part in form.files:
                part.path.unlink(missing_ok=True)
    parts: list[bytes] = []
    size = 0
    while not req.body.at_eof:
        chunk = req.body.read(1 << 16)
        size += len(chunk)
        if size > _CONFIG_LIMIT:
            raise HttpError(413, "Configuration too large")
        parts.append(chunk)
    try:
        return b"".join(parts).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "The configuration is not UTF-8 text.") from None
