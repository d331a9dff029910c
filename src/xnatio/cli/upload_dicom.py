"""``xio upload-dicom PROJECT SUBJECT SESSION SOURCE``: the main command."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from xnatio.cli.anonymize import anonymize_options
from xnatio.cli.app import configure_logging
from xnatio.cli.compat import upload_options
from xnatio.cli.options import (
    DicomFlags,
    InputPath,
    ServerOptions,
    dicom_options,
    load_config,
    output_options,
    seconds_option,
    server_options,
    session_command,
    timeout_option,
)
from xnatio.xnat.naming import Labels

__all__ = ["command", "load_config"]  # load_config: kept importable from here for older callers
from xnatio.cli.display import ProgressDisplay
from xnatio.cli.summary import rest_cancelled, rest_output, rest_plan_output
from xnatio.config import XnatConfig
from xnatio.errors import InputError
from xnatio.options import RestOptions, parse_workers
from xnatio.plan import plan_upload
from xnatio.result.outcome import UploadCancelled, UploadResult
from xnatio.result.report import (
    check_report_path,
)
from xnatio.transport.ratelimit import parse_rate
from xnatio.upload import upload_session
from xnatio.verify import VerifyLevel, verify_level

EXIT_OK, EXIT_PARTIAL, EXIT_INPUT, EXIT_AUTH = 0, 1, 2, 3


class _Parsed(click.ParamType):  # type: ignore[type-arg]
    """An option value read by one of the library's parsers; its InputError is click's message.

    ``--upload-workers`` (:func:`xnatio.options.parse_workers`: N, auto or auto:N) and
    ``--bwlimit`` (:func:`xnatio.transport.ratelimit.parse_rate`: an rclone-style rate).
    """

    def __init__(self, name: str, parse: Callable[[str], Any], parsed: type) -> None:
        self.name = name
        self._parse = parse
        self._parsed = parsed  # a default that click passes through already converted

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self._parsed):
            return value
        try:
            return self._parse(value)
        except InputError as exc:
            self.fail(exc.message, param, ctx)


@session_command
@click.argument("source", type=InputPath())
@click.option(
    "--transport",
    type=click.Choice(["rest", "dicom-store"]),
    default="rest",
    show_default=True,
    help="REST import service, or DICOM C-STORE.",
)
@click.option(
    "--num-batches",
    type=click.IntRange(min=1),
    default=None,
    help="Pieces the session is cut into (REST, default 42) or parallel associations "
    "(C-STORE, default 45). xnatio 0.2's defaults, kept: on links that cap each connection, "
    "parallel streams add up (docs/parallel-uploads.md). With --upload-workers auto, the fewest "
    "REST batches: a large session is cut into up to 4 per worker, of 50 files or more.",
)
@click.option(
    "--upload-workers",
    type=_Parsed("N|auto|auto:N", parse_workers, tuple),
    default="42",
    show_default=True,
    help="Batches sent at once: N (default 42, as many as batches, so all start together; each "
    "holds one of XNAT's Tomcat threads), auto (adapts to the link and the server, at most 42) "
    "or auto:N (at most N).",
)
@click.option(
    "--archive-workers",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Accepted for compatibility; archives are streamed by the upload workers.",
)
@click.option(
    "--archive-format",
    type=click.Choice(["tar", "zip"]),
    default="tar",
    show_default=True,
    help="Body of each batch when not compressing: tar (default; XNAT needs its exact length) or "
    "zip, stored (for proxies or servers that handle zip better); compressed bodies are zip.",
)
@click.option(
    "--compress",
    type=click.Choice(["auto", "deflate", "none"]),
    default="auto",
    show_default=True,
    help="auto: deflate only while the link, not the CPU, limits the upload (measured); "
    "deflate: always; none: never.",
)
@click.option(
    "--bwlimit",
    type=_Parsed("RATE", parse_rate, float),
    default=None,
    help="Cap on all uploads of this run together, bytes per second: 20M, 1.5M, 800k.",
)
@timeout_option(
    None,
    "Seconds per request (REST, default 10800) or per answer from the DICOM receiver "
    "(C-STORE, default 60).",
)
@click.option(
    "--overwrite",
    type=click.Choice(["none", "append", "delete"]),
    default="none",
    show_default=True,
    help="none: session must be new; append: add missing instances; delete: replace files.",
)
@click.option(
    "--direct-archive",
    is_flag=True,
    help="Write a new session straight to the archive (XNAT 1.8.3+), skipping the prearchive "
    "and the commit; off by default since xio 0.1 (docs/migrating.md).",
)
@click.option(
    "--import-handler",
    type=click.Choice(["DICOM-zip", "gradual-DICOM"]),
    default="DICOM-zip",
    show_default=True,
    help="XNAT's import handler: DICOM-zip takes a batch per request; gradual-DICOM one file per "
    "request, for servers where DICOM-zip is disabled.",
)
@click.option("--allow-multiple-studies", is_flag=True, help="Accept several studies in SOURCE.")
@click.option(
    "--skip-unreadable",
    is_flag=True,
    help="Leave out files and folders of SOURCE that cannot be read (listed as skipped) "
    "instead of stopping with exit code 2.",
)
@server_options
@anonymize_options
@dicom_options
@click.option(
    "--no-routing-tags", is_flag=True, help="C-STORE: do not add Project/Subject/Session."
)
@click.option(
    "--verify",
    "verify_mode",
    type=click.Choice(["none", "listing", "deep"]),
    default=None,
    help="Check what landed: listing (default: instances by SOP Instance UID, listed sizes and "
    "digests), deep (also download every stored file and compare its data elements), or none.",
)
@click.option("--no-verify", is_flag=True, help="Same as --verify none.")
@seconds_option(
    "--wait",
    600.0,
    "C-STORE: seconds to wait for XNAT to build and archive the session before verifying.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Send only what an interrupted upload did not deliver (journal + server listing).",
)
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Journal file (default: one per upload under ~/.cache/xnatio/journals).",
)
@click.option("--no-journal", is_flag=True, help="Keep no journal (no --resume later).")
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write one row per file to FILE (.jsonl or .csv).",
)
@click.option(
    "--journal-chunk",
    type=click.IntRange(min=1),
    default=None,
    hidden=True,
    help="C-STORE: confirmed instances per journal write (tests use small values).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and send nothing.")
@output_options(progress="Progress display on stderr (json: one event per line).")
@upload_options  # xnatio 0.2's flags (cli/compat.py)
@click.pass_context
def command(
    ctx: click.Context,
    labels: Labels,
    source: Path,
    transport: str,
    num_batches: int | None,
    upload_workers: tuple[int, bool],
    archive_workers: int,
    archive_format: str,
    compress: str,
    bwlimit: float | None,
    timeout: float | None,
    overwrite: str,
    direct_archive: bool,
    import_handler: str,
    allow_multiple_studies: bool,
    skip_unreadable: bool,
    creds: ServerOptions,
    anonymize: Any,
    dicom: DicomFlags,
    no_routing_tags: bool,
    verify_mode: str | None,
    no_verify: bool,
    wait: float,
    resume: bool,
    journal_path: Path | None,
    no_journal: bool,
    report_path: Path | None,
    journal_chunk: int | None,
    dry_run: bool,
    as_json: bool,
    progress_mode: str,
    verbose: int,
    quiet: bool,
) -> None:
    """Upload the DICOM files in SOURCE (folder, .zip, .tar, .tar.gz) as PROJECT/SUBJECT/SESSION.

    Exit codes: 0 all files landed, 1 some files failed (listed), 2 usage or input error,
    3 authentication or connection failure before anything was sent, 130 interrupted (Ctrl-C),
    143 terminated (SIGTERM); after 130 or 143, --resume sends the rest.
    """
    opts = dict(locals())  # the parsed options, as the command received them
    configure_logging(verbose, quiet)
    if quiet and progress_mode == "auto":
        progress_mode = "none"
    if report_path is not None:
        check_report_path(report_path)
    if no_journal and (resume or journal_path is not None):
        raise InputError("--no-journal cannot be combined with --resume or --journal")
    journal: Path | bool = False if no_journal else (journal_path or True)
    if no_verify and verify_mode not in (None, "none"):
        raise InputError(f"--no-verify cannot be combined with --verify {verify_mode}")
    verify = verify_level("none" if no_verify else verify_mode or "listing")
    if dry_run and anonymize is not None:  # the scripts' edits, element by element
        ctx.exit(anonymize_dry_run(source, labels, anonymize, creds, transport,
                                   allow_multiple_studies, skip_unreadable, as_json))  # fmt: skip
    if transport == "dicom-store":
        from xnatio.cli.dicom_store_cli import run_dicom_store

        code = run_dicom_store(
            labels=labels,
            source=source,
            num_batches=num_batches or 45,
            allow_multiple_studies=allow_multiple_studies,
            skip_unreadable=skip_unreadable,
            creds=creds,
            dicom=dicom,
            routing_tags=not no_routing_tags,
            verify=verify,
            wait=wait,
            resume=resume,
            journal=journal,
            report_path=report_path,
            journal_chunk=journal_chunk,
            timeout=timeout if timeout is not None else 60.0,
            dry_run=dry_run,
            as_json=as_json,
            progress_mode=progress_mode,
            quiet=quiet,
            anonymize=anonymize,
        )
        ctx.exit(code)

    ctx.exit(
        _run_rest(
            opts,
            verify=verify,
            journal=journal,
            progress_mode=progress_mode if not as_json or progress_mode != "auto" else "none",
        )
    )


def _run_rest(
    opts: dict[str, Any], *, verify: VerifyLevel, journal: Path | bool, progress_mode: str
) -> int:
    """The REST half of the command, from its parsed options; returns the exit code."""
    p = opts
    source, labels = p["source"], p["labels"]
    workers, auto = p["upload_workers"]
    transport = RestOptions(
        num_batches=p["num_batches"] or 42,
        upload_workers=workers,
        adaptive_workers=auto,
        archive_workers=p["archive_workers"],
        archive_format=p["archive_format"],
        compress=p["compress"],
        bwlimit=p["bwlimit"],
        timeout=p["timeout"] if p["timeout"] is not None else 10800.0,
        overwrite=p["overwrite"],
        direct_archive=p["direct_archive"],
        import_handler=p["import_handler"],
    )
    config = None if p["dry_run"] else p["creds"].required_config()
    with ProgressDisplay(progress_mode) as display:
        if p["dry_run"]:
            plan = plan_upload(
                source,
                **labels,
                num_batches=transport.num_batches,
                allow_multiple_studies=p["allow_multiple_studies"],
                progress_callback=display,
                skip_unreadable=p["skip_unreadable"],
            )
            # The batches as they would be sent (auto sends smaller ones: RestOptions.batches_for).
            plan = plan.with_batches(transport.batches_for(len(plan.inventory.files)))
            plan.inventory.source.close()
            return rest_plan_output(plan, p["as_json"])
        assert config is not None
        try:
            result = upload_session(
                source,
                **labels,
                transport=transport,
                server=config,
                verify=verify,
                journal=journal,
                resume=p["resume"],
                allow_multiple_studies=p["allow_multiple_studies"],
                progress_callback=display,
                skip_unreadable=p["skip_unreadable"],
                anonymize=p["anonymize"],
            )
            assert isinstance(result, UploadResult)  # RestOptions: the import service's result
        except UploadCancelled as exc:
            display.__exit__(None, None, None)
            rest_cancelled(exc, report_path=p["report_path"], as_json=p["as_json"])
            raise  # xio's main() prints the one line and exits 130 (143 after SIGTERM)
    return rest_output(result, report_path=p["report_path"], as_json=p["as_json"], quiet=p["quiet"])


def anonymize_dry_run(
    source: Path,
    labels: Labels,
    anonymize: Any,
    creds: ServerOptions,
    transport: str,
    allow_multiple_studies: bool,
    skip_unreadable: bool,
    as_json: bool,
) -> int:
    """``--dry-run`` with ``--anonymize``: see :func:`xnatio.cli.anonymize.dry_run`."""
    from xnatio.cli.anonymize import dry_run

    return dry_run(
        source,
        **labels,
        anonymize=anonymize,
        creds=creds,
        transport=transport,
        allow_multiple_studies=allow_multiple_studies,
        skip_unreadable=skip_unreadable,
        as_json=as_json,
    )


def default_dicom_host(config: XnatConfig | None) -> str | None:
    """The host of the XNAT server URL, the default C-STORE host."""
    if config is None:
        return None
    return urlsplit(config.server).hostname


def env_or(value: str | None, key: str) -> str | None:
    """A flag's value, else the environment variable ``key``."""
    return value if value is not None else os.environ.get(key) or None
