"""Named server profiles in one TOML file: ``$XDG_CONFIG_HOME/xnatio/config.toml``.

The file names one or more XNAT servers, each with its account and its DICOM receiver::

    default_profile = "lab"

    [profiles.lab]
    server = "https://xnat.lab.example.org"
    username = "alice"
    verify_tls = "/etc/ssl/lab-ca.pem"
    dicom_port = 8104

    [profiles.sandbox]
    server = "http://127.0.0.1:8080"
    username = "admin"
    password = "admin"

``--profile NAME`` (or ``XNATIO_PROFILE``) chooses one; without it, ``default_profile`` applies
below the environment and ``.env`` (see :mod:`xnatio.config` for the whole precedence). Unknown
keys are errors, so a misspelt key cannot be silently ignored.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xnatio.errors import InputError

__all__ = ["PROFILE_KEYS", "Profile", "ProfileFile", "config_file_path", "read_profiles"]

# The config module's logger: xio shows its security warnings even with -q.
logger = logging.getLogger("xnatio.config")

# key -> the Python type(s) its value may have in the file
PROFILE_KEYS: dict[str, tuple[type, ...]] = {
    "server": (str,),
    "username": (str,),
    "password": (str,),
    "verify_tls": (bool, str),
    "dicom_host": (str,),
    "dicom_port": (int,),
    "dicom_called_aet": (str,),
    "dicom_calling_aet": (str,),
}


@dataclass(frozen=True)
class Profile:
    """One ``[profiles.NAME]`` table.

    Attributes
    ----------
    name
        The profile's name.
    server
        The XNAT URL (required in every profile).
    values
        The profile's other settings, by key of :data:`PROFILE_KEYS` (the password among them;
        excluded from ``repr``).
    """

    name: str
    server: str
    values: Mapping[str, Any] = field(repr=False, default_factory=dict)

    def get(self, key: str) -> Any:
        """A setting of this profile, or None."""
        return self.server if key == "server" else self.values.get(key)


@dataclass(frozen=True)
class ProfileFile:
    """What the config file holds.

    Attributes
    ----------
    path
        Where it was read from (it may not exist).
    profiles
        The profiles by name, in file order.
    default
        ``default_profile``, or None.
    """

    path: Path
    profiles: Mapping[str, Profile]
    default: str | None = None

    def pick(self, name: str) -> Profile:
        """The profile called ``name``; an :class:`InputError` names the ones there are."""
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(self.profiles) or "none"
            raise InputError(
                f"no profile {name!r} in {self.path} (profiles: {known}); see 'xio config list'"
            ) from None


def config_file_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/xnatio/config.toml``, or ``~/.config/xnatio/config.toml``.

    ``XNATIO_CONFIG`` names another file (tests, or one file shared by a team).
    """
    env = os.environ if environ is None else environ
    if env.get("XNATIO_CONFIG"):
        return Path(env["XNATIO_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "xnatio" / "config.toml"


def _check_value(where: str, key: str, value: Any) -> None:
    kinds = PROFILE_KEYS.get(key)
    if kinds is None:
        known = ", ".join(PROFILE_KEYS)
        raise InputError(f"{where}: unknown key {key!r} (known keys: {known})")
    # bool is an int in Python: a port of `true` is not a port.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join("true/false" if k is bool else k.__name__ for k in kinds)
        raise InputError(f"{where}: {key} must be {names}, not {value!r}")
    if key == "dicom_port" and isinstance(value, int) and not 0 < value < 65536:
        raise InputError(f"{where}: dicom_port {value} is not a port number (1-65535)")


def _profile(path: Path, name: str, table: Any) -> Profile:
    where = f"{path}: [profiles.{name}]"
    if not isinstance(table, dict):
        raise InputError(f"{where} is not a table")
    for key, value in table.items():
        _check_value(where, key, value)
    if not table.get("server"):
        raise InputError(f'{where} has no server; add server = "https://..."')
    values = {k: v for k, v in table.items() if k != "server"}
    return Profile(name=name, server=table["server"], values=values)


def _warn_if_readable(path: Path) -> None:
    if os.name != "posix":
        return
    if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning(
            "%s holds a password and is readable by other users; run: chmod 600 %s", path, path
        )


def read_profiles(path: Path | None = None) -> ProfileFile:
    """Read the config file; a missing file holds no profiles.

    Raises
    ------
    InputError
        The file cannot be read, is not TOML, or holds an unknown key, a value of the wrong
        type, a profile without ``server``, or a ``default_profile`` that names no profile.
    """
    path = config_file_path() if path is None else path
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return ProfileFile(path=path, profiles={})
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    import tomllib  # only when there is a file to read: most runs have none (start-up time)

    with f:
        try:
            data = tomllib.load(f)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"default_profile", "profiles"}
    if unknown:
        raise InputError(
            f"{path}: unknown top-level key {sorted(unknown)[0]!r} "
            "(known: default_profile, [profiles.NAME])"
        )
    tables = data.get("profiles", {})
    if not isinstance(tables, dict):
        raise InputError(f"{path}: 'profiles' must be tables: [profiles.NAME]")
    profiles = {name: _profile(path, name, table) for name, table in tables.items()}
    default = data.get("default_profile")
    if default is not None and (not isinstance(default, str) or default not in profiles):
        known = ", ".join(profiles) or "none"
        raise InputError(
            f"{path}: default_profile = {default!r} names no profile (profiles: {known})"
        )
    if any("password" in p.values for p in profiles.values()):
        _warn_if_readable(path)
    return ProfileFile(path=path, profiles=profiles, default=default)
