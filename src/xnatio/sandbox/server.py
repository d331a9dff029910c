"""The sandbox: an XNAT-compatible HTTP server and DICOM SCP over a :class:`SandboxStore`.

Follows xnat-server-behaviour.md: §1 (paths, formats, errors), §2 (authentication), §3 (the import
service), §4.2 (listings), §7 (resource files) and §9 (commit endpoints). The data model and its
rules live in :mod:`xnatio.sandbox.store`; this module is the HTTP face, the authentication,
fault injection, the background ticker, and the life cycle of it all.

Examples
--------
>>> with Sandbox(SandboxConfig(data_dir=tmp_path)) as sandbox:  # doctest: +SKIP
...     httpx.get(sandbox.url + "/data/projects", auth=("admin", "admin"))
"""

from __future__ import annotations

import contextlib
import email.utils
import html
import json
import logging
import os
import re
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, BinaryIO, cast
from urllib.parse import parse_qs, unquote, urlsplit

from xnatio.sandbox.auth import AuthManager, Session, is_alias_format
from xnatio.sandbox.bodies import (
    ArchiveEntry,
    BodyReader,
    ConnectionLostError,
    UploadError,
    archive_format,
    iter_archive,
    read_multipart,
)
from xnatio.sandbox.faults import Faults
from xnatio.sandbox.store import (
    ClientError,
    ImportParams,
    SandboxStore,
    ServerError,
    StoreFaults,
)

__all__ = ["Sandbox", "SandboxConfig"]

log = logging.getLogger(__name__)

_VALID_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_BROWSER_UA = re.compile(r"MSIE|Mozilla|AppleWebKit|Opera")
_IMPORT_HANDLERS = {"DICOM-zip", "gradual-DICOM", "SI", "XAR", "inbox", "automation"}
# §3.2: the name XNAT gives an in-body upload, from its Content-Type.
_INBODY_NAMES = {
    "application/zip": "upload.zip",
    "application/x-tar": "upload.tar",
    "application/x-gtar": "upload.tar.gz",
    "application/x-gzip": "upload.gzip",
    "application/octet-stream": "upload",
    "application/dicom": "upload.dcm",
}
_DRAIN_LIMIT = 1 << 30  # unread body bytes we swallow to keep a connection; beyond, close it
LOGIN_PAGE = "/app/template/Login.vm"


@dataclass(frozen=True)
class SandboxConfig:
    """Settings of one sandbox; every timer and limit of xnat-server-behaviour.md §10.

    Parameters
    ----------
    data_dir
        Folder for the store (files plus a SQLite index); created if missing.
    host, port
        HTTP address; port 0 picks a free port.
    dicom_port
        DICOM SCP port; 0 picks a free port; None runs no SCP.
    dicom_aet
        The SCP's AE title; associations calling another title are rejected.
    user, password
        The one account (the password never appears in a repr or a log).
    projects
        Projects created at start.
    ticker_interval
        Seconds between background ticks (prearchive rebuild, auto-archive, Direct-Archive).
    idle_interval
        Seconds without new files before a session counts as complete (XNAT: 300).
    session_timeout
        Idle seconds before an HTTP session ends (XNAT: 900).
    max_failed_logins, lockout_seconds
        Account lockout (XNAT: 20 failures, one hour); ``max_failed_logins=0`` disables it.
    faults
        Faults armed at start, in the form of :meth:`xnatio.sandbox.faults.Faults.apply`.
    request_timeout
        Seconds a connection may sit idle (between or inside requests) before it is closed.
    alias_token_timeout
        Seconds an alias token from ``/data/services/tokens/issue`` stays valid (XNAT: 2 days).
    """

    data_dir: Path | str
    host: str = "127.0.0.1"
    port: int = 0
    dicom_port: int | None = None
    dicom_aet: str = "XNAT"
    user: str = "admin"
    password: str = field(default="admin", repr=False)
    projects: tuple[str, ...] = ("P1",)
    ticker_interval: float = 60.0
    idle_interval: float = 300.0
    session_timeout: float = 900.0
    max_failed_logins: int = 20
    lockout_seconds: float = 3600.0
    faults: Mapping[str, Any] | None = None
    request_timeout: float = 300.0
    alias_token_timeout: float = 172800.0


