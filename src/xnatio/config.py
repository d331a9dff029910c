"""Where the server address and credentials come from.

Precedence, highest first: explicit values (command-line flags or function arguments), the
environment (``XNAT_SERVER``, ``XNAT_USERNAME``, ``XNAT_PASSWORD``, ``XNAT_VERIFY_TLS``), a ``.env``
file in the working directory (``.env.NAME`` with ``--env NAME``), then ``~/.netrc`` for the
server's host. A password is never accepted as a command-line argument.
"""

from __future__ import annotations

import logging
import netrc
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from xnatio.errors import InputError

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class XnatConfig:
    """Server address, credentials and TLS setting for one XNAT server.

    The password is excluded from ``repr`` so it cannot leak through logs or tracebacks.

    Attributes
    ----------
    server
        Base URL, for example ``https://xnat.example.org`` (no trailing slash).
    username, password
        Credentials (an alias token's alias and secret work too).
    verify_tls
        ``True`` to verify certificates with the system store, ``False`` to skip verification, or
        the path of a CA bundle to trust.
    """

    server: str
    username: str
    password: str = field(repr=False)
    verify_tls: bool | str = True


def parse_bool_or_path(value: str) -> bool | str:
    """Read ``XNAT_VERIFY_TLS``: a boolean word, or the path of a CA bundle."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return value.strip()


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file of ``KEY=VALUE`` lines (``export`` prefix and quotes allowed).

    Warns when the file holds a password and is readable by other users.
    """
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"cannot read {path}: it is not UTF-8 text") from None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    if "XNAT_PASSWORD" in values and os.name == "posix":
        mode = path.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            logger.warning(
                "%s holds a password and is readable by other users; run: chmod 600 %s", path, path
            )
    return values


def _netrc_login(server: str) -> tuple[str, str] | None:
    host = urlsplit(server).hostname
    if not host:
        return None
    try:
        auth = netrc.netrc().authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    if auth is None:
        return None
    login, _, password = auth
    return (login or "", password or "")


def normalise_server(server: str) -> str:
    """Return ``server`` without a trailing slash, checking that it is an http(s) URL."""
    url = server.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:  # "http://[::1" (unclosed IPv6 address), "http://host:99999"
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(
            f"server URL {server!r} is not valid; give it as https://host[:port] (or http://)"
        )
    if parts.username or parts.password:
        raise InputError("put credentials in XNAT_USERNAME/XNAT_PASSWORD, not in the server URL")
    return url


def resolve_config(
    *,
    server: str | None = None,
    username: str | None = None,
    password: str | None = None,
    verify_tls: bool | str | None = None,
    env_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> XnatConfig | None:
    """Combine flags, environment, ``.env`` and ``~/.netrc`` into an :class:`XnatConfig`.

    Returns ``None`` when no server is configured anywhere. Raises :class:`InputError` when a server
    is configured but the username or password is missing.
    """
    env = os.environ if environ is None else environ
    base = Path.cwd() if cwd is None else cwd
    env_file = base / (f".env.{env_name}" if env_name else ".env")
    if env_name and not env_file.exists():
        raise InputError(f"--env {env_name}: {env_file} does not exist")
    dotenv = read_env_file(env_file)

    def pick(explicit: str | None, key: str) -> str | None:
        if explicit:
            return explicit
        return env.get(key) or dotenv.get(key) or None

    srv = pick(server, "XNAT_SERVER")
    if srv is None:
        return None
    srv = normalise_server(srv)
    user = pick(username, "XNAT_USERNAME")
    pwd = password or env.get("XNAT_PASSWORD") or dotenv.get("XNAT_PASSWORD")
    if user is None or pwd is None:
        from_netrc = _netrc_login(srv)
        if from_netrc is not None:
            user = user or from_netrc[0]
            if pwd is None and (user == from_netrc[0]):
                pwd = from_netrc[1]
    tls: bool | str = True
    if verify_tls is not None:
        tls = verify_tls
    else:
        raw_tls = env.get("XNAT_VERIFY_TLS") or dotenv.get("XNAT_VERIFY_TLS")
        if raw_tls:
            tls = parse_bool_or_path(raw_tls)
    if not user:
        raise InputError(f"no username for {srv}: pass --user or set XNAT_USERNAME")
    if pwd is None:
        raise InputError(
            f"no password for {user}@{srv}: set XNAT_PASSWORD, use --password-stdin, "
            "or add the host to ~/.netrc"
        )
    # Bytes that are not UTF-8 (from the environment or standard input) cannot be sent.
    for what, value in (("username", user), ("password", pwd)):
        if not _is_utf8(value):
            raise InputError(f"the {what} for {srv} is not valid UTF-8 text; check how it is set")
    return XnatConfig(server=srv, username=user, password=pwd, verify_tls=tls)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
