"""Users, HTTP sessions and lockout for the sandbox, as XNAT's security filters behave.

See docs/xnat-behaviour.md §2: HTTP Basic on every request, ``JSESSIONID`` sessions with an idle
timeout, account lockout after repeated failures. Passwords live only in this module's private
state and never appear in a repr or a log record.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["AliasToken", "AuthManager", "BasicResult", "Session"]

LOGIN_FAILED = (
    "Your login attempt failed because the username and password combination you provided was "
    "invalid or your user already has the maximum number of user sessions open. After {n} failed "
    "login attempts, your user account will be locked."
)
ALIAS_INVALID = (
    "Your security token has expired or is invalid. Please try again after updating your session."
)
_ALIAS_FORMAT = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
)
_SECRET_CHARS = string.ascii_letters + string.digits
TOKEN_INVALID = (
    "The authentication token is invalid. You must provide a username and password separated by "  # noqa: S105
    "the ':' character."
)


@dataclass
class Session:
    """One HTTP session: 32 upper-case hex characters, its user, and when it was last used."""

    id: str
    user: str
    csrf: str
    last_access: float


@dataclass(frozen=True)
class BasicResult:
    """Outcome of checking an ``Authorization: Basic`` header.

    ``user`` is set on success; otherwise ``message`` says why it failed and ``status`` is the
    HTTP status to answer with (401, or 403 for an unknown or expired alias token).
    """

    user: str | None
    message: str = ""
    status: int = 401


@dataclass
class AliasToken:
    """An alias token (§2.4): a UUID alias and a secret that stand in for a user's password.

    ``expires`` is on the manager's (monotonic) clock; ``expires_ms`` and ``created_ms`` are
    wall-clock epoch milliseconds, as XNAT reports them.
    """

    id: int
    alias: str
    secret: str = field(repr=False)
    user: str
    created_ms: int
    expires_ms: int
    expires: float
    single_use: bool = False

    def as_json(self) -> dict[str, object]:
        """The token as ``/data/services/tokens/issue`` returns it."""
        return {
            "alias": self.alias,
            "secret": self.secret,
            "xdatUserId": self.user,
            "singleUse": self.single_use,
            "estimatedExpirationTime": self.expires_ms,
            "validIPAddresses": [],
            "id": self.id,
            "enabled": True,
            "created": self.created_ms,
            "timestamp": self.created_ms,
            "disabled": 0,
        }


def is_alias_format(name: str) -> bool:
    """Whether a user name looks like an alias token's alias (a UUID), as XNAT checks."""
    return bool(_ALIAS_FORMAT.match(name))


