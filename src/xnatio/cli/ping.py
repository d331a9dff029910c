"""``xio ping`` and ``xio whoami``: is the server there, does the login work, which XNAT is it.

Both log in once, ask the server for its version and for the account the session belongs to,
log out, and print one line. Exit 0 when all of that worked, 3 when the server cannot be
reached or refuses the login, 2 when no server is configured.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from xnatio.cli.app import HELP_SETTINGS, configure_logging
from xnatio.cli.options import ServerOptions, server_options, timeout_option
from xnatio.errors import XnatioError
from xnatio.xnat.admin import ServerInfo, server_info

__all__ = ["ping", "whoami"]


def _who(info: ServerInfo) -> str:
    return f"{info.username} (with an alias token)" if info.via_token else info.username


def _as_dict(info: ServerInfo) -> dict[str, Any]:
    return {
        "ok": True,
        "server": info.server,
        "username": info.username,
        "alias_token": info.via_token,
        "xnat_version": info.version,
        "seconds": round(info.seconds, 3),
    }


def _run(creds: ServerOptions, timeout: float, as_json: bool, line: str) -> None:
    """Ask the server; print ``line`` (a format over the info) or JSON; errors exit 3."""
    config = creds.required_config()  # no server or no username: input error, exit 2
    try:
        info = server_info(**asdict(config), timeout=timeout)
    except XnatioError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "server": config.server, "error": exc.message}))
        raise
    if as_json:
        click.echo(json.dumps(_as_dict(info)))
        return
    version = f"XNAT {info.version}" if info.version else "XNAT (version not given)"
    click.echo(
        line.format(
            server=info.server, version=version, who=_who(info), seconds=f"{info.seconds:.2f}"
        )
    )


_TIMEOUT = timeout_option(
    30.0, "Seconds allowed for each request (connecting, logging in, each answer)."
)
_JSON = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object on stdout (also on failure, with ok: false and the error).",
)
_VERBOSE = click.option("-v", "--verbose", count=True, help="Log each step to stderr (-vv: debug).")


@click.command(context_settings=HELP_SETTINGS)
@server_options
@_TIMEOUT
@_JSON
@_VERBOSE
def ping(creds: ServerOptions, timeout: float, as_json: bool, verbose: int) -> None:
    """Check the server, the login and XNAT's version, in one line.

    Exit codes: 0 the server answered and the login worked, 3 it cannot be reached or the login
    failed, 2 no server is configured.
    """
    configure_logging(verbose, quiet=False)
    _run(creds, timeout, as_json, "OK: {server} is {version}; logged in as {who} in {seconds} s")


@click.command(context_settings=HELP_SETTINGS)
@server_options
@_TIMEOUT
@_JSON
@_VERBOSE
def whoami(creds: ServerOptions, timeout: float, as_json: bool, verbose: int) -> None:
    """Print the account the login opens on the server, with the server and its XNAT version.

    Exit codes as for 'xio ping'.
    """
    configure_logging(verbose, quiet=False)
    _run(creds, timeout, as_json, "{who} on {server} ({version})")
