"""What ``xio upload-dicom`` prints when it is done: the plan, the summary lines and ``--json``.

One set of numbers everywhere: bytes are this run's file bytes (a resume counts what it sent,
not what the server already held), the rate is those bytes over the seconds of sending
(:func:`xnatio.result.outcome.send_rate`, the rate the progress bar ends on), and the summary
gives both the time of sending and the time of the whole run.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from xnatio.cli.display import human_bytes, human_rate
from xnatio.inventory import describe_skipped
from xnatio.plan import UploadPlan
from xnatio.result.outcome import DicomStoreResult, UploadCancelled, UploadResult
from xnatio.result.report import json_safe, rest_rows, skipped_list, write_report

__all__ = [
    "dicom_times",
    "echo_json",
    "plan_dict",
    "print_plan",
    "print_rest_result",
    "rest_cancelled",
    "rest_output",
    "rest_plan_output",
    "rest_result_dict",
    "seconds",
    "sent_clause",
    "timing_dict",
]

EXIT_OK, EXIT_PARTIAL = 0, 1


def echo_json(data: dict[str, Any]) -> None:
    """A JSON summary on stdout, without lone surrogates (file names that are not UTF-8)."""
    click.echo(json.dumps(json_safe(data), indent=2, default=str))


def seconds(s: float) -> str:
    """``0.123`` -> ``0.12 s``, ``75.25`` -> ``75.2 s``."""
    return f"{s:.2f} s" if s < 1 else f"{s:.1f} s"


def sent_clause(count: int, total: int, what: str, bytes_sent: int, send_seconds: float) -> str:
    """``12 of 20 files sent (3.1 MB) in 0.42 s, 7.4 MB/s``; no time or rate when nothing
    was sent (``0 of 20 files sent (0 B)``)."""
    clause = f"{count} of {total} {what}"
    if bytes_sent <= 0:
        return f"{clause} (0 B)"
    return (
        f"{clause} ({human_bytes(bytes_sent)}) in {seconds(send_seconds)}, "
        f"{human_rate(bytes_sent, send_seconds)}"
    )


def timing_dict(result: UploadResult | DicomStoreResult) -> dict[str, Any]:
    """The names both transports share in ``--json`` (see docs/api.md)."""
    return {
        "files_sent": result.files_sent,
        "files_failed": result.files_failed,
        "already_present": result.already_present,
        "bytes_sent": result.bytes_sent,
        "send_duration": round(result.send_duration, 3),
        "send_rate": round(result.send_rate, 1),
        "total_duration": round(result.total_duration, 3),
    }


# -- REST ---------------------------------------------------------------------------------------


def plan_dict(plan: UploadPlan) -> dict[str, Any]:
    """``--dry-run --json``."""
    return {
        "files": len(plan.inventory.files),
        "bytes": plan.inventory.total_bytes,
        "skipped": skipped_list(plan.inventory.skipped),
        "studies": plan.studies,
        "series": plan.series,
        "batches": [
            {"index": b.index, "files": len(b.files), "bytes": b.total_bytes} for b in plan.batches
        ],
    }


def print_plan(plan: UploadPlan) -> None:
    """``--dry-run``: what would be sent, in batches."""
    inv = plan.inventory
    click.echo(f"{len(inv.files)} DICOM files, {human_bytes(inv.total_bytes)}")
    if inv.skipped:
        click.echo(f"{describe_skipped(inv.skipped)}:")
        for s in inv.skipped[:50]:
            click.echo(f"  {s.path}: {s.reason}")
        if len(inv.skipped) > 50:
            click.echo(f"  ... and {len(inv.skipped) - 50} more")
    for uid, count in plan.studies.items():
        click.echo(f"study {uid}: {count} files")
    click.echo("series (scan: files): " + ", ".join(f"{k}: {v}" for k, v in plan.series.items()))
    click.echo(f"{len(plan.batches)} batches:")
    for b in plan.batches:
        click.echo(f"  batch {b.index + 1}: {len(b.files)} files, {human_bytes(b.total_bytes)}")
    click.echo("dry run: nothing was sent")


def rest_plan_output(plan: UploadPlan, as_json: bool) -> int:
    """Print a dry run's plan; the exit code."""
    if as_json:
        echo_json(plan_dict(plan))
    else:
        print_plan(plan)
    return EXIT_OK


