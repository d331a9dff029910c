"""Requests, answers and XNAT's answer formats, shared by every handler.

A handler is a function ``handler(app, req, *path_parts) -> Response`` that raises
:class:`HttpError` for an error answer (docs/xnat-behaviour.md §1: paths, formats and errors).
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from xnatio.sandbox.bodies import BodyReader

if TYPE_CHECKING:
    from xnatio.sandbox.auth import AuthManager, Session
    from xnatio.sandbox.faults import Faults
    from xnatio.sandbox.settings import SandboxConfig
    from xnatio.sandbox.store import SandboxStore

__all__ = [
    "App",
    "HttpError",
    "Reply",
    "Request",
    "Response",
    "file_response",
    "requested_format",
    "result_set",
    "status_page",
    "tomcat_page",
]


class App(Protocol):
    """What handlers use of the running sandbox (:class:`xnatio.sandbox.Sandbox`)."""

    config: SandboxConfig
    auth: AuthManager
    faults: Faults
    spool_dir: Path

    @property
    def store(self) -> SandboxStore: ...


class HttpError(Exception):
    """An error answer: status plus a message shown in the Restlet-style ``<h3>`` page."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class Response:
    """An answer to send: status, body, content type and extra headers.

    ``file`` is sent after the headers instead of ``body``: from ``file_offset``, ``file_length``
    bytes (all that follow when ``None``); a ``file_temporary`` file is deleted once opened.
    """

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    file_offset: int = 0
    file_length: int | None = None
    file_temporary: bool = False


class Reply(Exception):
    """Answer with this response right away (used by authentication)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass
class Request:
    """One request as handlers see it.

    Attributes
    ----------
    method
        The HTTP method.
    path
        Normalised: ``/data/...`` (``/REST`` and ``/data/archive`` folded in), ``/xapi/...``,
        ``/sandbox/...``.
    parts
        The path's decoded segments.
    query
        Query parameters, every value kept.
    headers
        The request headers.
    body
        The body, read on demand.
    user, session
        Set by authentication.
    cookies
        ``Set-Cookie`` values to send with the answer (the connection's own list).
    """

    method: str
    path: str
    parts: list[str]
    query: dict[str, list[str]]
    headers: Any
    body: BodyReader
    user: str = ""
    session: Session | None = None
    cookies: list[str] = field(default_factory=list)

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or ``None``."""
        values = self.query.get(name)
        return values[0] if values else None

    def flag(self, name: str) -> bool:
        """Whether query parameter ``name`` is true, as Java reads a boolean (:func:`true`)."""
        return true(self.param(name))

    @property
    def media_type(self) -> str:
        """The Content-Type without parameters, lower case."""
        return str(self.headers.get("Content-Type", "")).split(";")[0].strip().lower()


def true(value: str | None) -> bool:
    """Java's Boolean.parseBoolean: only a case-insensitive "true" counts (§1.7)."""
    return value is not None and value.lower() == "true"


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
    out = io.StringIO()
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def requested_format(req: Request, offered: tuple[str, ...] = ("json", "csv")) -> str:
    """The ``format`` asked for (lower case; ``json`` when absent), if this route offers it.

    Raises
    ------
    HttpError
        406 for a format XNAT would produce here but the sandbox does not (xml, html, ...):
        never another format with a 200 (docs/xnat-behaviour.md §1.3).
    """
    fmt = (req.param("format") or "json").lower()
    if fmt not in offered:
        raise HttpError(
            406, f"The sandbox does not produce format={fmt} here; it offers {', '.join(offered)}."
        )
    return fmt


def table(req: Request, rows: list[dict[str, str]], title: str) -> Response:
    """A listing as XNAT sends it: JSON ResultSet, or CSV with ``format=csv``; URIs get
    ``/data`` in front."""
    rows = [
        {k: data_uri(v) if k == "URI" and isinstance(v, str) else v for k, v in row.items()}
        for row in rows
    ]
    if requested_format(req) == "csv":
        return Response(200, _csv(rows), "text/csv")
    return Response(200, result_set(rows, title), "application/json")


def file_response(
    req: Request, path: Path, content_type: str = "application/octet-stream"
) -> Response:
    """A stored file, or the single byte range ``Range: bytes=…`` asks for: 206 with
    ``Content-Range``, 416 when no byte of the file is in it (RFC 9110 §14; Tomcat answers so).

    A header that is not one well-formed range (several ranges, another unit) is ignored and the
    whole file sent, which RFC 9110 allows.
    """
    size = path.stat().st_size
    headers = {"Accept-Ranges": "bytes"}
    wanted = _byte_range(str(req.headers.get("Range", "")), size)
    if wanted is None:
        return Response(200, b"", content_type, headers, file=path)
    if wanted == (0, 0):
        headers["Content-Range"] = f"bytes */{size}"
        return Response(416, b"", content_type, headers)
    start, end = wanted
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return Response(
        206, b"", content_type, headers, file=path, file_offset=start, file_length=end - start
    )


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a single byte range, ``(0, 0)`` when unsatisfiable,
    ``None`` to send the whole file."""
    m = _RANGE.match(header) if header else None
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # bytes=-N: the last N bytes
        suffix = int(last)
        return (max(size - suffix, 0), size) if suffix > 0 and size > 0 else (0, 0)
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        return None  # syntactically invalid: ignored
    return (start, end) if start < size else (0, 0)


def json_response(body: object, status: int = 200) -> Response:
    """A JSON answer."""
    return Response(status, json.dumps(body).encode(), "application/json")


def items(req: Request, item: dict[str, Any]) -> Response:
    """XNAT's item JSON for one object (§1.5): ``{"items": [item]}``; JSON is the only format
    offered (406 otherwise, :func:`requested_format`)."""
    requested_format(req, ("json",))
    return json_response({"items": [item]})


def data_uri(uri: str) -> str:
    """Put ``/data`` in front of a store URI (§3.6), except for ``/xapi/`` and full ones."""
    if uri.startswith(("/data/", "/xapi/", "/REST/")) or not uri.startswith("/"):
        return uri
    return "/data" + uri


def uri_list(uris: list[str], status: int = 200) -> Response:
    """A ``text/uri-list`` answer: each store URI (as :func:`data_uri`) on a CRLF line."""
    body = "".join(data_uri(u) + "\r\n" for u in uris)
    return Response(status, body.encode(), "text/uri-list")


def cookie(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, or ``None``."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None
