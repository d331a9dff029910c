"""The HTTP server and its connections: reading a request, fault injection, sending answers.

What a request means is decided by :mod:`xnatio.sandbox.web.routes`; this module only turns bytes
into a :class:`~xnatio.sandbox.web.messages.Request` and a
:class:`~xnatio.sandbox.web.messages.Response` back into bytes, with a connection per thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import logging
import os
import socket
import struct
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from xnatio.sandbox.bodies import BodyReader, ConnectionLostError, UploadError
from xnatio.sandbox.ingest import IngestModel, Overloaded, model_of, proxy_buffered
from xnatio.sandbox.stats import Gauge
from xnatio.sandbox.web.messages import (
    App,
    HttpError,
    Request,
    Response,
    status_page,
    tomcat_page,
)
from xnatio.sandbox.web.routes import handle

__all__ = ["HttpServer"]

log = logging.getLogger(__name__)

_DRAIN_LIMIT = 1 << 30  # unread body bytes we swallow to keep a connection; beyond, close it


class HttpServer(ThreadingHTTPServer):
    """A thread per connection; :meth:`close_all` cuts the open ones at shutdown.

    Parameters
    ----------
    address
        (host, port); port 0 picks a free port; an IPv6 host listens on IPv6.
    app
        The sandbox the handlers serve. Its gauges ``http_connections`` and ``http_requests``
        are kept up to date when it has them, and its ``ingest`` model (if any) serves every
        request outside ``/sandbox/``.
    """

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.connections = _gauge(app, "http_connections")
        self.requests = _gauge(app, "http_requests")
        self.ingest: IngestModel | None = model_of(app)
        self._conn_lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread | None] = {}
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Connection)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Counted on accept, before the thread starts: an answered request proves it counted.
        with self._conn_lock:
            self._conns[request] = None
        self.connections.up()
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            if request in self._conns:
                self._conns[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.release(request)

    def release(self, request: socket.socket) -> None:
        """Stop counting a connection (once): it ended, or the modelled proxy dropped it."""
        with self._conn_lock:
            if request not in self._conns:
                return
            del self._conns[request]
        self.connections.down()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_all(self, timeout: float = 10.0) -> None:
        """Cut every open connection and wait (bounded) for its thread to end."""
        with self._conn_lock:
            conns = list(self._conns.items())
        for sock, _ in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in conns:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))


class _Connection(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "xnatio-sandbox"
    rbufsize = 1 << 18
    disable_nagle_algorithm = True
    server: HttpServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.app.config.request_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line holds no credentials (they travel in headers, never logged).
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    # -- one request ----------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self._reset()
        try:
            req = self._request(method)
        except HttpError as exc:
            self.close_connection = True
            self._send_error(exc)
            return
        try:
            with self.server.requests.held():
                control = req.path.startswith("/sandbox/")
                if not control and self._inject_faults(req):
                    return
                model = None if control else self.server.ingest
                if model is None:
                    response = handle(self.server.app, req)
                else:
                    response = self._through_model(model, req)
                self._finish_body(req)
                self._send(response)
        except ConnectionLostError:
            self._lost(req.body)
        except HttpError as exc:
            if req.body.dropped or req.body.lost:
                self._lost(req.body)
                return
            self._finish_body(req)
            self._send_error(exc)
        except Exception:
            if req.body.dropped or req.body.lost:
                self._lost(req.body)
                return
            log.exception("sandbox: %s %s failed", method, req.path)
            self._finish_body(req)
            self._send_error(HttpError(500, "Internal server error"))
        finally:
            if self._timer is not None:
                self._timer.cancel()

    def _through_model(self, model: IngestModel, req: Request) -> Response:
        """Serve a request as the ingest model's proxy and server would (:mod:`..ingest`)."""
        try:
            with (
                proxy_buffered(req.body, self.server.app.spool_dir) as body,
                model.request(self._proxy_timeout),
            ):
                return handle(self.server.app, dataclasses.replace(req, body=body))
        except Overloaded:
            raise HttpError(503, _proxy_message(503)) from None
        except UploadError as exc:
            raise HttpError(exc.status, exc.message) from exc

    def _proxy_timeout(self) -> bool:
        """The modelled proxy gives up: 504 and the connection closed; the import goes on."""
        if not self._gateway_timeout():
            return False
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.server.release(self.connection)
        return True

    def _reset(self) -> None:
        self._gate = threading.Lock()
        self._responded = False
        self._timer: threading.Timer | None = None
        self._cookies: list[str] = []

    def _request(self, method: str) -> Request:
        """The request line and headers as a :class:`Request`; 400 for a bad Content-Length."""
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.split("/") if p]
        if parts[:1] == ["REST"]:
            parts[0] = "data"
        if parts[:2] == ["data", "archive"]:
            del parts[1]
        return Request(
            method=method,
            path="/" + "/".join(parts),
            parts=parts,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers,
            body=self._body_reader(),
            cookies=self._cookies,
        )

    def _body_reader(self) -> BodyReader:
        encoding = str(self.headers.get("Transfer-Encoding", "")).lower()
        if "chunked" in encoding:
            return BodyReader(self.rfile, None)
        length_text = self.headers.get("Content-Length")
        try:
            length = int(length_text) if length_text is not None else 0
        except ValueError:
            raise HttpError(400, "Bad Content-Length") from None
        if length < 0:
            raise HttpError(400, "Bad Content-Length")
        return BodyReader(self.rfile, length)

    def _finish_body(self, req: Request) -> None:
        """Swallow what is left of the body, or give up on the connection if it is huge."""
        if req.body.at_eof:
            return
        if not req.body.drain(limit=_DRAIN_LIMIT):
            self.close_connection = True

    # -- faults ---------------------------------------------------------------------------------

    def _inject_faults(self, req: Request) -> bool:
        """Arm the faults that apply to this request; True if it has been answered already."""
        faults = self.server.app.faults
        error = faults.take_http_error(req.path)
        if error is not None:
            self._finish_body(req)
            self._send_error(HttpError(error.status, _proxy_message(error.status)))
            return True
        drop = faults.take_drop(req.path)
        if drop is not None:
            if drop.after_bytes <= 0:
                req.body.dropped = True
                self._lost(req.body)
                return True
            req.body.drop_after = drop.after_bytes
        late = faults.take_gateway_timeout(req.path)
        if late is not None:
            self._timer = threading.Timer(late.after_seconds, self._gateway_timeout)
            self._timer.daemon = True
            self._timer.start()
        return False

    def _gateway_timeout(self) -> bool:
        # Like a proxy whose read timeout ran out: answer now, let the import carry on.
        page = (
            b"<html><head><title>504 Gateway Time-out</title></head><body>"
            b"<center><h1>504 Gateway Time-out</h1></center></body></html>"
        )
        return self._send(
            Response(504, page, "text/html", {"Connection": "close"}), closing=True, cookies=False
        )

    def _lost(self, body: BodyReader) -> None:
        """End the connection without an answer; a reset if a fault asked for a drop."""
        with self._gate:
            self._responded = True
        self.close_connection = True
        if body.dropped:
            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )

    # -- answers --------------------------------------------------------------------------------

    def _send_error(self, exc: HttpError) -> None:
        if exc.status == 504 or exc.status in (502, 503):
            body = tomcat_page(exc.status, exc.message)
        else:
            body = status_page(exc.status, exc.message)
        self._send(Response(exc.status, body, "text/html;charset=UTF-8", exc.headers))

    def _send(self, response: Response, *, closing: bool = False, cookies: bool = True) -> bool:
        """Send one answer, once: a gateway timeout and the request's own answer may race.
        Returns whether this call sent it."""
        with self._gate:
            if self._responded:
                return False
            self._responded = True
            if closing:
                self.close_connection = True
            handle = response.file.open("rb") if response.file is not None else None
            if handle is not None and response.file_temporary:
                assert response.file is not None
                response.file.unlink(missing_ok=True)  # the open handle keeps the bytes
            size = len(response.body)
            if handle is not None:
                size = os.fstat(handle.fileno()).st_size - response.file_offset
                size = min(size, response.file_length) if response.file_length is not None else size
            head = self._head(response, size, cookies)
            payload = head if self.command == "HEAD" else head + response.body
            try:
                self.wfile.write(payload)  # one write: no Nagle/delayed-ACK stall
                if handle is not None and self.command != "HEAD" and size > 0:
                    self.connection.sendfile(handle, response.file_offset, size)
            except OSError:
                self.close_connection = True
            finally:
                if handle is not None:
                    handle.close()
            self.log_request(response.status, size)
            return True

    def _head(self, response: Response, size: int, cookies: bool) -> bytes:
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = ""
        lines = [
            f"HTTP/1.1 {response.status} {phrase}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Server: {self.server_version}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {size}",
        ]
        headers = dict(response.headers)
        if self.close_connection:
            headers["Connection"] = "close"
        lines.extend(f"{k}: {v}" for k, v in headers.items())
        if cookies:
            lines.extend(f"Set-Cookie: {c}" for c in self._cookies)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _gauge(app: App, name: str) -> Gauge:
    """The app's gauge ``name``, or a private one (an app without statistics)."""
    gauge = getattr(app, name, None)
    return gauge if isinstance(gauge, Gauge) else Gauge()


def _proxy_message(status: int) -> str:
    return {
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Temporarily Unavailable",
    }.get(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error")