def rest_result_dict(result: UploadResult) -> dict[str, Any]:
    """``--json`` for a REST upload."""
    out: dict[str, Any] = {
        "success": result.success,
        "total_files": result.total_files,
        "total_size_mb": round(result.total_size_mb, 3),
        "duration": round(result.duration, 3),
        "throughput_mb_s": round(result.throughput_mb_s, 3),
        **timing_dict(result),
        "batches_succeeded": result.batches_succeeded,
        "batches_failed": result.batches_failed,
        "retries": result.retries,
        "prearchive_uris": result.prearchive_uris,
        "archive_uri": result.archive_uri,
        "resumed": result.resumed,
        "nothing_to_send": result.nothing_to_send,
        "journal": result.journal_path,
        "errors": result.errors,
        "skipped": skipped_list(result.skipped),
        "batches": [asdict(b) for b in result.batches],
        "adaptive": result.adaptive,
    }
    if result.verification is not None:
        v = result.verification
        out["verification"] = {
            "ok": v.ok,
            "expected": v.expected,
            "matched": v.matched,
            "missing": v.missing,
            "duplicated": v.duplicated,
            "misplaced": [list(m) for m in v.misplaced],
            "extra": v.extra,
        }
    return out


def print_rest_result(result: UploadResult, quiet: bool) -> None:
    """The summary of a REST upload: what this run sent, at what rate, and how long it all
    took."""
    if quiet and result.success:
        return
    verdict = "OK" if result.success else "INCOMPLETE"
    sent = sent_clause(
        result.files_sent,
        result.total_files,
        "files sent",
        result.bytes_sent,
        result.send_duration,
    )
    click.echo(
        f"{verdict}: {sent}; {result.batches_succeeded} batches ok, "
        f"{result.batches_failed} failed, {result.retries} retries"
    )
    already = "already on the server"
    print_left_out(result.nothing_to_send, result.total_files, result.already_present, already)
    if result.skipped:
        click.echo(f"{describe_skipped(result.skipped)}; see --dry-run")
    if result.archive_uri:
        click.echo(f"session: {result.archive_uri}")
    if result.verification is not None:
        v = result.verification
        click.echo(
            f"verified: {v.matched} of {v.expected} instances present exactly once"
            + (f"; {len(v.extra)} other files in the session" if v.extra else "")
        )
    sending = f" ({seconds(result.send_duration)} sending)" if result.bytes_sent else ""
    click.echo(f"{seconds(result.total_duration)} in all{sending}")
    for err in result.errors[:100]:
        click.echo(f"error: {err}", err=True)
    if len(result.errors) > 100:
        click.echo(f"... and {len(result.errors) - 100} more errors (see --json)", err=True)


def print_left_out(nothing: bool, total: int, present: int, where: str) -> None:
    """The line on instances not sent because they were ``where`` (both transports)."""
    if nothing:
        click.echo(f"nothing to send: all {total} instances are {where}")
    elif present:
        click.echo(f"{present} instances were {where} and not re-sent")


def rest_output(
    result: UploadResult, *, report_path: Path | None, as_json: bool, quiet: bool
) -> int:
    """Write the report, print the summary (or ``--json``); the exit code."""
    if report_path is not None:
        write_report(report_path, rest_rows(result.files, result))
    if as_json:
        echo_json(rest_result_dict(result))
    else:
        print_rest_result(result, quiet)
    return EXIT_OK if result.success else EXIT_PARTIAL


def rest_cancelled(exc: UploadCancelled, *, report_path: Path | None, as_json: bool) -> None:
    """After Ctrl-C: the report and ``--json`` of what was sent; xio's main() prints the one
    line (exit 130, or 143 after SIGTERM)."""
    if report_path is not None:
        write_report(report_path, rest_rows(exc.result.files, exc.result))
    if as_json:
        echo_json(rest_result_dict(exc.result))


# -- C-STORE ------------------------------------------------------------------------------------


def dicom_times(result: DicomStoreResult) -> str:
    """``17.2 s in all (1.5 s sending, 9.4 s waiting for XNAT to build and archive it)``."""
    parts = [f"{seconds(result.send_duration)} sending"] if result.bytes_sent else []
    report = result.verification
    if report is not None and report.waited >= 0.05:
        parts.append(f"{seconds(report.waited)} waiting for XNAT to build and archive the session")
    tail = f" ({', '.join(parts)})" if parts else ""
    return f"{seconds(result.total_duration)} in all{tail}"
