"""``xio create-project`` and ``xio list-scans``: two chores xnatio 0.2 had as commands."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from xnatio.cli.app import HELP_SETTINGS, configure_logging
from xnatio.cli.display import human_bytes
from xnatio.cli.options import ServerOptions, server_options, timeout_option
from xnatio.errors import InputError
from xnatio.xnat.admin import ACCESSIBILITY, create_project, list_scans

__all__ = ["create_project_command", "list_scans_command"]

_TIMEOUT = timeout_option(60.0, "Seconds allowed for each request.")
_VERBOSE = click.option("-v", "--verbose", count=True, help="Log each request (-vv: debug).")


@click.command(context_settings=HELP_SETTINGS)
@click.argument("project")
@click.option(
    "--description",
    help="The project's description, set when it is created (an existing project keeps its own).",
)
@click.option(
    "--accessibility",
    type=click.Choice(ACCESSIBILITY),
    default=None,
    help="Who may see the new project (XNAT's default: private); only set when it is created.",
)
@server_options
@_TIMEOUT
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@_VERBOSE
def create_project_command(
    project: str,
    description: str | None,
    accessibility: str | None,
    creds: ServerOptions,
    timeout: float,
    as_json: bool,
    verbose: int,
) -> None:
    """Create PROJECT on the server unless it exists (safe to run again).

    The ID is also the project's name and title. Creating projects needs that right on the
    server. Exit 0 when the project exists afterwards (created or already there), 1 when the
    server refuses, 2 for an invalid ID, 3 when the login fails.
    """
    configure_logging(verbose, quiet=False)
    config = creds.required_config()
    created = create_project(
        **asdict(config),
        project=project,
        description=description,
        accessibility=accessibility,
        timeout=timeout,
    )
    if as_json:
        click.echo(json.dumps({"project": project, "created": created, "server": config.server}))
    elif created:
        click.echo(f"created project {project} on {config.server}")
    else:
        click.echo(f"project {project} already exists on {config.server}; nothing changed")


@click.command(context_settings=HELP_SETTINGS)
@click.argument("project")
@click.argument("subject")
@click.argument("session")
@server_options
@_TIMEOUT
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="The scans as JSON on stdout: id, type, series_description, files, bytes (and "
    "xnatio 0.2's scan_ids and count).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="xnatio 0.2's spelling: --format json is --json.",
)
@_VERBOSE
def list_scans_command(
    project: str,
    subject: str,
    session: str,
    creds: ServerOptions,
    timeout: float,
    as_json: bool,
    output_format: str | None,
    verbose: int,
) -> None:
    """List the scans of an archived session, with their DICOM files and sizes.

    Exit 0 with the list, 2 when the session does not exist or cannot be read (a session
    still in the prearchive is not listed), 3 when the login fails.
    """
    configure_logging(verbose, quiet=False)
    as_json = as_json or output_format == "json"
    config = creds.required_config()
    scans = list_scans(
        **asdict(config), project=project, subject=subject, session=session, timeout=timeout
    )
    if scans is None:
        raise InputError(
            f"no archived session {project}/{subject}/{session} on {config.server} (or it "
            "cannot be read); a session still in the prearchive is not listed"
        )
    if as_json:
        data = {
            "project": project,
            "subject": subject,
            "session": session,
            "scans": [asdict(s) for s in scans],
            "files": sum(s.files for s in scans),
            "bytes": sum(s.bytes for s in scans),
            "scan_ids": [s.id for s in scans],  # xnatio 0.2's keys
            "count": len(scans),
        }
        click.echo(json.dumps(data, indent=2))
        return
    rows = [("scan", "type", "series description", "files", "size")]
    rows += [
        (s.id, s.type, s.series_description, str(s.files), human_bytes(s.bytes)) for s in scans
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        cells = [r[i].ljust(widths[i]) for i in range(3)] + [r[i].rjust(widths[i]) for i in (3, 4)]
        click.echo("  ".join(cells).rstrip())
    total = sum(s.files for s in scans)
    size = human_bytes(sum(s.bytes for s in scans))
    click.echo(f"{len(scans)} scans, {total} DICOM files, {size}")
