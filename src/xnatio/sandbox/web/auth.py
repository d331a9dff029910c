"""Authentication over HTTP (docs/xnat-behaviour.md §2): Basic on every request, ``JSESSIONID``
sessions, the login service, alias tokens, and the CSRF rule for browser-like clients (§1.8).

The accounts, sessions and tokens themselves live in :class:`xnatio.sandbox.auth.AuthManager`.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs

from xnatio.sandbox.auth import Session, is_alias_format
from xnatio.sandbox.web.messages import (
    App,
    HttpError,
    Reply,
    Request,
    Response,
    cookie,
    json_response,
    tomcat_page,
)

__all__ = ["LOGIN_PAGE", "authenticate"]

LOGIN_PAGE = "/app/template/Login.vm"
_BROWSER_UA = re.compile(r"MSIE|Mozilla|AppleWebKit|Opera")
_OWN_TOKENS_ONLY = (
    "Non-admin users can only request operations on alias tokens for their own account"
)


def authenticate(app: App, req: Request) -> None:
    """Set ``req.user`` and ``req.session`` from the session cookie or Basic credentials.

    Raises
    ------
    Reply
        401 (or the lockout answer) with Tomcat's page for bad or missing credentials; 302 to
        the login page for a browser-like client without them.
    HttpError
        403 for a cookie-authenticated browser request without the CSRF token.
    """
    auth = app.auth
    session_id = cookie(req.headers.get("Cookie", ""), "JSESSIONID")
    if session_id:
        session = auth.session(session_id)
        if session is not None:
            req.user, req.session = session.user, session
            _csrf_check(req, session)
            _session_cookie(app, req, session, new=False)
            return
    header = str(req.headers.get("Authorization", ""))
    if header[:6].lower() == "basic ":
        result = auth.check_basic(header)
        if result.user is None:
            body = tomcat_page(result.status, result.message)
            raise Reply(Response(result.status, body, "text/html;charset=utf-8"))
        session = auth.new_session(result.user)
        req.user, req.session = result.user, session
        _session_cookie(app, req, session, new=True)
        return
    if _BROWSER_UA.search(str(req.headers.get("User-Agent", ""))):
        raise Reply(Response(302, b"", "text/html", {"Location": LOGIN_PAGE}))
    body = tomcat_page(401, "Unauthorized")
    raise Reply(
        Response(401, body, "text/html;charset=utf-8", {"WWW-Authenticate": 'Basic realm="XNAT"'})
    )


def _csrf_check(req: Request, session: Session) -> None:
    # §1.8: only cookie-authenticated, state-changing requests from browser-like agents.
    if req.method not in ("POST", "PUT", "DELETE"):
        return
    if not _BROWSER_UA.search(str(req.headers.get("User-Agent", ""))):
        return
    if req.param("XNAT_CSRF") != session.csrf:
        raise HttpError(403, "INVALID CSRF (XNAT_CSRF parameter missing or wrong)")


def _session_cookie(app: App, req: Request, session: Session, *, new: bool) -> None:
    if new:
        req.cookies.append(f"JSESSIONID={session.id}; Path=/; HttpOnly")
    timeout_ms = int(app.auth.session_timeout * 1000)
    req.cookies.append(f'SESSION_EXPIRATION_TIME="{int(time.time() * 1000)},{timeout_ms}"; Path=/')


# -- public routes ------------------------------------------------------------------------------


def login_page(app: App, req: Request) -> Response:
    """The page browser-like clients are sent to; a stub."""
    page = b"<html><head><title>XNAT</title></head><body>Login</body></html>"
    return Response(200, page, "text/html")


def services_auth(app: App, req: Request) -> Response:
    """``PUT|POST /data/services/auth`` with a ``username``/``password`` form: a new session."""
    if req.method not in ("PUT", "POST"):
        raise HttpError(405, "Method Not Allowed")
    form = parse_qs(req.body.read(1 << 16).decode("utf-8", "replace"))
    user = (form.get("username") or [""])[0]
    password = (form.get("password") or [""])[0]
    auth = app.auth
    if is_alias_format(user):
        result = auth.check_alias(user, password)
    else:
        result = auth.check_password(user, password)
    if result.user is None:
        page = tomcat_page(result.status, result.message)
        return Response(result.status, page, "text/html;charset=utf-8")
    session = auth.new_session(result.user)
    _session_cookie(app, req, session, new=True)
    return Response(200, session.id.encode())


# -- authenticated routes -----------------------------------------------------------------------


def jsession(app: App, req: Request) -> Response:
    """``/data/JSESSION``: the session ID (GET, POST; ``CSRF=true`` adds the token) or logout
    (DELETE)."""
    assert req.session is not None
    if req.method == "DELETE":
        app.auth.end_session(req.session.id)
        req.cookies[:] = [c for c in req.cookies if not c.startswith("JSESSIONID=")]
        return Response(200, b"")
    body = req.session.id
    if req.flag("CSRF"):
        body += f"; XNAT_CSRF={req.session.csrf}"
    return Response(200, body.encode())


def data_auth(app: App, req: Request) -> Response:
    """``GET /data/auth``: who is logged in."""
    return Response(200, f"User '{req.user}' is logged in".encode())


def tokens(app: App, req: Request, operation: str, *args: str) -> Response:
    """``/data/services/tokens/{issue[/user/U] | validate/A/S | invalidate/A}`` (§2.4)."""
    auth = app.auth
    if operation == "issue":
        user = req.user
        if len(args) == 2 and args[0] == "user":
            user = args[1]
            if req.user not in (user, app.config.user):
                raise HttpError(403, _OWN_TOKENS_ONLY)
            if not auth.has_user(user):
                raise HttpError(404, f"Can't find a user with the username {user}")
        elif args:
            raise HttpError(404, "The server has not found anything matching the request URI")
        return json_response(auth.issue_token(user).as_json())
    if operation == "validate" and len(args) == 2:
        owner = auth.validate_token(args[0], args[1])
        return json_response({"valid": owner} if owner is not None else {})
    if operation == "invalidate" and len(args) == 1:
        owner = auth.token_owner(args[0])
        if owner is None:
            raise HttpError(404, f"Can't find an alias token with the alias {args[0]}")
        if req.user not in (owner, app.config.user):
            raise HttpError(403, _OWN_TOKENS_ONLY)
        auth.invalidate_token(args[0])
        return json_response({"result": "OK"})
    raise HttpError(400, f"Unknown alias token operation: {operation}")