class AuthManager:
    """Checks credentials, keeps sessions and counts failures; thread-safe.

    Parameters
    ----------
    users
        User name to password.
    session_timeout
        Seconds of inactivity after which a session ends (XNAT: 900).
    max_failed_logins
        Failures in a row that lock an account (XNAT: 20); 0 disables lockout.
    lockout_seconds
        How long a locked account stays locked (XNAT: one hour).
    alias_token_timeout
        Seconds an alias token stays valid (XNAT's ``aliasTokenTimeout``: two days).
    clock
        Monotonic time source, replaceable in tests.
    """

    def __init__(
        self,
        users: dict[str, str],
        *,
        session_timeout: float = 900.0,
        max_failed_logins: int = 20,
        lockout_seconds: float = 3600.0,
        alias_token_timeout: float = 172800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._passwords = dict(users)
        self.session_timeout = session_timeout
        self.max_failed_logins = max_failed_logins
        self.lockout_seconds = lockout_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}
        self._since_sweep = 0
        self.alias_token_timeout = alias_token_timeout
        self._tokens: dict[str, AliasToken] = {}
        self._token_ids = 0

    def __repr__(self) -> str:
        return f"AuthManager(users={sorted(self._passwords)!r}, sessions={len(self._sessions)})"

    @property
    def login_failed_message(self) -> str:
        """XNAT's default text for a failed login."""
        return LOGIN_FAILED.format(n=self.max_failed_logins)

    def add_user(self, name: str, password: str) -> None:
        """Create or replace a user."""
        with self._lock:
            self._passwords[name] = password

    def check_basic(self, header: str) -> BasicResult:
        """Check the value of an ``Authorization`` header that starts with ``Basic``."""
        try:
            decoded = base64.b64decode(header.split(None, 1)[1].strip(), validate=True)
            text = decoded.decode("utf-8")
        except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
            return BasicResult(None, TOKEN_INVALID)
        parts = text.split(":")
        # XNAT refuses a value that does not split into exactly two parts (a ':' in the password).
        if len(parts) != 2:
            return BasicResult(None, TOKEN_INVALID)
        if is_alias_format(parts[0]):
            return self.check_alias(parts[0], parts[1])
        return self.check_password(parts[0], parts[1])

    def check_password(self, user: str, password: str) -> BasicResult:
        """Check a user name and password, counting failures and honouring the lockout."""
        if "/" in user:  # "provider/username" selects a provider; only the local one exists
            user = user.split("/", 1)[1]
        now = self._clock()
        with self._lock:
            locked_until = self._locked_until.get(user)
            if locked_until is not None:
                if now < locked_until:
                    return BasicResult(None, self.login_failed_message)
                del self._locked_until[user]
                self._failures.pop(user, None)
            expected = self._passwords.get(user)
            if expected is not None and hmac.compare_digest(
                expected.encode("utf-8"), password.encode("utf-8")
            ):
                self._failures.pop(user, None)
                return BasicResult(user)
            failures = self._failures.get(user, 0) + 1
            self._failures[user] = failures
            if self.max_failed_logins > 0 and failures >= self.max_failed_logins:
                self._locked_until[user] = now + self.lockout_seconds
            return BasicResult(None, self.login_failed_message)

    # -- alias tokens (§2.4) ---------------------------------------------------------------------

    def has_user(self, name: str) -> bool:
        """Whether an account with this name exists."""
        with self._lock:
            return name in self._passwords

    def issue_token(self, user: str, *, single_use: bool = False) -> AliasToken:
        """A new alias token for ``user``, valid for ``alias_token_timeout`` seconds."""
        now_ms = int(time.time() * 1000)
        with self._lock:
            self._token_ids += 1
            token = AliasToken(
                id=self._token_ids,
                alias=str(uuid.uuid4()),
                secret="".join(secrets.choice(_SECRET_CHARS) for _ in range(64)),
                user=user,
                created_ms=now_ms,
                expires_ms=now_ms + int(self.alias_token_timeout * 1000),
                expires=self._clock() + self.alias_token_timeout,
                single_use=single_use,
            )
            self._tokens[token.alias] = token
            return token

    def _live_token(self, alias: str) -> AliasToken | None:
        token = self._tokens.get(alias)
        if token is not None and self._clock() >= token.expires:
            del self._tokens[alias]  # XNAT sweeps expired tokens; here on first sight
            return None
        return token

    def validate_token(self, alias: str, secret: str) -> str | None:
        """The user of a live token with this alias and secret, or ``None``."""
        with self._lock:
            token = self._live_token(alias)
            if token is None or not hmac.compare_digest(token.secret, secret):
                return None
            return token.user

    def token_owner(self, alias: str) -> str | None:
        """The user of a live token with this alias, or ``None``."""
        with self._lock:
            token = self._live_token(alias)
            return None if token is None else token.user

    def invalidate_token(self, alias: str) -> bool:
        """End a token; False if no live token has this alias."""
        with self._lock:
            return self._tokens.pop(alias, None) is not None

    def check_alias(self, alias: str, secret: str) -> BasicResult:
        """Basic credentials made of an alias and its secret.

        An unknown or expired alias gives 403 with XNAT's "security token" message; a wrong
        secret is an ordinary failed login (401). A single-use token ends once used.
        """
        with self._lock:
            token = self._live_token(alias)
            if token is None:
                return BasicResult(None, ALIAS_INVALID, 403)
            if not hmac.compare_digest(token.secret, secret):
                return BasicResult(None, self.login_failed_message)
            if token.single_use:
                del self._tokens[alias]
            return BasicResult(token.user)

    def is_locked(self, user: str) -> bool:
        """Whether ``user`` is locked out right now."""
        with self._lock:
            until = self._locked_until.get(user)
            return until is not None and self._clock() < until

    def new_session(self, user: str) -> Session:
        """Start a session for ``user``."""
        now = self._clock()
        session = Session(secrets.token_hex(16).upper(), user, secrets.token_hex(16), now)
        with self._lock:
            self._sessions[session.id] = session
            self._since_sweep += 1
            if self._since_sweep >= 1000:  # every Basic request makes one; forget dead ones
                self._since_sweep = 0
                self._sweep(now)
        return session

    def session(self, session_id: str) -> Session | None:
        """The live session with this ID, touched as used now; None if unknown or expired."""
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_access >= self.session_timeout:
                del self._sessions[session_id]
                return None
            session.last_access = now
            return session

    def end_session(self, session_id: str) -> bool:
        """End one session; False if it did not exist."""
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def expire_all(self) -> None:
        """End every session now."""
        with self._lock:
            self._sessions.clear()

    def session_count(self) -> int:
        """Number of sessions not yet swept (live or expired)."""
        with self._lock:
            return len(self._sessions)

    def _sweep(self, now: float) -> None:
        dead = [k for k, s in self._sessions.items() if now - s.last_access >= self.session_timeout]
        for key in dead:
            del self._sessions[key]
