"""A misbehaving XNAT for verification tests: a real HTTP proxy in front of a sandbox.

It forwards every request to the sandbox and can, per test:

- answer chosen paths with a status of its own (a server that does not offer a listing route);
- rewrite the rows of file listings (a ``Size`` or ``digest`` that does not match the file);
- honour HTTP ``Range`` on file downloads (the sandbox sends whole files), answering 206;

and it records every request with the status and the number of body bytes it sent back.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

Rows = list[dict[str, Any]]

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Seen:
    method: str
    path: str
    status: int
    sent: int


@dataclass
class Faults:
    """What the proxy does wrong; every field may be changed while it runs."""

    status_for: Callable[[str], int | None] = lambda path: None
    rewrite_rows: Callable[[str, Rows], Rows] | None = None
    honour_range: bool = False
    seen: list[Seen] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def _reply(self, status: int, headers: dict[str, str], body: Iterator[bytes] | bytes) -> int:
        if status in (204, 304):  # answers without a body (RFC 9110 §15.3.5, §15.4.5)
            body = b""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return len(body)
        self.end_headers()
        sent = 0
        try:
            for chunk in body:
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            self.close_connection = True
        return sent

    def _body(self) -> bytes:
        """The request body, with a Content-Length or chunked (xio's compressed uploads)."""
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""
        parts = []
        while size := int(self.rfile.readline().split(b";", 1)[0], 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after the chunk
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)

    def _forward(self) -> None:
        faults = self.server.faults
        path = self.path.split("?", 1)[0]
        forced = faults.status_for(path)
        if forced is not None:
            sent = self._reply(forced, {"Content-Type": "text/plain"}, b"not offered here")
            faults.seen.append(Seen(self.command, path, forced, sent))
            return
        body = self._body()
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in _HOP | {"host", "range"}
        }
        client = self.server.client
        request = client.build_request(self.command, self.path, headers=headers, content=body)
        response = client.send(request, stream=True)
        try:
            out = {k: v for k, v in response.headers.items() if k.lower() not in _HOP}
            status = response.status_code
            if "json" in response.headers.get("content-type", "") and faults.rewrite_rows:
                data = json.loads(response.read())
                rows = data.get("ResultSet", {}).get("Result")
                if isinstance(rows, list):
                    data["ResultSet"]["Result"] = faults.rewrite_rows(path, rows)
                sent = self._reply(status, out, json.dumps(data).encode())
            elif self.headers.get("Range") and faults.honour_range and status == 200:
                whole = response.read()
                m = _RANGE.fullmatch(self.headers["Range"].strip())
                assert m is not None
                first = int(m.group(1))
                last = min(int(m.group(2)) if m.group(2) else len(whole) - 1, len(whole) - 1)
                out["Content-Range"] = f"bytes {first}-{last}/{len(whole)}"
                status = 206
                sent = self._reply(status, out, whole[first : last + 1])
            else:
                out["Content-Length"] = response.headers.get("content-length", "0")
                self.send_response(status)
                for k, v in out.items():
                    self.send_header(k, v)
                self.end_headers()
                sent = 0
                try:
                    for chunk in response.iter_raw(65536):
                        self.wfile.write(chunk)
                        sent += len(chunk)
                except OSError:
                    self.close_connection = True
        finally:
            response.close()
        faults.seen.append(Seen(self.command, path, status, sent))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, faults: Faults) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.faults = faults
        # No cookie jar of its own: each client's Cookie header is forwarded as it came.
        jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self.client = httpx.Client(
            base_url=upstream, timeout=60, follow_redirects=False, cookies=jar
        )


class MisbehavingXnat:
    """``with MisbehavingXnat(sandbox.url) as bad: ... bad.url ... bad.faults``."""

    def __init__(self, upstream: str) -> None:
        self.faults = Faults()
        self._server = _Server(upstream, self.faults)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> MisbehavingXnat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.client.close()
        self._thread.join(timeout=10)

    def requests(self, method: str = "GET") -> list[Seen]:
        return [s for s in self.faults.seen if s.method == method]
