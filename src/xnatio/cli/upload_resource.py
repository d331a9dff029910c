"""``xio upload-resource PROJECT SUBJECT SESSION RESOURCE PATH``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from xnatio.cli.app import configure_logging
from xnatio.cli.compat import resource_options
from xnatio.cli.display import ProgressDisplay, human_bytes
from xnatio.cli.options import (
    InputPath,
    ServerOptions,
    joined,
    server_options,
    session_command,
    timeout_option,
)
from xnatio.transport.resources import upload_resource
from xnatio.xnat.naming import Labels


@session_command
@click.argument("resource")
@click.argument("path", type=InputPath())
@click.option("--scan", metavar="ID", help="Upload into this scan's resource.")
@click.option("--per-file", is_flag=True, help="Send a folder file by file instead of one zip.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="With --per-file: files sent at once (resource files are few and large next to DICOM "
    "instances, so fewer connections than upload-dicom's 42 fill the link).",
)
@click.option("--no-overwrite", is_flag=True, help="Keep files that already exist on the server.")
@click.option("--no-verify", is_flag=True, help="Skip comparing the listing afterwards.")
@timeout_option(
    10800.0,
    "Seconds each request may take (the zip of a whole folder is one request; XNAT answers "
    "after unpacking it).",
    minimum=1,
)
@server_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors (and nothing on success).")
@resource_options  # xnatio 0.2's --zip-name (cli/compat.py)
@click.pass_context
def command(
    ctx: click.Context,
    labels: Labels,
    resource: str,
    path: Path,
    scan: str | None,
    per_file: bool,
    workers: int,
    no_overwrite: bool,
    no_verify: bool,
    timeout: float,
    creds: ServerOptions,
    as_json: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Upload PATH (a file, or a folder) into RESOURCE of an archived session or scan.

    A folder is streamed as one zip and extracted by XNAT, or sent file by file with --per-file.
    Existing files are replaced unless --no-overwrite. Exit 0 when every file is listed with the
    right size, 1 otherwise, 2 for bad input, 3 when login fails.
    """
    configure_logging(verbose, quiet)
    config = creds.required_config()
    with ProgressDisplay("none" if (quiet or as_json) else "auto", unit="files") as display:
        result = upload_resource(
            **config.keywords(),
            **labels,
            resource=resource,
            path=path,
            scan=scan,
            overwrite=not no_overwrite,
            per_file=per_file,
            workers=workers,
            timeout=timeout,
            verify=not no_verify,
            progress_callback=display,
        )
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2))
    elif not (quiet and result.success):
        verdict = "OK" if result.success else "INCOMPLETE"
        where = f"scan {scan} " if scan else ""
        click.echo(
            f"{verdict}: {result.files} files ({human_bytes(result.bytes)}) into {where}resource "
            f"{resource} of {joined(labels, '/')} in {result.duration:.1f} s"
        )
        if result.duplicates:
            click.echo(
                f"{len(result.duplicates)} files already existed and were kept (--no-overwrite): "
                + ", ".join(result.duplicates[:20])
            )
        for name in result.missing:
            click.echo(f"error: not in the resource listing: {name}", err=True)
        for name in result.wrong_size:
            click.echo(f"error: listed with another size: {name}", err=True)
        for err in result.errors:
            click.echo(f"error: {err}", err=True)
    ctx.exit(0 if result.success else 1)
