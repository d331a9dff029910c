"""``xio journal``: list the upload journals kept in the cache folder, and prune old ones.

Journals hold file paths and SOP Instance UIDs (see docs/privacy.md); they are kept until
deleted, so that an interrupted upload can be resumed with ``--resume``.
"""

from __future__ import annotations

import datetime as dt
import json

import click

from xnatio.cli.app import HELP_SETTINGS
from xnatio.cli.display import human_bytes
from xnatio.result.retention import journal_files, journal_folders, parse_age, prune_journals

__all__ = ["command"]


def _age(value: str) -> float:
    return parse_age(value)  # an InputError: one line, exit 2


@click.group(context_settings=HELP_SETTINGS)
def command() -> None:
    """List and prune the upload journals (they hold file paths and SOP Instance UIDs)."""


@command.command("list", context_settings=HELP_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
def list_journals(as_json: bool) -> None:
    """List the journals, oldest first, with their size and last write."""
    files = journal_files()
    if as_json:
        data = {
            "folders": [str(f) for f in journal_folders()],
            "journals": [
                {"path": str(j.path), "bytes": j.size, "modified": j.mtime} for j in files
            ],
        }
        click.echo(json.dumps(data, indent=2))
        return
    folders = " and ".join(str(f) for f in journal_folders())
    if not files:
        click.echo(f"no journals in {folders}")
        return
    for j in files:
        when = dt.datetime.fromtimestamp(j.mtime).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{when}  {human_bytes(j.size):>9}  {j.path}")
    total = human_bytes(sum(j.size for j in files))
    click.echo(f"{len(files)} journals, {total}, in {folders}")


@command.command("prune", context_settings=HELP_SETTINGS)
@click.option(
    "--older-than",
    "older_than",
    metavar="AGE",
    required=True,
    help="Delete journals not written to for AGE: 30d, 12h, 90m, 2w (an interrupted upload "
    "whose journal is pruned can still be resumed, but all of it is checked again).",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors (for cron).")
@click.pass_context
def prune(ctx: click.Context, older_than: str, dry_run: bool, as_json: bool, quiet: bool) -> None:
    """Delete the journals not written to for longer than --older-than.

    Exit 0 when every old journal was deleted, 1 when some could not be.
    """
    result = prune_journals(_age(older_than), dry_run=dry_run)
    if as_json:
        data = {
            "dry_run": dry_run,
            "removed": [str(j.path) for j in result.removed],
            "bytes": result.bytes,
            "kept": result.kept,
            "errors": result.errors,
        }
        click.echo(json.dumps(data, indent=2))
    elif not quiet:
        verb = "would delete" if dry_run else "deleted"
        for j in result.removed if dry_run else ():
            click.echo(f"  {j.path}")
        click.echo(
            f"{verb} {len(result.removed)} journals ({human_bytes(result.bytes)}) older than "
            f"{older_than}; {result.kept} kept"
        )
    if not as_json:
        for err in result.errors:
            click.echo(f"error: cannot delete {err}", err=True)
    ctx.exit(1 if result.errors else 0)
