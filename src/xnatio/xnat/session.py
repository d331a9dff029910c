"""The XNAT REST session: one login shared by all workers, re-login on expiry, response checks.

Follows docs/xnat-behaviour.md §2 (authentication) and §11 (client recommendations): a login
counts only when the status is 200, the body is not HTML and it looks like a session ID; a 401 or an
HTML login page on a later request means the session expired, and all workers share one fresh
login. Wrong credentials stop everything at once, because XNAT locks accounts after repeated
failures.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import ssl
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from xnatio import __version__
from xnatio.budget import ConnectionBudget, slot
from xnatio.config import XnatConfig
from xnatio.errors import (
    AuthenticationError,
    ConnectionFailedError,
    InputError,
    ServerResponseError,
)

logger = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_H3 = re.compile(r"<h3>(.*?)</h3>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")

USER_AGENT = f"xnatio/{__version__}"

# Keep at most 128 KiB of a request body queued in the kernel unsent (Linux): bytes count as sent
# when they are on their way, so throughput measured while uploading (--compress auto,
# --upload-workers auto) and the progress bar follow the link, and a change of compression takes
# effect within a fraction of a second instead of after megabytes of buffer.
_SOCKET_OPTIONS = (
    [(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 128 << 10)]
    if hasattr(socket, "TCP_NOTSENT_LOWAT")
    else []
)


def text_rows(rows: Iterable[Mapping[str, object]]) -> list[dict[str, str]]:
    """Listing rows with every key and value as text (a JSON null as ``""``)."""
    return [{str(k): "" if v is None else str(v) for k, v in row.items()} for row in rows]


def redirect_note(response: httpx.Response) -> str:
    """`` (a redirect to LOCATION)`` for a 3xx answer, else ``""``."""
    location = response.headers.get("location")
    if response.is_redirect and location:
        return f" (a redirect to {location})"
    return ""


def proxy_for(server: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy the environment names for ``server``, as curl and httpx read it.

    ``HTTPS_PROXY`` (or ``https_proxy``) for an https server, ``HTTP_PROXY`` for http,
    ``ALL_PROXY`` for both; None when ``NO_PROXY`` lists the host (or ``*``). ``XnatSession``
    passes it to its transport itself, because httpx reads these variables only for clients
    built without a transport of their own.
    """
    env = os.environ if environ is None else environ
    proxies: dict[str, str] = {}
    for key, value in env.items():  # lower case wins, as in urllib
        name = key.lower()
        if value and name.endswith("_proxy") and (key.islower() or name[:-6] not in proxies):
            proxies[name[:-6]] = value
    parts = urlsplit(server)
    url = proxies.get(parts.scheme) or proxies.get("all")
    if not url:
        return None
    if _bypassed(parts.hostname or "", parts.port, proxies.get("no", "")):
        return None
    return url


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` names the host: ``*``, the host, a domain it is in (``.lab.org`` or
    ``lab.org``), optionally with ``:port``."""
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and (not entry_port.isdigit() or int(entry_port) != port):
            continue
        domain = name.lstrip(".")
        if domain and (host.lower() == domain or host.lower().endswith("." + domain)):
            return True
    return False


def looks_like_html(response: httpx.Response) -> bool:
    """True when a response is an HTML page (XNAT's login or change-password page)."""
    ctype = response.headers.get("content-type", "")
    if "html" in ctype:
        return True
    head = response.content[:200].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def error_message(response: httpx.Response) -> str:
    """The server's message for a failed request: XNAT's ``<h3>`` text, or the body's start."""
    text = response.text
    match = _H3.search(text)
    if match:
        return " ".join(_TAG.sub("", match.group(1)).split())
    plain = " ".join(_TAG.sub(" ", text).split())
    return plain[:200]


# What OpenSSL says when the other end answers TLS's hello in plain HTTP (an https:// URL with
# the server's http port).
_PLAIN_HTTP_SIGNS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")


def describe_connect_error(server: str, exc: Exception) -> str:
    """One line that says why a connection failed and what to do about it."""
    text = str(exc)
    if any(sign in text for sign in _PLAIN_HTTP_SIGNS):
        plain = "http://" + server.removeprefix("https://")
        return (
            f"cannot connect to {server}: the server answered in plain HTTP, not TLS; use "
            f"{plain} (or the server's HTTPS port)"
        )
    if server.startswith("http://") and isinstance(exc, httpx.RemoteProtocolError):
        secure = "https://" + server.removeprefix("http://")
        return (
            f"cannot connect to {server}: the answer is not HTTP ({text}); if this port "
            f"speaks TLS, use {secure}"
        )
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        reason = text.rsplit("]", maxsplit=1)[-1].strip() or text
        return (
            f"TLS certificate of {server} failed verification ({reason}); to trust a private CA "
            "set XNAT_VERIFY_TLS=/path/to/ca.pem, or use --insecure to skip verification "
            "(not recommended)"
        )
    detail = text or type(exc).__name__
    return f"cannot connect to {server}: {detail}; check the URL and that the server is up"


def _transport(
    server: str, verify: bool | ssl.SSLContext, limits: httpx.Limits
) -> httpx.HTTPTransport:
    """The client's transport: our socket options, and the proxy the environment names."""
    proxy = proxy_for(server)
    try:
        return httpx.HTTPTransport(
            verify=verify, limits=limits, socket_options=_SOCKET_OPTIONS, proxy=proxy
        )
    except ImportError:  # a socks5:// proxy without httpx's socks extra
        raise InputError(
            f"the proxy {_shown(proxy)} needs SOCKS support: pip install 'httpx[socks]', or use "
            "an HTTP proxy"
        ) from None
    except ValueError as exc:  # a scheme httpx does not know
        raise InputError(f"cannot use the proxy {_shown(proxy)}: {exc}") from None


def _shown(url: str | None) -> str:
    """A proxy URL as it may be printed: without the password it may carry."""
    parts = urlsplit(url or "")
    if parts.password is None:
        return url or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"{parts.username}:***@{host}{port}").geturl()


def _login_redirect(server: str, response: httpx.Response) -> str:
    """Why a login answered with a redirect, and the server URL to use instead."""
    location = response.headers.get("location", "")
    hint = "; give --server the address it redirects to"
    if location.endswith("/data/JSESSION"):
        hint = f"; use --server {location.removesuffix('/data/JSESSION')}"
    return (
        f"{server}/data/JSESSION answered {response.status_code}"
        f"{redirect_note(response) or ' (a redirect without a Location)'}{hint}"
    )


class XnatSession:
    """A thread-safe XNAT REST session.

    Parameters
    ----------
    config
        Server, credentials and TLS setting.
    timeout
        Read/write timeout in seconds for each request (connect timeout is capped at 30 s).
    max_connections
        Size of the connection pool; set it to at least the number of upload workers.
    budget
        A connection budget shared with other sessions and transports: every request holds one
        slot of it while it runs (see :mod:`xnatio.budget`). None: only the pool limits.
    max_keepalive
        Idle connections kept open for re-use (default: ``max_connections``). 0 closes each
        connection after its request, so that a budget shared with C-STORE associations counts
        every connection the server sees.

    Notes
    -----
    The password and session cookie never appear in ``repr``, logs or exception messages.
    """

    def __init__(
        self,
        config: XnatConfig,
        *,
        timeout: float = 10800.0,
        max_connections: int = 64,
        budget: ConnectionBudget | None = None,
        max_keepalive: int | None = None,
    ):
        self.config = config
        self.timeout = timeout
        self.budget = budget
        self._lock = threading.Lock()
        self._jsession: str | None = None
        self._generation = 0
        self._auth_failed: AuthenticationError | None = None
        verify: bool | ssl.SSLContext = True
        if isinstance(config.verify_tls, str):
            try:
                verify = ssl.create_default_context(cafile=config.verify_tls)
            except (OSError, ssl.SSLError) as exc:  # missing, a folder, or not PEM
                raise InputError(
                    f"cannot use the CA bundle {config.verify_tls!r} (XNAT_VERIFY_TLS): "
                    f"{exc.strerror or exc}; give the path of a PEM file"
                ) from None
        else:
            verify = config.verify_tls
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=(max_connections if max_keepalive is None else max_keepalive),
        )
        self._client = httpx.Client(
            base_url=config.server,
            timeout=httpx.Timeout(timeout, connect=min(30.0, timeout)),
            transport=_transport(config.server, verify, limits),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"XnatSession(server={self.config.server!r}, username={self.config.username!r})"

    def __enter__(self) -> XnatSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- login ---------------------------------------------------------------------------------

    def login(self) -> None:
        """Open a JSESSION with the configured credentials (exactly one attempt).

        Raises
        ------
        AuthenticationError
            The server refused the credentials, the password expired, or the answer was not a
            session ID. Later calls raise the same error without contacting the server again.
        ConnectionFailedError
            The server could not be reached (DNS, refused, TLS verification).
        """
        with self._lock:
            self._login_locked()

    def ensure_login(self) -> None:
        """Log in unless this session already holds a login (sessions shared by many uploads).

        Raises the same errors as :meth:`login`.
        """
        with self._lock:
            if self._jsession is None:
                self._login_locked()

    def _login_locked(self) -> None:
        if self._auth_failed is not None:
            raise self._auth_failed
        server = self.config.server
        try:
            with slot(self.budget):
                response = self._client.post(
                    "/data/JSESSION", auth=(self.config.username, self.config.password)
                )
        except httpx.TransportError as exc:
            raise ConnectionFailedError(describe_connect_error(server, exc)) from None
        if response.status_code in (401, 403) or (
            response.status_code == 200 and looks_like_html(response)
        ):
            if response.status_code == 200:
                why = "the server answered with an HTML page (the password may have expired)"
            elif response.status_code == 403:
                why = error_message(response) or "access forbidden"
            else:
                why = "wrong username or password"
            self._auth_failed = AuthenticationError(
                f"login to {server} as {self.config.username!r} failed: {why}; not retrying, "
                "since XNAT locks accounts after repeated failures"
            )
            raise self._auth_failed
        body = response.text.strip()
        if response.is_redirect:
            raise ConnectionFailedError(_login_redirect(server, response))
        if response.status_code != 200 or not _SESSION_ID.match(body):
            raise ConnectionFailedError(
                f"{server}/data/JSESSION answered {response.status_code} without a session ID; "
                "is this an XNAT server?"
            )
        self._jsession = body
        self._generation += 1
        self._client.cookies.clear()
        self._client.cookies.set("JSESSIONID", body)
        logger.debug("logged in to %s (session %d)", server, self._generation)

    def _relogin(self, seen_generation: int) -> None:
        # Workers that saw the same expired session share one fresh login.
        with self._lock:
            if self._generation != seen_generation:
                return
            logger.info("XNAT session expired; logging in again")
            self._login_locked()

    def logout(self) -> None:
        """Close the JSESSION on the server (errors are ignored)."""
        if self._jsession is None:
            return
        with contextlib.suppress(httpx.HTTPError), slot(self.budget):
            self._client.delete("/data/JSESSION", headers={"Connection": "close"})
        self._jsession = None
        self._client.cookies.clear()

    def close(self) -> None:
        """Log out and close the connection pool."""
        self.logout()
        self._client.close()

    # -- requests --------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        content: Iterable[bytes] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        relogin: bool = True,
    ) -> httpx.Response:
        """Send one request with the shared session; log in again once if it expired.

        A 401, or an HTML page where XNAT would not send one, counts as an expired session. The
        request is then repeated once with a fresh login (request bodies must be re-iterable).
        Transport errors propagate as ``httpx.TransportError`` for the caller's retry logic.
        """
        if self._jsession is None:
            self.login()
        generation = self._generation
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if content is not None:
            kwargs["content"] = content
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(30.0, timeout))
        with slot(self.budget):
            response = self._client.request(method, path, **kwargs)
        if relogin and self._expired(response):
            self._relogin(generation)
            with slot(self.budget):
                response = self._client.request(method, path, **kwargs)
            if self._expired(response):
                raise AuthenticationError(
                    f"{method} {path}: the server refused the session right after a fresh login"
                )
        return response

    @contextlib.contextmanager
    def stream(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """GET ``path`` with the shared session, leaving the body to the caller.

        The body is read with ``response.iter_bytes()``; leaving the block before the end of the
        body closes that connection instead of reading the rest (how a header is read without
        downloading the file). An expired session is renewed once, as in :meth:`request`. The
        request holds a slot of the connection budget until the block is left.
        """
        if self._jsession is None:
            self.login()
        for attempt in (1, 2):
            generation = self._generation
            with (
                slot(self.budget),
                self._client.stream("GET", path, params=params, headers=headers) as response,
            ):
                expired = response.status_code == 401 or (
                    response.status_code in (200, 302)
                    and "html" in response.headers.get("content-type", "")
                )
                if expired:
                    response.read()
                    if self._expired(response):
                        if attempt == 2:
                            raise AuthenticationError(
                                f"GET {path}: the server refused the session right after a "
                                "fresh login"
                            )
                        self._relogin(generation)
                        continue
                yield response
                return

    @staticmethod
    def _expired(response: httpx.Response) -> bool:
        if response.status_code == 401:
            return True
        # XNAT sends browsers (and clients that follow redirects) to its login page with a 200.
        return (
            response.status_code in (200, 302)
            and looks_like_html(response)
            and (b"login" in response.content[:4000].lower())
        )

    def check(
        self, response: httpx.Response, what: str, ok: Iterable[int] = (200,)
    ) -> httpx.Response:
        """Raise :class:`ServerResponseError` unless the status is one of ``ok``."""
        if response.status_code not in tuple(ok):
            detail = error_message(response) + redirect_note(response)
            raise ServerResponseError(
                f"{what}: {response.status_code} {detail}".rstrip(),
                status_code=response.status_code,
                url=str(response.request.url.copy_with(query=None)),
                body=response.text,
            )
        return response

    def get_json(self, path: str, what: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` with ``format=json`` and return the decoded body."""
        query = {"format": "json", **(params or {})}
        response = self.check(self.request("GET", path, params=query), what)
        try:
            return response.json()
        except ValueError:
            raise ServerResponseError(
                f"{what}: the server did not return JSON", status_code=response.status_code
            ) from None

    def result_rows(
        self, path: str, what: str, params: Mapping[str, str] | None = None
    ) -> list[dict[str, str]]:
        """GET an XNAT table listing and return ``ResultSet.Result`` (all values strings)."""
        data = self.get_json(path, what, params)
        try:
            rows = data["ResultSet"]["Result"]
        except (KeyError, TypeError):
            raise ServerResponseError(f"{what}: unexpected JSON shape") from None
        return text_rows(rows)
