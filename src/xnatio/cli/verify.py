"""``xio verify PROJECT SUBJECT SESSION SOURCE``: does the server hold exactly our instances?"""

from __future__ import annotations

import json
from pathlib import Path

import click

from xnatio.cli.app import configure_logging
from xnatio.cli.display import ProgressDisplay
from xnatio.cli.options import (
    InputPath,
    ServerOptions,
    output_options,
    seconds_option,
    server_options,
    session_command,
)
from xnatio.verify import VerifyReport, verify_session
from xnatio.xnat.naming import Labels

EXIT_OK, EXIT_MISMATCH = 0, 1


_CHECKED = {
    "names": "by SOP Instance UID",
    "listing": "by SOP Instance UID, sizes and digests",
    "deep": "by SOP Instance UID and every data element",
}


def _print(report: VerifyReport, quiet: bool) -> None:
    if quiet and report.ok:
        return
    click.echo(("OK: " if report.ok else "MISMATCH: ") + report.where)
    c = report.comparison
    if c is not None:
        click.echo(
            f"{c.matched} of {c.expected} instances present exactly once in their scan "
            f"(checked {_CHECKED.get(c.checked, c.checked)}); "
            f"{len(c.missing)} missing, {len(c.duplicated)} duplicated, "
            f"{len(c.misplaced)} misplaced, {len(c.content)} with other content, "
            f"{len(c.extra)} extra files"
        )
        for scan, (expected, found) in c.per_scan.items():
            mark = "" if expected == found else "  <-- differs"
            click.echo(f"  scan {scan}: {expected} expected, {found} on the server{mark}")
    # The first line already says where the session is; problems() repeats it for result.errors.
    problems = [line for line in report.problems() if line != report.where]
    for kind, lines, stream_err in (
        ("error", problems, True),
        ("note", [] if quiet else report.remarks(), False),
    ):
        for line in lines[:100]:
            click.echo(f"{kind}: {line}", err=stream_err)
        if len(lines) > 100:
            click.echo(f"... and {len(lines) - 100} more (see --json)", err=stream_err)


@session_command
@click.argument("source", type=InputPath())
@seconds_option(
    "--wait", 0.0, "Seconds to wait for the session to appear and settle (C-STORE sessions)."
)
@server_options
@click.option(
    "--deep",
    is_flag=True,
    help="Also download every stored file and compare its data elements with the local file.",
)
@click.option(
    "--skip-unreadable",
    is_flag=True,
    help="Leave out files and folders of SOURCE that cannot be read (listed as skipped) "
    "instead of stopping with exit code 2; the rest is compared.",
)
@output_options(
    progress="Progress display on stderr while waiting.",
    json_help="The full comparison as JSON on stdout.",
)
@click.pass_context
def command(
    ctx: click.Context,
    labels: Labels,
    source: Path,
    wait: float,
    creds: ServerOptions,
    deep: bool,
    skip_unreadable: bool,
    as_json: bool,
    progress_mode: str,
    verbose: int,
    quiet: bool,
) -> None:
    """Compare PROJECT/SUBJECT/SESSION on the server with the DICOM files in SOURCE.

    Matches stored files to the local instances by SOP Instance UID, per scan, whatever their
    names (reading the headers of files whose names do not tell), checks that each stored file
    can hold its instance (listed size, and MD5 where the bytes should be equal), and reports
    missing, duplicated, misplaced files and files with other content, extra files, and where the
    session is (archived, still in the prearchive, under another label, or absent). --deep also
    compares every data element of every stored file. Exit codes: 0 every instance is there
    exactly once (extra files are listed as notes), 1 it is not, 2 usage or input error,
    3 authentication or connection failure.
    """
    configure_logging(verbose, quiet)
    config = creds.required_config()
    if quiet and progress_mode == "auto":
        progress_mode = "none"
    mode = progress_mode if not as_json or progress_mode != "auto" else "none"
    with ProgressDisplay(mode, unit="seconds") as display:
        report = verify_session(
            **config.keywords(),
            **labels,
            source_dir=source,
            wait=wait,
            progress_callback=display,
            deep=deep,
            skip_unreadable=skip_unreadable,
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print(report, quiet)
    ctx.exit(EXIT_OK if report.ok else EXIT_MISMATCH)
