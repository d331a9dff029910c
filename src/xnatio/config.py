"""Where the server address and credentials come from.

Precedence, highest first, setting by setting:

1. explicit values (command-line flags or function arguments);
2. the profile named by ``--profile NAME`` or ``XNATIO_PROFILE`` (:mod:`xnatio.profiles`);
3. the environment (``XNAT_SERVER``, ``XNAT_USERNAME``, ``XNAT_PASSWORD``, ``XNAT_VERIFY_TLS``);
4. a ``.env`` file in the working directory (``--env NAME`` reads ``.env.NAME``, ``--env PATH``
   that file);
5. the config file's ``default_profile``;
6. ``~/.netrc`` for the server's host (username and password only).

A profile's username, password and TLS setting are used only when the server in effect is the
profile's own server, so one server's password is never sent to another. A password is never
accepted as a command-line argument.
"""

from __future__ import annotations

import logging
import netrc
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack
from urllib.parse import urlsplit

from xnatio.errors import InputError
from xnatio.profiles import Profile, ProfileFile, config_file_path, read_profiles

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

    @classmethod
    def given(
        cls, server: str, username: str, password: str, verify_tls: bool | str = True
    ) -> XnatConfig:
        """From the keywords of the public functions, the URL checked and normalised."""
        return cls(normalise_server(server), username, password, verify_tls)

    def keywords(self) -> ServerKeywords:
        """The same four values as the keywords the public functions take (``**config``)."""
        return ServerKeywords(
            server=self.server,
            username=self.username,
            password=self.password,
            verify_tls=self.verify_tls,
        )


class ServerKeywords(TypedDict):
    """``server``, ``username``, ``password`` and ``verify_tls``, as the public functions take
    them (:meth:`XnatConfig.keywords`)."""

    server: str
    username: str
    password: str
    verify_tls: bool | str


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


