"""Controlling the sandbox itself: fault injection over HTTP, and endpoints that only answer."""

from __future__ import annotations

import dataclasses
import json
from typing import Protocol, runtime_checkable

from xnatio.sandbox.stats import SandboxStats
from xnatio.sandbox.web.messages import App, HttpError, Request, Response, json_response

__all__ = ["faults", "refresh_catalog", "stats"]


@runtime_checkable
class _Counting(Protocol):
    def stats(self) -> SandboxStats: ...
    def reset_stats(self) -> SandboxStats: ...


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


def stats(app: App, req: Request) -> Response:
    """``GET|DELETE /sandbox/stats``: what the sandbox counts (``Sandbox.stats()``).

    DELETE starts a new measurement (peaks become current counts, totals zero) and answers the
    readings after it. The connection that asks is one of the connections counted.
    """
    if not isinstance(app, _Counting):
        raise HttpError(404, "This server keeps no statistics")
    readings = app.reset_stats() if req.method == "DELETE" else app.stats()
    return json_response(dataclasses.asdict(readings))


def refresh_catalog(app: App, req: Request) -> Response:
    """``POST /data/services/refresh/catalog``: answers 200 and does nothing."""
    return Response(200, b"")
