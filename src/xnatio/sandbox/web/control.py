"""Controlling the sandbox itself: fault injection over HTTP, and endpoints that only answer."""

from __future__ import annotations

import json

from xnatio.sandbox.web.messages import App, HttpError, Request, Response, json_response

__all__ = ["faults", "refresh_catalog"]


def faults(app: App, req: Request) -> Response:
    """``GET|PUT /sandbox/faults``: the armed faults; PUT applies a JSON specification first
    (:meth:`xnatio.sandbox.faults.Faults.apply`)."""
    switches = app.faults
    if req.method == "PUT":
        try:
            spec = json.loads(req.body.read(1 << 20) or b"{}")
            if not isinstance(spec, dict):
                raise ValueError("expected a JSON object")
            switches.apply(spec)
        except (ValueError, TypeError) as exc:
            raise HttpError(400, f"bad fault specification: {exc}") from None
    return json_response(switches.snapshot())


def refresh_catalog(app: App, req: Request) -> Response:
    """``POST /data/services/refresh/catalog``: answers 200 and does nothing."""
    return Response(200, b"")
