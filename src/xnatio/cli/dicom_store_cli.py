"""The C-STORE half of ``xio upload-dicom`` (``--transport dicom-store``): options in, text out.

Everything else (journal, resume, the wait for XNAT to build the session, verification) is the
library's :func:`xnatio.send_dicom_store`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import click

from xnatio.cli.display import ProgressDisplay, human_bytes, human_rate
from xnatio.cli.options import DicomFlags, ServerOptions, joined
from xnatio.cli.summary import dicom_times, print_left_out, seconds, timing_dict
from xnatio.inventory import describe_skipped
from xnatio.options import DicomOptions
from xnatio.plan import plan_upload
from xnatio.result.outcome import DicomStoreCancelled, DicomStoreResult
from xnatio.result.report import dicom_store_rows, json_safe, skipped_list, write_report
from xnatio.transport.dicom_store import INTERRUPTED
from xnatio.upload import send_dicom_store
from xnatio.verify import VerifyLevel
from xnatio.xnat.naming import Labels

EXIT_OK, EXIT_PARTIAL = 0, 1


def _result_dict(result: DicomStoreResult) -> dict[str, Any]:
    data = asdict(result)
    data.pop("files", None)
    data["skipped"] = skipped_list(result.skipped)
    data["outcomes"] = [o for o in data.get("outcomes", []) if o.get("status") != 0]
    data["already_present"] = len(result.present)
    data.pop("present", None)
    data["journal"] = result.journal_path
    data.pop("journal_path", None)
    data["verification"] = result.verification.to_dict() if result.verification else None
    data.update(timing_dict(result))
    return data


def run_dicom_store(
    *,
    labels: Labels,
    source: Path,
    num_batches: int,
    allow_multiple_studies: bool,
    creds: ServerOptions,
    skip_unreadable: bool = False,
    dicom: DicomFlags,
    routing_tags: bool,
    verify: bool | VerifyLevel,
    wait: float = 600.0,
    resume: bool = False,
    journal: Path | bool = True,
    report_path: Path | None = None,
    journal_chunk: int | None = None,
    timeout: float = 60.0,
    dry_run: bool,
    as_json: bool,
    progress_mode: str,
    quiet: bool,
    anonymize: Any = None,
) -> int:
    """Run a C-STORE upload from parsed options; return the exit code."""
    settings = creds.settings()
    config = None
    if settings.server is not None or not dry_run:
        config = creds.config(required=False)
    receiver = dicom.receiver(settings)
    options = replace(
        receiver,
        associations=num_batches,
        routing_tags=routing_tags,
        timeout=timeout,
        wait=wait,
        journal_records=journal_chunk or receiver.journal_records,
    )
    mode = progress_mode if not as_json or progress_mode != "auto" else "none"
    if dry_run:
        with ProgressDisplay(mode, unit="instances") as display:
            return _dry_run(
                source,
                labels,
                options,
                allow_multiple_studies,
                as_json,
                display,
                skip_unreadable,
            )
    cancelled: DicomStoreCancelled | None = None
    with ProgressDisplay(mode, unit="instances") as display:
        try:
            result = send_dicom_store(
                source_dir=source,
                **labels,
                options=options,
                server=config,
                verify=verify,
                journal=journal,
                resume=resume,
                allow_multiple_studies=allow_multiple_studies,
                progress_callback=display,
                skip_unreadable=skip_unreadable,
                anonymize=anonymize,
            )
        except DicomStoreCancelled as exc:
            result, cancelled = exc.result, exc
    if report_path is not None:
        write_report(report_path, dicom_store_rows(result.files, result))
    if as_json:
        click.echo(json.dumps(json_safe(_result_dict(result)), indent=2, default=str))
    if cancelled is not None:
        # One line, printed by xio's main() (exit 130, or 143 after SIGTERM).
        check = f"xio verify {joined(labels, ' ')} {shlex.quote(str(source))}"
        raise DicomStoreCancelled(_stopped_line(result, check), result) from cancelled
    if not as_json and not (quiet and result.success):
        _print_result(result)
    return EXIT_OK if result.success else EXIT_PARTIAL


def _stopped_line(result: DicomStoreResult, command: str) -> str:
    """What an interrupted upload stored and what it did not, in one line.

    Instances never sent are "not sent" and those on their way when the send stopped are "not
    confirmed", neither "failed": the user stopped them. Stopped while XNAT was building the
    session, everything was stored and XNAT carries on by itself.
    """
    not_sent = sum(o.category == "failure" and o.attempts == 0 for o in result.outcomes)
    on_the_way = sum(o.meaning == INTERRUPTED for o in result.outcomes)
    failed = result.failed - not_sent - on_the_way
    todo = result.total_files - len(result.present)
    earlier = f" ({len(result.present)} more were stored earlier)" if result.present else ""
    if not not_sent and not on_the_way and not failed:
        return (
            f"{result.sent} of {todo} instances stored{earlier}, nothing left to send; XNAT "
            f"builds and archives the session by itself: check it later with {command}"
        )
    parts = [f"{result.sent} of {todo} instances stored{earlier}"]
    if on_the_way:
        parts.append(f"{on_the_way} on their way, not confirmed")
    if failed:
        parts.append(f"{failed} failed")
    parts.append(f"{not_sent} not sent")
    return f"interrupted: {', '.join(parts)}; run the same command with --resume to send the rest"


def _dry_run(
    source: Path,
    labels: Labels,
    options: DicomOptions,
    allow_multiple_studies: bool,
    as_json: bool,
    display: ProgressDisplay,
    skip_unreadable: bool,
) -> int:
    plan = plan_upload(
        source,
        **labels,
        num_batches=options.associations,
        allow_multiple_studies=allow_multiple_studies,
        progress_callback=display,
        skip_unreadable=skip_unreadable,
    )
    inventory = plan.inventory
    inventory.source.close()
    files = inventory.files
    n = min(options.associations, len(files))
    summary = {
        "files": len(files),
        "bytes": inventory.total_bytes,
        "associations": n,
        "receiver": f"{options.called_aet}@{options.host}:{options.port}",
        "skipped": skipped_list(inventory.skipped),
    }
    if as_json:
        click.echo(json.dumps(json_safe(summary), indent=2))
        return EXIT_OK
    click.echo(
        f"{summary['files']} DICOM files, {human_bytes(inventory.total_bytes)}, "
        f"{n} associations to {summary['receiver']}; "
        f"{describe_skipped(inventory.skipped)}"
    )
    for s in inventory.skipped[:50]:
        click.echo(f"  skipped {s.path}: {s.reason}")
    click.echo("dry run: nothing was sent")
    return EXIT_OK


def _print_result(result: DicomStoreResult) -> None:
    todo = result.total_files - len(result.present)
    present = len(result.present)
    print_left_out(result.nothing_to_send, result.total_files, present, "already confirmed")
    if result.skipped:
        click.echo(f"{describe_skipped(result.skipped)}; see --dry-run")
    verdict = "OK" if result.success else "INCOMPLETE"
    click.echo(
        f"{verdict}: {result.sent} of {todo} instances stored "
        f"({result.warned} with warnings, {result.failed} failed) in "
        f"{seconds(result.send_duration)}, {human_rate(result.bytes_sent, result.send_duration)}"
    )
    report = result.verification
    if report is not None:
        c = report.comparison
        partial = result.failed and c is not None and c.expected < result.total_files
        which = "stored instances" if partial else "instances"
        counted = f"; {c.matched} of {c.expected} {which} present exactly once" if c else ""
        click.echo(f"verified: {report.where}{counted}")
        # The line above says where the session is; problems() repeats it for result.errors.
        for line in [p for p in report.problems() if p != report.where][:100]:
            click.echo(f"error: {line}", err=True)
        for line in report.remarks()[:100]:
            click.echo(f"note: {line}")
    click.echo(dicom_times(result))
    for err in result.errors[:100]:
        click.echo(f"error: {err}", err=True)