class Sandbox:
    """A running XNAT-compatible server: HTTP, optional DICOM SCP, background ticker.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Works in a thread of the
    calling process (tests) and as the body of ``xio sandbox`` (a separate process).

    Parameters
    ----------
    config
        The settings.

    Attributes
    ----------
    store
        The data model (available after :meth:`start`).
    faults
        Fault switches; change them at any time.
    auth
        Users, sessions and lockout.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.auth = AuthManager(
            {config.user: config.password},
            session_timeout=config.session_timeout,
            max_failed_logins=config.max_failed_logins,
            lockout_seconds=config.lockout_seconds,
            alias_token_timeout=config.alias_token_timeout,
        )
        self._store_faults = StoreFaults()
        self.faults = Faults(self._store_faults, self.auth.expire_all)
        self._store: SandboxStore | None = None
        self._http: _Server | None = None
        self._http_thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._scp: Any = None  # xnatio.sandbox.scp.DicomReceiver, imported only when used
        self.spool_dir = self.data_dir / ".http-spool"

    def __repr__(self) -> str:
        state = "running" if self._http is not None else "stopped"
        return f"Sandbox({state}, url={self.url if self._http else None!r}, config={self.config!r})"

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def store(self) -> SandboxStore:
        """The store; raises if the sandbox is not running."""
        if self._store is None:
            raise RuntimeError("the sandbox is not running")
        return self._store

    @property
    def url(self) -> str:
        """Base URL, for example ``http://127.0.0.1:8080``."""
        if self._http is None:
            raise RuntimeError("the sandbox is not running")
        host, port = self._http.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{text}]" if ":" in text else text
        return f"http://{shown}:{port}"

    @property
    def port(self) -> int:
        """The HTTP port."""
        if self._http is None:
            raise RuntimeError("the sandbox is not running")
        return int(self._http.server_address[1])

    @property
    def dicom_port(self) -> int | None:
        """The SCP's port, or None without an SCP."""
        return None if self._scp is None else int(self._scp.port)

    @property
    def aet(self) -> str:
        """The SCP's AE title."""
        return self.config.dicom_aet

    def start(self) -> Sandbox:
        """Open the store, create the projects, start HTTP, the SCP and the ticker."""
        if self._http is not None:
            raise RuntimeError("the sandbox is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.spool_dir, ignore_errors=True)
        self.spool_dir.mkdir()
        self._stopping.clear()
        store = SandboxStore(
            self.data_dir, idle_interval=self.config.idle_interval, faults=self._store_faults
        )
        self._store = store
        try:
            for project in self.config.projects:
                store.create_project(project)
            if self.config.faults:
                self.faults.apply(self.config.faults)
            self._http = _Server((self.config.host, self.config.port), self)
            self._http_thread = threading.Thread(
                target=self._http.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="sandbox-http",
                daemon=True,
            )
            self._http_thread.start()
            if self.config.dicom_port is not None:
                from xnatio.sandbox.scp import DicomReceiver

                self._scp = DicomReceiver(self, self.config.host, self.config.dicom_port)
                self._scp.start()
            self._ticker = threading.Thread(target=self._tick_loop, name="sandbox-ticker")
            self._ticker.daemon = True
            self._ticker.start()
        except BaseException:
            self.stop()
            raise
        log.info("sandbox listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop everything and close the store; connections still open are cut."""
        self._stopping.set()
        if self._scp is not None:
            self._scp.stop()
            self._scp = None
        if self._http is not None:
            self._http.shutdown()
            self._http.close_all()
            self._http.server_close()
            if self._http_thread is not None:
                self._http_thread.join()
            self._http = None
            self._http_thread = None
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self._store is not None:
            self._store.close()
            self._store = None
        shutil.rmtree(self.spool_dir, ignore_errors=True)

    def tick(self) -> None:
        """Run one background tick now (what the ticker thread does every interval)."""
        self.store.tick()

    def _tick_loop(self) -> None:
        while not self._stopping.wait(self.config.ticker_interval):
            try:
                self.store.tick()
            except Exception:
                log.exception("sandbox ticker failed")


# -- HTTP plumbing ----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._conn_lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._conns[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self._conns.pop(request, None)

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
            thread.join(max(0.0, deadline - time.monotonic()))


class HttpError(Exception):
    """An error answer: status plus a message shown in the Restlet-style ``<h3>`` page."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class Response:
    """An answer to send: status, body, content type and extra headers."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # sent after the headers instead of ``body``


def status_page(status: int, message: str) -> bytes:
    """Restlet's HTML status page (§1.6): the message sits in an ``<h3>``."""
    return (
        "<html>\n<head>\n   <title>Status page</title>\n</head>\n<body>\n"
        f"<h3>{html.escape(message, quote=False)}</h3>"
        "<p>You can get technical details "
        f'<a href="http://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html">here</a>.<br>\n'
        'Please continue your visit at our <a href="/">home page</a>.\n</p>\n</body>\n</html>\n'
    ).encode()


def tomcat_page(status: int, message: str) -> bytes:
    """Tomcat's HTML error page, used for errors raised by the security filters (§2.2)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = f"HTTP Status {status} – {phrase}"
    return (
        f'<!doctype html><html lang="en"><head><title>{title}</title></head><body>'
        f"<h1>{title}</h1><hr/><p><b>Type</b> Status Report</p>"
        f"<p><b>Message</b> {html.escape(message)}</p><hr/><h3>Apache Tomcat</h3></body></html>"
    ).encode()


def result_set(rows: list[dict[str, str]], title: str = "") -> bytes:
    """XNAT's table JSON (§1.4): every value a string, ``totalRecords`` a string too."""
    clean = [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]
    body = {"ResultSet": {"Result": clean, "totalRecords": str(len(clean)), "title": title}}
    return json.dumps(body).encode()


def _csv(rows: list[dict[str, str]]) -> bytes:
    import csv
    import io

    out = io.StringIO()
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _data_uri(uri: str) -> str:
    """Put ``/data`` in front of a store URI (§3.6), except for ``/xapi/`` and full ones."""
    if uri.startswith(("/data/", "/xapi/", "/REST/")) or not uri.startswith("/"):
        return uri
    return "/data" + uri


def _true(value: str | None) -> bool:
    """Java's Boolean.parseBoolean: only a case-insensitive "true" counts (§1.7)."""
    return value is not None and value.lower() == "true"


@dataclass
class _Request:
    method: str
    path: str  # normalised: /data/..., /xapi/..., /sandbox/...
    parts: list[str]
    query: dict[str, list[str]]
    headers: Any
    body: BodyReader
    user: str = ""
    session: Session | None = None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def media_type(self) -> str:
        return str(self.headers.get("Content-Type", "")).split(";")[0].strip().lower()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "xnatio-sandbox"
    rbufsize = 1 << 18
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.sandbox.config.request_timeout)

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
        split = urlsplit(self.path)
        raw_parts = [unquote(p) for p in split.path.split("/") if p]
        if raw_parts[:1] == ["REST"]:
            raw_parts[0] = "data"
        if raw_parts[:2] == ["data", "archive"]:
            del raw_parts[1]
        path = "/" + "/".join(raw_parts)
        try:
            body = self._body_reader()
        except HttpError as exc:
            self.close_connection = True
            self._send_error(exc)
            return
        req = _Request(
            method=method,
            path=path,
            parts=raw_parts,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
        )
        try:
            if not path.startswith("/sandbox/") and self._inject_faults(req):
                return
            response = self._handle(req)
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
            log.exception("sandbox: %s %s failed", method, path)
            self._finish_body(req)
            self._send_error(HttpError(500, "Internal server error"))
        finally:
            if self._timer is not None:
                self._timer.cancel()

    def _reset(self) -> None:
        self._gate = threading.Lock()
        self._responded = False
        self._timer: threading.Timer | None = None
        self._extra_headers: dict[str, str] = {}
        self._cookies: list[str] = []

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

    def _finish_body(self, req: _Request) -> None:
        """Swallow what is left of the body, or give up on the connection if it is huge."""
        if req.body.at_eof:
            return
        if not req.body.drain(limit=_DRAIN_LIMIT):
            self.close_connection = True

    def _inject_faults(self, req: _Request) -> bool:
        faults = self.server.sandbox.faults
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

    def _gateway_timeout(self) -> None:
        # Like a proxy whose read timeout ran out: answer now, let the import carry on.
        page = (
            b"<html><head><title>504 Gateway Time-out</title></head><body>"
            b"<center><h1>504 Gateway Time-out</h1></center></body></html>"
        )
        self._send(
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

    def _send_error(self, exc: HttpError) -> None:
        if exc.status == 504 or exc.status in (502, 503):
            body = tomcat_page(exc.status, exc.message)
        else:
            body = status_page(exc.status, exc.message)
        self._send(Response(exc.status, body, "text/html;charset=UTF-8", exc.headers))

    def _send(self, response: Response, *, closing: bool = False, cookies: bool = True) -> None:
        with self._gate:
            if self._responded:
                return
            self._responded = True
            if closing:
                self.close_connection = True
            try:
                phrase = HTTPStatus(response.status).phrase
            except ValueError:
                phrase = ""
            handle = response.file.open("rb") if response.file is not None else None
            size = os.fstat(handle.fileno()).st_size if handle else len(response.body)
            lines = [
                f"HTTP/1.1 {response.status} {phrase}",
                f"Date: {email.utils.formatdate(usegmt=True)}",
                f"Server: {self.server_version}",
                f"Content-Type: {response.content_type}",
                f"Content-Length: {size}",
            ]
            headers = {**self._extra_headers, **response.headers}
            if self.close_connection:
                headers["Connection"] = "close"
            lines.extend(f"{k}: {v}" for k, v in headers.items())
            if cookies:
                lines.extend(f"Set-Cookie: {c}" for c in self._cookies)
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            payload = head if self.command == "HEAD" else head + response.body
            try:
                self.wfile.write(payload)  # one write: no Nagle/delayed-ACK stall
                if handle is not None and self.command != "HEAD":
                    self.connection.sendfile(handle)
            except OSError:
                self.close_connection = True
            finally:
                if handle is not None:
                    handle.close()
            self.log_request(response.status, size)

    # -- authentication (§2) --------------------------------------------------------------------

    def _authenticate(self, req: _Request) -> None:
        auth = self.server.sandbox.auth
        session_id = _cookie(self.headers.get("Cookie", ""), "JSESSIONID")
        if session_id:
            session = auth.session(session_id)
            if session is not None:
                req.user, req.session = session.user, session
                self._csrf_check(req, session)
                self._session_cookie(session, new=False)
                return
        header = str(self.headers.get("Authorization", ""))
        if header[:6].lower() == "basic ":
            result = auth.check_basic(header)
            if result.user is None:
                body = tomcat_page(result.status, result.message)
                raise _Reply(Response(result.status, body, "text/html;charset=utf-8"))
            session = auth.new_session(result.user)
            req.user, req.session = result.user, session
            self._session_cookie(session, new=True)
            return
        if _BROWSER_UA.search(str(self.headers.get("User-Agent", ""))):
            raise _Reply(Response(302, b"", "text/html", {"Location": LOGIN_PAGE}))
        body = tomcat_page(401, "Unauthorized")
        raise _Reply(
            Response(
                401, body, "text/html;charset=utf-8", {"WWW-Authenticate": 'Basic realm="XNAT"'}
            )
        )

    def _csrf_check(self, req: _Request, session: Session) -> None:
        # §1.8: only cookie-authenticated, state-changing requests from browser-like agents.
        if req.method not in ("POST", "PUT", "DELETE"):
            return
        if not _BROWSER_UA.search(str(self.headers.get("User-Agent", ""))):
            return
        if req.param("XNAT_CSRF") != session.csrf:
            raise HttpError(403, "INVALID CSRF (XNAT_CSRF parameter missing or wrong)")

    def _session_cookie(self, session: Session, *, new: bool) -> None:
        if new:
            self._cookies.append(f"JSESSIONID={session.id}; Path=/; HttpOnly")
        timeout_ms = int(self.server.sandbox.auth.session_timeout * 1000)
        self._cookies.append(
            f'SESSION_EXPIRATION_TIME="{int(time.time() * 1000)},{timeout_ms}"; Path=/'
        )

    # -- routing --------------------------------------------------------------------------------

    def _handle(self, req: _Request) -> Response:
        try:
            if req.path == LOGIN_PAGE:
                page = b"<html><head><title>XNAT</title></head><body>Login</body></html>"
                return Response(200, page, "text/html")
            if req.path in ("/data/services/auth",):
                return self._services_auth(req)
            self._authenticate(req)
            route, args = _match(req)
            return route(self, req, *args)
        except _Reply as reply:
            return reply.response
        except (ClientError, ServerError) as exc:
            raise HttpError(exc.status, str(exc)) from exc
        except UploadError as exc:
            raise HttpError(exc.status, exc.message) from exc

    def _services_auth(self, req: _Request) -> Response:
        if req.method not in ("PUT", "POST"):
            raise HttpError(405, "Method Not Allowed")
        form = parse_qs(req.body.read(1 << 16).decode("utf-8", "replace"))
        user = (form.get("username") or [""])[0]
        password = (form.get("password") or [""])[0]
        auth = self.server.sandbox.auth
        if is_alias_format(user):
            result = auth.check_alias(user, password)
        else:
            result = auth.check_password(user, password)
        if result.user is None:
            page = tomcat_page(result.status, result.message)
            return Response(result.status, page, "text/html;charset=utf-8")
        session = auth.new_session(result.user)
        self._session_cookie(session, new=True)
        return Response(200, session.id.encode())

    # route handlers: (handler, request, *captured path parts) -> Response

    def jsession(self, req: _Request) -> Response:
        assert req.session is not None
        if req.method == "DELETE":
            self.server.sandbox.auth.end_session(req.session.id)
            self._cookies = [c for c in self._cookies if not c.startswith("JSESSIONID=")]
            return Response(200, b"")
        body = req.session.id
        if _true(req.param("CSRF")):
            body += f"; XNAT_CSRF={req.session.csrf}"
        return Response(200, body.encode())

    def data_auth(self, req: _Request) -> Response:
        return Response(200, f"User '{req.user}' is logged in".encode())

    def faults_route(self, req: _Request) -> Response:
        faults = self.server.sandbox.faults
        if req.method == "PUT":
            try:
                spec = json.loads(req.body.read(1 << 20) or b"{}")
                if not isinstance(spec, dict):
                    raise ValueError("expected a JSON object")
                faults.apply(spec)
            except (ValueError, TypeError) as exc:
                raise HttpError(400, f"bad fault specification: {exc}") from None
        return Response(200, json.dumps(faults.snapshot()).encode(), "application/json")

    # alias tokens (§2.4)

    def tokens(self, req: _Request, operation: str, *args: str) -> Response:
        auth = self.server.sandbox.auth
        if operation == "issue":
            user = req.user
            if len(args) == 2 and args[0] == "user":
                user = args[1]
                if req.user not in (user, self.server.sandbox.config.user):
                    raise HttpError(
                        403,
                        "Non-admin users can only request operations on alias tokens for their "
                        "own account",
                    )
                if not auth.has_user(user):
                    raise HttpError(404, f"Can't find a user with the username {user}")
            elif args:
                raise HttpError(404, "The server has not found anything matching the request URI")
            token = auth.issue_token(user)
            return Response(200, json.dumps(token.as_json()).encode(), "application/json")
        if operation == "validate" and len(args) == 2:
            owner = auth.validate_token(args[0], args[1])
            body = {"valid": owner} if owner is not None else {}
            return Response(200, json.dumps(body).encode(), "application/json")
        if operation == "invalidate" and len(args) == 1:
            owner = auth.token_owner(args[0])
            if owner is None:
                raise HttpError(404, f"Can't find an alias token with the alias {args[0]}")
            if req.user not in (owner, self.server.sandbox.config.user):
                raise HttpError(
                    403,
                    "Non-admin users can only request operations on alias tokens for their own "
                    "account",
                )
            auth.invalidate_token(args[0])
            return Response(200, json.dumps({"result": "OK"}).encode(), "application/json")
        raise HttpError(400, f"Unknown alias token operation: {operation}")

    def refresh_catalog(self, req: _Request) -> Response:
        return Response(200, b"")

    # site configuration: DICOM routing rules (§6.2)

    def dicom_config(self, req: _Request, kind: str) -> Response:
        store = self.server.sandbox.store
        if req.method == "GET":
            info = store.routing_rules_info(kind)
            if _true(req.param("contents")) and not _true(req.param("meta")):
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
                "contents": "" if _true(req.param("meta")) else info["contents"],
                "unversioned": "false",
                "version": info["version"],
                "status": info["status"],
            }
            return self._table(req, [row], "Configuration")
        if req.method == "DELETE":
            store.set_routing_rules_enabled(kind, False, user=req.user)
            return Response(200, b"")
        # PUT: a site administrator's request (the sandbox's one user is one).
        status = req.param("status")
        if status is not None:
            if status not in ("enabled", "disabled", "true", "false"):
                raise HttpError(
                    400,
                    "Only valid values for the status flag are enabled or true and disabled or "
                    f"false: {status}",
                )
            enabled = status in ("enabled", "true")
            store.set_routing_rules_enabled(kind, enabled, user=req.user)
            if not enabled or not req.body.length:
                return Response(200, b"")
        text = self._config_body(req)
        info = store.routing_rules_info(kind)
        if info is not None and info["contents"] == text:
            return Response(200, b"")
        store.set_routing_rules(kind, text, user=req.user)
        return Response(201, b"")

    def _config_body(self, req: _Request) -> str:
        """The text of a config PUT: the raw body, or the one file of a multipart form."""
        if req.media_type == "multipart/form-data":
            form = read_multipart(req.body, str(req.headers["Content-Type"]), self._spool_dir())
            try:
                if not form.files:
                    raise HttpError(400, "Unable to identify upload format.")
                if len(form.files) > 1:
                    raise HttpError(400, "Importer is limited to one uploaded resource at a time.")
                return form.files[0].path.read_text("utf-8")
            finally:
                for part in form.files:
                    part.path.unlink(missing_ok=True)
        parts: list[bytes] = []
        size = 0
        while not req.body.at_eof:
            chunk = req.body.read(1 << 16)
            size += len(chunk)
            if size > 1 << 22:
                raise HttpError(413, "Configuration too large")
            parts.append(chunk)
        try:
            return b"".join(parts).decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "The configuration is not UTF-8 text.") from None

    # projects, subjects, experiments (§4.2, §5)

    def projects(self, req: _Request) -> Response:
        return self._table(req, self.server.sandbox.store.list_projects(), "Projects")

    def project(self, req: _Request, project: str) -> Response:
        store = self.server.sandbox.store
        if req.method == "PUT":
            if not _VALID_ID.match(project):
                raise HttpError(417, "Invalid character in project ID.")
            store.create_project(project)
            return Response(200, b"")
        rows = [r for r in store.list_projects() if r.get("ID") == project]
        if not rows:
            raise HttpError(404, f"Unable to find project {project}")
        row = rows[0]
        item = {
            "meta": {"xsi:type": "xnat:projectData", "isHistory": False},
            "data_fields": {**row, "ID": project},
        }
        return Response(200, json.dumps({"items": [item]}).encode(), "application/json")

    def prearchive_code_get(self, req: _Request, project: str) -> Response:
        store = self.server.sandbox.store
        self._need_project(project)
        return Response(200, str(store.get_prearchive_code(project)).encode())

    def prearchive_code_put(self, req: _Request, project: str, code: str) -> Response:
        self._need_project(project)
        if code not in ("0", "4", "5"):
            raise HttpError(400, f"Invalid prearchive code: {code}")
        self.server.sandbox.store.set_prearchive_code(project, int(code))
        return Response(200, b"")

    def subjects(self, req: _Request, project: str) -> Response:
        self._need_project(project)
        return self._table(req, self.server.sandbox.store.subjects(project), "Subjects")

    def subject(self, req: _Request, project: str, subject: str) -> Response:
        store = self.server.sandbox.store
        self._need_project(project)
        if req.method == "PUT":
            if not _VALID_ID.match(subject):
                raise HttpError(417, "Invalid character in subject label.")
            subject_id, created = store.put_subject(project, subject)
            return Response(201 if created else 200, subject_id.encode())
        for row in store.subjects(project):
            if subject in (row.get("ID"), row.get("label")) or (
                row.get("label", "").lower() == subject.lower()
            ):
                item = {"meta": {"xsi:type": "xnat:subjectData"}, "data_fields": row}
                return Response(200, json.dumps({"items": [item]}).encode(), "application/json")
        raise HttpError(404, "Unable to identify subject")

    def experiments(self, req: _Request, project: str, subject: str | None = None) -> Response:
        self._need_project(project)
        rows = self.server.sandbox.store.experiments(project, subject)
        return self._table(req, rows, "Experiments")

    def experiment(self, req: _Request, project: str, subject: str, label: str) -> Response:
        store = self.server.sandbox.store
        self._need_project(project)
        if req.method == "PUT":
            if not _VALID_ID.match(label):
                raise HttpError(417, "Invalid character in experiment label.")
            xsi = req.param("xsiType") or req.param("xsi:type") or "xnat:mrSessionData"
            exp_id, created = store.put_experiment(project, subject, label, xsi)
            return Response(201 if created else 200, exp_id.encode())
        item = store.experiment_item(project, subject, label)
        if item is None:
            raise HttpError(404, "Unable to identify image session")
        body = item if "items" in item else {"items": [item]}
        return Response(200, json.dumps(body).encode(), "application/json")

    def project_experiment(self, req: _Request, project: str, label: str) -> Response:
        self._need_project(project)
        item = self.server.sandbox.store.experiment_item(project, None, label)
        if item is None:
            raise HttpError(404, "Unable to identify image session")
        return Response(200, json.dumps(item).encode(), "application/json")

    def scan(self, req: _Request, project: str, subject: str, label: str, scan: str) -> Response:
        item = self.server.sandbox.store.experiment_item(project, subject, label)
        if item is None:
            raise HttpError(404, "Unable to identify image session")
        for child in item["items"][0]["children"]:
            if child["field"] != "scans/scan":
                continue
            for scan_item in child["items"]:
                if scan_item["data_fields"]["ID"] == scan:
                    body = json.dumps({"items": [scan_item]}).encode()
                    return Response(200, body, "application/json")
        raise HttpError(404, "Unable to identify scan")

    def scan_resources(
        self, req: _Request, project: str, subject: str, label: str, scan: str
    ) -> Response:
        rows = self.server.sandbox.store.scan_resources(project, subject, label, scan)
        if rows is None:
            raise HttpError(404, "Unable to identify scan")
        return self._table(req, rows, "Resources")

    def subject_by_id(self, req: _Request, subject_id: str) -> Response:
        project = self.server.sandbox.store.subject_project(subject_id)
        if project is None:
            raise HttpError(404, "Unable to identify subject")
        return self.subject(req, project, subject_id)

    def by_experiment_id(self, req: _Request, experiment_id: str, *rest: str) -> Response:
        """``/data/experiments/{ID}[/...]``: the same answers as the project path."""
        ref = self.server.sandbox.store.experiment_ref(experiment_id)
        if ref is None:
            raise HttpError(404, f"Unable to find experiment {experiment_id}")
        parts = req.parts[3:]
        # Answer as the equivalent project/subject/experiment path does (same route table).
        project, subject_id, eid = ref
        alias = _Request(
            method=req.method,
            path=req.path,
            parts=["data", "projects", project, "subjects", subject_id, "experiments", eid, *parts],
            query=req.query,
            headers=req.headers,
            body=req.body,
            user=req.user,
            session=req.session,
        )
        route, args = _match(alias)
        return route(self, alias, *args)

    def scans(self, req: _Request, project: str, subject: str, label: str) -> Response:
        rows = self.server.sandbox.store.scans(project, subject, label)
        if rows is None:
            raise HttpError(404, "Unable to identify image session")
        return self._table(req, rows, "Scans")

    def scan_files(
        self, req: _Request, project: str, subject: str, label: str, scans: str
    ) -> Response:
        store = self.server.sandbox.store
        rows = store.scan_files(project, subject, label, scans)
        if rows is None:
            raise HttpError(404, "Unable to identify image session")
        return self._table(req, rows, "Files")

    def resource_files(
        self, req: _Request, project: str, subject: str, label: str, scan: str | None, resource: str
    ) -> Response:
        store = self.server.sandbox.store
        if req.method in ("PUT", "POST"):
            return self._put_resource(req, project, subject, label, scan, resource, None)
        rows = store.resource_files(project, subject, label, scan, resource)
        if rows is None:
            raise HttpError(404, "Unable to identify image session")
        return self._table(req, rows, "Files")

    def resource_file(
        self,
        req: _Request,
        project: str,
        subject: str,
        label: str,
        scan: str | None,
        resource: str,
        path: str,
    ) -> Response:
        store = self.server.sandbox.store
        if req.method == "DELETE":
            store.delete_file(project, subject, label, scan, path, resource=resource)
            return Response(200, b"")
        if req.method in ("GET", "HEAD"):
            found = store.resource_file_path(project, subject, label, scan, resource, path)
            if found is None or not found.is_file():
                if _true(req.param("accept-not-found")):
                    return Response(204, b"")
                raise HttpError(404, "Unable to find file.")
            return Response(200, b"", "application/octet-stream", file=found)
        return self._put_resource(req, project, subject, label, scan, resource, path)

    def session_resource_files(
        self, req: _Request, project: str, subject: str, label: str, resource: str
    ) -> Response:
        return self.resource_files(req, project, subject, label, None, resource)

    def session_resource_file(
        self, req: _Request, project: str, subject: str, label: str, resource: str, path: str
    ) -> Response:
        return self.resource_file(req, project, subject, label, None, resource, path)

    def _put_resource(
        self,
        req: _Request,
        project: str,
        subject: str,
        label: str,
        scan: str | None,
        resource: str,
        path: str | None,
    ) -> Response:
        store = self.server.sandbox.store
        overwrite = _true(req.param("overwrite"))
        extract = _true(req.param("extract"))
        duplicates: list[str] = []
        if req.media_type == "multipart/form-data":
            form = read_multipart(req.body, str(req.headers["Content-Type"]), self._spool_dir())
            try:
                if not form.files:
                    raise HttpError(400, "No files found in the multipart body.")
                for part in form.files:
                    name = path if (path and len(form.files) == 1) else part.filename
                    with part.path.open("rb") as fh:
                        duplicates += store.put_resource_file(
                            project, subject, label, scan, resource, name, fh,
                            overwrite=overwrite, extract=extract,
                        )  # fmt: skip
            finally:
                for part in form.files:
                    part.path.unlink(missing_ok=True)
        else:
            if req.body.length == 0 or path is None:
                raise HttpError(
                    400,
                    "You tried to PUT to this service, but didn't provide any data (found request "
                    "entity size of 0). Please check your request and try again.",
                )
            duplicates = store.put_resource_file(
                project, subject, label, scan, resource, path, cast(BinaryIO, req.body),
                overwrite=overwrite, extract=extract,
            )  # fmt: skip
        if duplicates:
            body = json.dumps({"duplicates": duplicates}).encode()
            return Response(200, body, "text/html")
        return Response(200, b"")

    # prearchive and commits (§4.2, §9)

    def prearchive(self, req: _Request, projects: str | None = None) -> Response:
        store = self.server.sandbox.store
        if projects is None:
            return self._table(req, store.prearchive_rows(None), "Prearchive")
        rows: list[dict[str, str]] = []
        for project in projects.split(","):
            if project != "Unassigned" and not store.project_exists(project):
                raise HttpError(
                    403,
                    f"The current user does not have access to the requested project: {project}",
                )
            rows.extend(store.prearchive_rows(project))
        return self._table(req, rows, "Prearchive")

    def prearchive_session(self, req: _Request, project: str, ts: str, folder: str) -> Response:
        store = self.server.sandbox.store
        if req.method == "DELETE":
            store.delete_prearchive(project, ts, folder)
            return Response(200, b"")
        if req.method == "POST" and req.param("action") != "commit":
            return self._prearchive_action(req, project, ts, folder)
        if req.method == "POST":
            auto: bool | None = None
            for name, values in req.query.items():
                if ("AA" in name or "auto-archive" in name) and values and _true(values[0]):
                    auto = True
            status, uri = store.commit_prearchive(
                project,
                ts,
                folder,
                overwrite=req.param("overwrite"),
                overwrite_files=_true(req.param("overwrite_files")),
                auto_archive=auto,
                dest=req.param("dest"),
            )
            return Response(status, (_data_uri(uri) + "\r\n").encode(), "text/uri-list")
        row = store.prearchive_session(project, ts, folder)
        if row is None:
            raise HttpError(404, f"Unable to find prearchive session {project}/{ts}/{folder}")
        return self._table(req, [row], "Prearchive session")

    def _prearchive_action(self, req: _Request, project: str, ts: str, folder: str) -> Response:
        """``action=build``, ``reset-status`` and ``move`` (§9); answers as XNAT does."""
        store = self.server.sandbox.store
        action = req.param("action")
        if action == "build":
            uri = store.build_prearchive(project, ts, folder)
            return Response(200, _data_uri(uri).encode(), "text/uri-list")
        if action == "reset-status":
            uri = store.reset_prearchive_status(project, ts, folder, tag=req.param("tag"))
            return Response(200, _data_uri(uri).encode(), "text/uri-list")
        if action == "move":
            moved = store.move_prearchive(project, ts, folder, req.param("newProject") or "")
            if moved is None:  # locked: XNAT sets no status and no body
                return Response(200, b"")
            return Response(301, _data_uri(moved).encode(), "text/uri-list")
        if action is None:
            message = f"No action parameter was specified for the request by user {req.user}"
        else:
            message = (
                f"User {req.user} requested an unsupported action on prearchive session: {action}"
            )
        raise HttpError(400, message)

    def prearchive_scans(self, req: _Request, project: str, ts: str, folder: str) -> Response:
        rows = self.server.sandbox.store.prearchive_scans(project, ts, folder)
        return self._table(req, rows, "Scans")

    def prearchive_scan_resources(
        self, req: _Request, project: str, ts: str, folder: str, scan: str
    ) -> Response:
        rows = self.server.sandbox.store.prearchive_scan_resources(project, ts, folder, scan)
        return self._table(req, rows, "Resources")

    def prearchive_scan_files(
        self, req: _Request, project: str, ts: str, folder: str, scan: str, resource: str
    ) -> Response:
        store = self.server.sandbox.store
        rows = store.prearchive_scan_files(project, ts, folder, scan, resource)
        # XNAT's URI column: the request's own path plus the file's path in the resource.
        base = req.path.rstrip("/")
        table = [{"Name": r["Name"], "Size": r["Size"], "URI": f"{base}/{r['path']}"} for r in rows]
        return self._table(req, table, "Files")

    def prearchive_scan_file(
        self,
        req: _Request,
        project: str,
        ts: str,
        folder: str,
        scan: str,
        resource: str,
        path: str,
    ) -> Response:
        store = self.server.sandbox.store
        found = store.prearchive_file_path(project, ts, folder, scan, resource, path)
        if found is None or not found.is_file():
            raise HttpError(400, f"Unable to access the file at: {path}")
        return Response(200, b"", "application/octet-stream", file=found)

    def archive_service(self, req: _Request) -> Response:
        store = self.server.sandbox.store
        sources = req.query.get("src") or []
        if not sources:
            raise HttpError(400, "Missing src parameter")
        uris = []
        for src in sources:
            clean = src[len("/data") :] if src.startswith("/data/") else src
            uris.append(
                store.archive_service(
                    clean,
                    dest=req.param("dest"),
                    overwrite=req.param("overwrite"),
                    overwrite_files=_true(req.param("overwrite_files")),
                )
            )
        lines = [_data_uri(u) for u in uris]
        if _true(req.param("redirect")):
            return Response(303, b"", "text/plain", {"Location": lines[0]})
        return Response(200, "".join(u + "\r\n" for u in lines).encode(), "text/uri-list")

    def direct_archive(self, req: _Request, project: str, uid: str, label: str) -> Response:
        store = self.server.sandbox.store
        if req.method == "POST":
            uri = store.direct_archive_trigger(project, uid, label)
            return Response(200, _data_uri(uri).encode())
        row = store.direct_archive_status(project, uid, label)
        if row is None:
            raise HttpError(404, f"No direct-archive session {project}/{uid}/{label}")
        return Response(200, json.dumps(row).encode(), "application/json")

    # the import service (§3)

    def import_service(self, req: _Request) -> Response:
        if req.method != "POST":
            raise HttpError(405, "Method Not Allowed", {"Allow": "POST"})
        return _ImportRequest(self, req).run()

    # helpers

    def _need_project(self, project: str) -> None:
        if not self.server.sandbox.store.project_exists(project):
            raise HttpError(404, "Unable to identify project")

    def _spool_dir(self) -> Path:
        return self.server.sandbox.spool_dir

    def _table(self, req: _Request, rows: list[dict[str, str]], title: str) -> Response:
        rows = [
            {k: _data_uri(v) if k == "URI" and isinstance(v, str) else v for k, v in row.items()}
            for row in rows
        ]
        fmt = (req.param("format") or "json").lower()
        if fmt == "csv":
            return Response(200, _csv(rows), "text/csv")
        return Response(200, result_set(rows, title), "application/json")


