"""``xio config``: the profiles of the config file, and the settings in effect with their sources.

Passwords are never printed: a password shows as ``set`` or ``not set``, with where it comes from.
"""

from __future__ import annotations

import json
from typing import Any

import click

from xnatio.cli.app import HELP_SETTINGS, configure_logging
from xnatio.cli.options import ServerOptions, server_options
from xnatio.config import DICOM_ENV_KEYS, Resolution
from xnatio.profiles import PROFILE_KEYS, Profile, config_file_path, read_profiles

__all__ = ["command"]

_JSON = click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
_SECRET = "password"  # noqa: S105 - the name of a setting, not a password


def _shown(key: str, value: Any) -> Any:
    """A setting as it may be printed: never a password."""
    if key == _SECRET:
        return "set" if value else "not set"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _profile_dict(profile: Profile) -> dict[str, Any]:
    return {key: _shown(key, profile.get(key)) for key in PROFILE_KEYS if profile.get(key)}


@click.group(context_settings=HELP_SETTINGS, invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """Show the profiles of the config file and the settings in effect (never a password).

    Profiles live in $XDG_CONFIG_HOME/xnatio/config.toml (~/.config/xnatio/config.toml);
    without a sub-command, 'xio config' lists them.
    """
    configure_logging(0, quiet=False)  # the warning about a password file others can read
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_profiles)


@command.command("list", context_settings=HELP_SETTINGS)
@_JSON
def list_profiles(as_json: bool = False) -> None:
    """List the profiles: name, server, username, whether a password is set."""
    file = read_profiles()
    if as_json:
        data = {
            "path": str(file.path),
            "exists": file.path.exists(),
            "default_profile": file.default,
            "profiles": {name: _profile_dict(p) for name, p in file.profiles.items()},
        }
        click.echo(json.dumps(data, indent=2))
        return
    if not file.profiles:
        state = "holds no profiles" if file.path.exists() else "does not exist"
        click.echo(f"{file.path} {state}; see 'xio config -h' and docs/configuration.md")
        return
    click.echo(f"profiles in {file.path} (* = default_profile):")
    rows = [
        (
            "*" if name == file.default else " ",
            name,
            p.server,
            str(p.get("username") or "-"),
            "password " + _shown(_SECRET, p.get(_SECRET)),
        )
        for name, p in file.profiles.items()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _effective(settings: Resolution) -> dict[str, tuple[Any, str]]:
    """Setting -> (value as shown, source), for every setting that has a value."""
    values: dict[str, Any] = {
        "server": settings.server,
        "username": settings.username,
        _SECRET: settings.password,
        "verify_tls": settings.verify_tls,
        **settings.dicom,
    }
    return {
        key: (_shown(key, value), settings.sources.get(key, ""))
        for key, value in values.items()
        if value is not None or (key == _SECRET and settings.server is not None)
    }


@command.command("show", context_settings=HELP_SETTINGS)
@click.argument("name", required=False)
@server_options
@_JSON
def show(name: str | None, creds: ServerOptions, as_json: bool) -> None:
    """Show profile NAME, or without NAME the settings in effect and where each comes from.

    The settings in effect follow the same precedence as every command: flags, --profile (or
    XNATIO_PROFILE), environment, .env, default_profile, ~/.netrc. Pass the same --server,
    --profile or --env options as the command you are checking.
    """
    if name is not None:
        profile = read_profiles().pick(name)
        data = _profile_dict(profile)
        if as_json:
            click.echo(json.dumps({"profile": name, **data}, indent=2))
            return
        click.echo(f"profile {name}:")
        for key, value in data.items():
            click.echo(f"  {key} = {value}")
        return
    settings = creds.settings()
    shown = _effective(settings)
    if as_json:
        data = {key: {"value": v, "source": src} for key, (v, src) in shown.items()}
        click.echo(json.dumps({"profile": _profile_name(settings), **data}, indent=2))
        return
    if settings.server is None:
        click.echo("no server configured: pass --server or --profile, or set XNAT_SERVER")
    width = max(len(k) for k in (*shown, *DICOM_ENV_KEYS))
    for key, (value, source) in shown.items():
        click.echo(f"{key.ljust(width)}  {value}  ({source})")


def _profile_name(settings: Resolution) -> str | None:
    return settings.profile.name if settings.profile is not None else None


@command.command("path", context_settings=HELP_SETTINGS)
def path() -> None:
    """Print where the config file is (it may not exist yet)."""
    click.echo(str(config_file_path()))