def _netrc_login(server: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The login and password of ``~/.netrc`` (under ``environ``'s HOME) for the server's host."""
    host = urlsplit(server).hostname
    if not host:
        return None
    home = environ.get("HOME")
    path = Path(home) / ".netrc" if home else Path.home() / ".netrc"
    try:
        auth = netrc.netrc(str(path)).authenticators(host)
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


_ENV_KEYS = {
    "server": "XNAT_SERVER",
    "username": "XNAT_USERNAME",
    "password": "XNAT_PASSWORD",
    "verify_tls": "XNAT_VERIFY_TLS",
}
DICOM_ENV_KEYS = {
    "dicom_host": "XNAT_DICOM_HOST",
    "dicom_port": "XNAT_DICOM_PORT",
    "dicom_called_aet": "XNAT_DICOM_CALLED_AET",
    "dicom_calling_aet": "XNAT_DICOM_CALLING_AET",
}


def env_file_for(value: str | None, cwd: Path) -> Path:
    """The ``.env`` file that ``--env VALUE`` names.

    No value: ``.env`` in ``cwd`` (it need not exist). A value with a path separator, or one
    that starts with ``.`` or ``~``, is a path (xnatio 0.2's meaning). Otherwise ``.env.VALUE``
    when it exists, else a file called VALUE (``--env prod.env``); one of them must exist.
    """
    if value is None:
        return cwd / ".env"
    if not value.strip():
        raise InputError("--env is empty; give a NAME (.env.NAME) or the path of a file")
    if "/" in value or os.sep in value or value.startswith((".", "~")):
        path = cwd / Path(value).expanduser()
        if not path.is_file():
            raise InputError(f"--env {value}: {path} is not a file")
        return path
    named, plain = cwd / f".env.{value}", cwd / value
    for path in (named, plain):
        if path.is_file():
            return path
    raise InputError(f"--env {value}: neither {named} nor {plain} exists")


@dataclass(frozen=True)
class _Layer:
    """One place settings come from; a profile's values count only for its own server."""

    source: str
    values: Mapping[str, Any] = field(repr=False)
    profile: Profile | None = None


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _tls(value: Any) -> Any:
    return parse_bool_or_path(value) if isinstance(value, str) and value.strip() else value


@dataclass(frozen=True)
class Resolution:
    """The settings in effect, and where each came from (``xio config show``).

    Attributes
    ----------
    server, username, password, verify_tls
        The values in effect (None when nothing gives one; ``verify_tls`` defaults to True).
    sources
        Setting name -> where its value came from (``command line``, ``profile NAME``,
        ``environment``, a ``.env`` path, ``profile NAME (default)``, ``~/.netrc``).
    profile
        The profile whose server is in effect, if any.
    dicom
        ``dicom_host``, ``dicom_port``, ``dicom_called_aet``, ``dicom_calling_aet`` from the
        environment (``XNAT_DICOM_*``) or the profile in effect; absent keys are not set.
    """

    server: str | None
    username: str | None
    password: str | None = field(repr=False)
    verify_tls: bool | str
    sources: Mapping[str, str]
    profile: Profile | None = None
    dicom: Mapping[str, Any] = field(default_factory=dict)

    def config(self) -> XnatConfig | None:
        """The :class:`XnatConfig` in effect, or None when no server is configured.

        Raises
        ------
        InputError
            A server is configured but the username or password is missing, or not UTF-8.
        """
        srv, user, pwd = self.server, self.username, self.password
        if srv is None:
            return None
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
                raise InputError(
                    f"the {what} for {srv} is not valid UTF-8 text; check how it is set"
                )
        return XnatConfig(server=srv, username=user, password=pwd, verify_tls=self.verify_tls)


def _profile_layer(profile: Profile, source: str) -> _Layer:
    values = {**profile.values, "server": profile.server}
    values["verify_tls"] = _tls(profile.get("verify_tls"))
    return _Layer(source, values, profile)


def _layers(
    explicit: Mapping[str, Any],
    chosen: str | None,
    file: ProfileFile,
    env: Mapping[str, str],
    env_file: Path,
) -> list[_Layer]:
    """The sources of settings, highest precedence first."""
    dotenv = read_env_file(env_file)
    layers = [_Layer("command line", explicit)]
    if chosen:
        p = file.pick(chosen)
        layers.append(_profile_layer(p, f"profile {p.name}"))
    for source, raw in (("environment", env), (str(env_file), dotenv)):
        values = {key: raw.get(var) for key, var in _ENV_KEYS.items()}
        values["verify_tls"] = _tls(values["verify_tls"])
        layers.append(_Layer(source, values))
    if not chosen and file.default:
        p = file.profiles[file.default]
        layers.append(_profile_layer(p, f"profile {p.name} (default)"))
    return layers


def _serves(layer: _Layer, server: str) -> bool:
    """Whether ``layer``'s account and TLS settings may be used for ``server``."""
    if layer.profile is None:
        return True
    try:
        return normalise_server(layer.profile.server) == server
    except InputError as exc:
        raise InputError(f"profile {layer.profile.name}: {exc.message}") from None


def resolve_settings(
    *,
    server: str | None = None,
    username: str | None = None,
    password: str | None = None,
    verify_tls: bool | str | None = None,
    env_name: str | None = None,
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    profiles: ProfileFile | None = None,
) -> Resolution:
    """Combine flags, profiles, environment, ``.env`` and ``~/.netrc`` (see the module doc).

    Parameters
    ----------
    server, username, password, verify_tls
        Explicit values (flags); empty strings count as not given.
    env_name
        ``--env``: a NAME (``.env.NAME``) or a path (see :func:`env_file_for`).
    profile
        ``--profile``: a profile of the config file (``XNATIO_PROFILE`` when None).
    environ, cwd, profiles
        The environment, working directory and config file (defaults: the process's own, and
        :func:`xnatio.profiles.read_profiles`).

    Returns
    -------
    Resolution
        Values and their sources; :meth:`Resolution.config` checks them.
    """
    env = os.environ if environ is None else environ
    env_file = env_file_for(env_name, Path.cwd() if cwd is None else cwd)
    file = read_profiles(config_file_path(env)) if profiles is None else profiles
    chosen = profile or env.get("XNATIO_PROFILE") or None
    explicit = {"server": server, "username": username, "password": password}
    layers = _layers({**explicit, "verify_tls": verify_tls}, chosen, file, env, env_file)
    sources: dict[str, str] = {}

    def first(key: str, srv: str | None) -> Any:
        for layer in layers:
            value = layer.values.get(key)
            if _present(value) and (srv is None or _serves(layer, srv)):
                sources[key] = layer.source
                return value
        return None

    raw_server = first("server", None)
    if raw_server is None:
        return Resolution(None, None, None, True, sources, dicom=_dicom(env, None, sources))
    try:
        srv = normalise_server(raw_server)
    except InputError as exc:
        raise InputError(f"{sources['server']}: {exc.message}") from None
    user, pwd = first("username", srv), first("password", srv)
    if user is None or pwd is None:
        from_netrc = _netrc_login(srv, env)
        if from_netrc is not None:
            if user is None and from_netrc[0]:
                user, sources["username"] = from_netrc[0], "~/.netrc"
            if pwd is None and user == from_netrc[0]:
                pwd, sources["password"] = from_netrc[1], "~/.netrc"
    tls = first("verify_tls", srv)
    if tls is None:
        tls, sources["verify_tls"] = True, "default"
    in_effect = next((x.profile for x in layers if x.profile and _serves(x, srv)), None)
    dicom = _dicom(env, in_effect, sources)
    return Resolution(srv, user, pwd, tls, sources, in_effect, dicom)


def _dicom(
    env: Mapping[str, str], profile: Profile | None, sources: dict[str, str]
) -> dict[str, Any]:
    """The DICOM receiver's settings: ``XNAT_DICOM_*`` first, then the profile in effect."""
    values: dict[str, Any] = {}
    for key, var in DICOM_ENV_KEYS.items():
        if env.get(var):
            values[key], sources[key] = env[var], "environment"
        elif profile is not None and profile.get(key) is not None:
            values[key], sources[key] = profile.get(key), f"profile {profile.name}"
    return values


class Given(TypedDict, total=False):
    """What :func:`resolve_config` takes: the keywords of :func:`resolve_settings` but
    ``profiles`` (flags first, then the environment as ``environ`` and ``.env`` in ``cwd``)."""

    server: str | None
    username: str | None
    password: str | None
    verify_tls: bool | str | None
    env_name: str | None
    profile: str | None
    environ: Mapping[str, str] | None
    cwd: Path | None


def resolve_config(**given: Unpack[Given]) -> XnatConfig | None:
    """Combine flags, profiles, environment, ``.env`` and ``~/.netrc`` into an :class:`XnatConfig`.

    Returns ``None`` when no server is configured anywhere. Raises :class:`InputError` when a server
    is configured but the username or password is missing.
    """
    return resolve_settings(**given).config()


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