class _Reply(Exception):
    """Answer with this response right away (used by authentication)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _proxy_message(status: int) -> str:
    return {
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Temporarily Unavailable",
    }.get(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error")


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


# -- the import service -----------------------------------------------------------------------


class _ImportRequest:
    """One ``POST /data/services/import``: parameters, body form, entries, commit, answer."""

    def __init__(self, handler: _Handler, req: _Request) -> None:
        self.handler = handler
        self.req = req
        self.store = handler.server.sandbox.store
        self.spool = handler.server.sandbox.spool_dir
        self.params: dict[str, list[str]] = {k: list(v) for k, v in req.query.items()}
        self._cleanup: list[Path] = []

    def first(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[0] if values else None

    def run(self) -> Response:
        try:
            return self._run()
        finally:
            for path in self._cleanup:
                path.unlink(missing_ok=True)

    def _run(self) -> Response:
        req = self.req
        media = req.media_type
        handler_name = self.first("import-handler")
        if handler_name is None:
            dicom_types = ("application/dicom", "application/x-xmirc", "application/x-xmirc-dcm")
            handler_name = "gradual-DICOM" if media in dicom_types else "DICOM-zip"
        if handler_name not in _IMPORT_HANDLERS:
            raise HttpError(404, f"Unknown importer implementation specified: {handler_name}")
        if handler_name not in ("DICOM-zip", "gradual-DICOM"):
            raise HttpError(400, f"The sandbox does not implement the {handler_name} importer.")
        zip_handler = handler_name == "DICOM-zip"

        inbody = _true(self.first("inbody"))
        stream: IO[bytes]
        if media == "multipart/form-data":
            if inbody:
                raise HttpError(
                    406,
                    "In-body File posts must include the file directly as the body of the "
                    "message (not as part of multi-part form data).",
                )
            form = read_multipart(req.body, str(req.headers["Content-Type"]), self.spool)
            self._cleanup.extend(f.path for f in form.files)
            for key, values in form.fields.items():
                if key == "reference":
                    raise HttpError(400, "The 'reference' parameter is not allowed in a form.")
                self.params.setdefault(key, values)
            if not form.files:
                raise HttpError(400, "Unable to identify upload format.")
            if len(form.files) > 1:
                raise HttpError(400, "Importer is limited to one uploaded resource at a time.")
            name = form.files[0].filename
            stream = form.files[0].path.open("rb")
        elif inbody or media in _INBODY_NAMES:
            name = _INBODY_NAMES.get(media, "upload.unsupported")
            size = req.body.length if req.body.length is not None else -1
            if size < 1 and media != "application/zip":
                raise HttpError(
                    400,
                    "In-body File posts must include the file directly as the body of the "
                    f"message. In this case, the request entity size is {size} but the media "
                    "type is not application/zip (i.e. streaming compressed upload).",
                )
            stream = cast(IO[bytes], req.body)
        else:
            raise HttpError(400, "Unable to identify upload format.")

        with contextlib.closing(stream):
            if zip_handler:
                return self._dicom_zip(stream, name)
            return self._gradual(stream, name)

    def _import_params(self, zip_handler: bool, dest: dict[str, str]) -> ImportParams:
        def pick(lower: str, upper: str) -> str | None:
            if zip_handler and self.first(lower):
                return self.first(lower)
            return self.first(upper) or None

        auto: bool | None = None
        if _true(self.first("AA")) or _true(self.first("auto-archive")):
            auto = True
        if "auto_archive" in dest:
            auto = dest["auto_archive"] == "true"
        return ImportParams(
            project=dest.get("project") or pick("project", "PROJECT_ID"),
            subject=dest.get("subject") or pick("subject", "SUBJECT_ID"),
            session=dest.get("session") or pick("session", "EXPT_LABEL"),
            direct_archive=_true(self.first("Direct-Archive")),
            rename=_true(self.first("rename")),
            prevent_auto_commit=_true(self.first("prevent_auto_commit")),
            prevent_anon=_true(self.first("prevent_anon")),
            source=self.first("SOURCE"),
            auto_archive=auto,
            visit=self.first("VISIT"),
            subtype=self.first("SUBTYPE"),
            user=self.req.user or "admin",
        )

    def _dest(self) -> dict[str, str]:
        dest = self.first("dest")
        if not dest:
            return {}
        parts = [p for p in dest.split("/") if p]
        if parts[:1] in (["data"], ["REST"]):
            parts = parts[1:]
        out: dict[str, str] = {}
        if parts[:2] == ["archive", "projects"] and len(parts) in (3, 5, 7):
            out["auto_archive"] = "true"
            keys = {3: "project", 5: "subject", 7: "session"}
            names = {4: "subjects", 6: "experiments"}
            for i, part in enumerate(parts[2:], start=3):
                if i in names and parts[i - 1] != names[i]:
                    raise HttpError(400, "Parameter dest format error")
                if i in keys:
                    out[keys[i]] = part
            return out
        if parts[:2] == ["prearchive", "projects"] and len(parts) in (3, 4, 5):
            out["auto_archive"] = "false"
            out["project"] = parts[2]
            if len(parts) == 5:
                out["session"] = parts[4]
            return out
        raise HttpError(400, "Parameter dest format error")

    def _dicom_zip(self, stream: IO[bytes], name: str) -> Response:
        fmt = archive_format(name)
        if fmt not in ("ZIP", "TAR", "TGZ"):
            raise HttpError(400, f"Unsupported format {fmt}")
        dest = self._dest()
        action = self.first("action")
        commit = bool(dest) or action == "commit"
        ignore_text = self.first("Ignore-Unparsable")
        ignore = _true(ignore_text) if ignore_text is not None else action == "commit"
        params = self._import_params(True, dest)
        uris: dict[str, None] = {}
        last_error: ClientError | None = None
        body = self.req.body
        with self.store.begin_import(params) as batch:
            for entry in iter_archive(stream, fmt, self.spool):
                uri, error = self._ingest(batch, entry)
                if error is not None:
                    if not ignore:
                        raise error
                    last_error = error
                elif uri:
                    uris[uri] = None
            if body.dropped or body.lost:
                raise ConnectionLostError("body ended early")
        if not uris and last_error is not None:
            raise last_error
        result = list(uris)
        if commit and result:
            result = self.store.commit_import(
                result,
                overwrite=self.first("overwrite"),
                overwrite_files=_true(self.first("overwrite_files")),
                dest=self.first("dest"),
                auto_archive=bool(params.auto_archive),
            )
        return self._answer(result)

    def _gradual(self, stream: IO[bytes], name: str) -> Response:
        params = self._import_params(False, {})
        with self.store.begin_import(params) as batch:
            uri, error = self._ingest(batch, ArchiveEntry(name, stream))
        if error is not None:
            raise error
        return self._answer([uri] if uri else [])

    def _ingest(self, batch: Any, entry: ArchiveEntry) -> tuple[str | None, ClientError | None]:
        """Send one entry to the store; client errors come back as data, for Ignore-Unparsable."""
        body = self.req.body
        if entry.error is not None or entry.stream is None:
            return None, ClientError(f"unable to read DICOM object {entry.name}: {entry.error}")
        error: ClientError | None = None
        try:
            uri = batch.ingest(entry.stream, entry.name)
        except ClientError as exc:
            error, uri = exc, None
        except (ConnectionLostError, UploadError):
            raise
        except Exception as exc:
            if body.dropped or body.lost:
                raise ConnectionLostError("body ended early") from exc
            # §3.4 step 13: every per-file failure surfaces as a client error.
            log.debug("entry %s failed", entry.name, exc_info=True)
            error, uri = ClientError(f"unable to read DICOM object {entry.name}"), None
        if body.dropped or body.lost:
            raise ConnectionLostError("body ended early")
        return (str(uri) if uri else None), error

    def _answer(self, uris: list[str]) -> Response:
        lines = [_data_uri(u) for u in uris]
        accept = str(self.req.headers.get("Accept", ""))
        fmt = (self.first("format") or "").lower()
        wants_text = fmt == "txt" or (not fmt and accept.split(",", 1)[0].strip() == "text/plain")
        if wants_text and len(lines) == 1:
            return Response(200, lines[0].encode(), "text/plain")
        return Response(200, "".join(u + "\r\n" for u in lines).encode(), "text/uri-list")


# -- route table ------------------------------------------------------------------------------

_Route = Callable[..., Response]
_EXP = ("data", "projects", "{}", "subjects", "{}", "experiments", "{}")
_PREARC = ("data", "prearchive", "projects", "{}", "{}", "{}")

_ROUTES: list[tuple[frozenset[str], tuple[str, ...], _Route]] = [
    (frozenset({"GET", "POST", "DELETE"}), ("data", "JSESSION"), _Handler.jsession),
    (frozenset({"GET"}), ("data", "auth"), _Handler.data_auth),
    (frozenset({"GET", "PUT"}), ("sandbox", "faults"), _Handler.faults_route),
    (frozenset({"GET", "POST", "PUT", "DELETE"}), ("data", "services", "import"),
     _Handler.import_service),
    (frozenset({"POST"}), ("data", "services", "archive"), _Handler.archive_service),
    (frozenset({"POST"}), ("data", "services", "refresh", "catalog"), _Handler.refresh_catalog),
    (frozenset({"GET", "POST"}), ("data", "services", "tokens", "{}"), _Handler.tokens),
    (frozenset({"GET", "POST"}), ("data", "services", "tokens", "{}", "{}"), _Handler.tokens),
    (frozenset({"GET", "POST"}), ("data", "services", "tokens", "{}", "{}", "{}"),
     _Handler.tokens),
    (frozenset({"GET", "PUT", "DELETE"}), ("data", "config", "dicom", "{}"),
     _Handler.dicom_config),
    (frozenset({"GET"}), ("data", "projects"), _Handler.projects),
    (frozenset({"GET", "PUT"}), ("data", "projects", "{}"), _Handler.project),
    (frozenset({"GET"}), ("data", "projects", "{}", "prearchive_code"),
     _Handler.prearchive_code_get),
    (frozenset({"PUT", "POST"}), ("data", "projects", "{}", "prearchive_code", "{}"),
     _Handler.prearchive_code_put),
    (frozenset({"GET"}), ("data", "projects", "{}", "subjects"), _Handler.subjects),
    (frozenset({"GET", "PUT"}), ("data", "projects", "{}", "subjects", "{}"), _Handler.subject),
    (frozenset({"GET"}), ("data", "projects", "{}", "experiments"), _Handler.experiments),
    (frozenset({"GET"}), (*_EXP[:5], "experiments"), _Handler.experiments),
    (frozenset({"GET", "PUT"}), _EXP, _Handler.experiment),
    (frozenset({"GET"}), ("data", "projects", "{}", "experiments", "{}"),
     _Handler.project_experiment),
    (frozenset({"GET"}), ("data", "subjects", "{}"), _Handler.subject_by_id),
    (frozenset({"GET", "PUT", "POST", "DELETE"}), ("data", "experiments", "{}", "{*}"),
     _Handler.by_experiment_id),
    (frozenset({"GET"}), ("data", "experiments", "{}"), _Handler.by_experiment_id),
    (frozenset({"GET"}), (*_EXP, "scans"), _Handler.scans),
    (frozenset({"GET"}), (*_EXP, "scans", "{}"), _Handler.scan),
    (frozenset({"GET"}), (*_EXP, "scans", "{}", "resources"), _Handler.scan_resources),
    (frozenset({"GET"}), (*_EXP, "scans", "{}", "files"), _Handler.scan_files),
    (frozenset({"GET", "PUT", "POST"}), (*_EXP, "scans", "{}", "resources", "{}", "files"),
     _Handler.resource_files),
    (frozenset({"GET", "PUT", "POST", "DELETE"}),
     (*_EXP, "scans", "{}", "resources", "{}", "files", "{*}"), _Handler.resource_file),
    (frozenset({"GET", "PUT", "POST"}), (*_EXP, "resources", "{}", "files"),
     _Handler.session_resource_files),
    (frozenset({"GET", "PUT", "POST", "DELETE"}), (*_EXP, "resources", "{}", "files", "{*}"),
     _Handler.session_resource_file),
    (frozenset({"GET"}), ("data", "prearchive"), _Handler.prearchive),
    (frozenset({"GET"}), ("data", "prearchive", "projects", "{}"), _Handler.prearchive),
    (frozenset({"GET", "POST", "DELETE"}), _PREARC, _Handler.prearchive_session),
    (frozenset({"GET"}), (*_PREARC, "scans"), _Handler.prearchive_scans),
    (frozenset({"GET"}), (*_PREARC, "scans", "{}", "resources"),
     _Handler.prearchive_scan_resources),
    (frozenset({"GET"}), (*_PREARC, "scans", "{}", "resources", "{}", "files"),
     _Handler.prearchive_scan_files),
    (frozenset({"GET"}), (*_PREARC, "scans", "{}", "resources", "{}", "files", "{*}"),
     _Handler.prearchive_scan_file),
    (frozenset({"GET", "POST"}), ("xapi", "direct-archive", "{}", "{}", "{}"),
     _Handler.direct_archive),
]  # fmt: skip


def _match(req: _Request) -> tuple[_Route, list[Any]]:
    """Find the route for a request; 404 for an unknown path, 405 for a wrong method."""
    allowed: set[str] = set()
    for methods, pattern, route in _ROUTES:
        args = _match_pattern(pattern, req.parts)
        if args is None:
            continue
        if req.method in methods or (req.method == "HEAD" and "GET" in methods):
            return route, args
        allowed |= methods
    if allowed:
        raise HttpError(405, "Method Not Allowed", {"Allow": ", ".join(sorted(allowed))})
    raise HttpError(404, "The server has not found anything matching the request URI")


def _match_pattern(pattern: tuple[str, ...], parts: list[str]) -> list[Any] | None:
    args: list[Any] = []
    for i, token in enumerate(pattern):
        if token == "{*}":  # noqa: S105 - a path pattern, not a password
            if i >= len(parts):
                return None
            args.append("/".join(parts[i:]))
            return args
        if i >= len(parts):
            return None
        if token == "{}":  # noqa: S105
            args.append(parts[i])
        elif token != parts[i]:
            return None
    return args if len(parts) == len(pattern) else None


def iter_routes() -> Iterator[tuple[str, str]]:
    """(methods, path pattern) of every route; for documentation and tests."""
    for methods, pattern, _ in _ROUTES:
        yield ",".join(sorted(methods)), "/" + "/".join(pattern)
