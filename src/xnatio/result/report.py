"""Per-file upload reports (``--report FILE``): one row per file, as JSON lines or CSV.

Each row names the file, its SOP Instance UID and series, the batch (REST) or association
(C-STORE) that carried it, the outcome, the attempts made, and the server's URI for the stored
file or the reason it did not land. Skipped files get a row with their reason.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xnatio.errors import InputError
from xnatio.inventory import DicomFile, SkippedFile
from xnatio.verify import Comparison
from xnatio.xnat.naming import scan_id_for

if TYPE_CHECKING:
    from xnatio.result.outcome import DicomStoreResult, UploadResult

__all__ = ["ReportRow", "check_report_path", "dicom_store_rows", "rest_rows", "write_report"]

FIELDS = ("path", "sop_instance_uid", "series", "unit", "outcome", "attempts", "uri", "reason")


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One file in a report.

    Attributes
    ----------
    path
        The file's path in the source.
    sop_instance_uid, series
        The instance UID and its scan (SeriesNumber folder); empty for skipped files.
    unit
        ``batch N`` (REST, from 1) or ``association N`` (C-STORE), empty when not sent.
    outcome
        ``sent``, ``sent-warning``, ``already-present``, ``failed``, ``missing`` (sent but not
        found by the verification), ``not-sent`` or ``skipped``.
    attempts
        Requests (REST) or C-STORE attempts made for it in this run.
    uri
        The server's URI for the stored file, when the verification found it.
    reason
        Why it failed, was skipped or was not sent; the status meaning for C-STORE.
    """

    path: str
    sop_instance_uid: str
    series: str
    unit: str
    outcome: str
    attempts: int
    uri: str
    reason: str


def check_report_path(path: str | Path) -> Path:
    """Validate a report path before anything is sent (``.jsonl`` or ``.csv``)."""
    p = Path(path)
    if p.suffix.lower() not in (".jsonl", ".csv"):
        raise InputError(f"--report {p}: the file name must end in .jsonl or .csv")
    if not p.parent.is_dir():
        raise InputError(f"--report {p}: folder {p.parent} does not exist")
    return p


def _skipped(skipped: Sequence[SkippedFile]) -> list[ReportRow]:
    return [ReportRow(s.path, "", "", "", "skipped", 0, "", s.reason) for s in skipped]


def _verified(
    f: DicomFile, verification: Comparison | None, missing: set[str]
) -> tuple[str, str | None]:
    """(server URI, problem) from the verification for a file that was sent or present."""
    if verification is None:
        return "", None
    if f.path in missing:
        return "", "not found on the server after the upload"
    return verification.found.get(f.path, ""), None


def rest_rows(files: Sequence[DicomFile], result: UploadResult) -> list[ReportRow]:
    """Rows for a REST upload: ``files`` is the inventory's list, ``result`` the outcome."""
    outcome_of = {o.index: o for o in result.batches}
    batch_of: dict[str, int] = {}
    for b in result.sent_batches:
        for f in b.files:
            batch_of[f.path] = b.index
    v = result.verification
    missing = set(v.missing) if v is not None else set()
    rows: list[ReportRow] = []
    for f in files:
        series = scan_id_for(f)
        uri, problem = _verified(f, v, missing)
        if f.path in result.present:
            rows.append(
                ReportRow(
                    f.path,
                    f.sop_instance_uid,
                    series,
                    "",
                    "missing" if problem else "already-present",
                    0,
                    uri,
                    problem or result.present[f.path],
                )
            )
            continue
        index = batch_of.get(f.path)
        o = outcome_of.get(index) if index is not None else None
        if index is None or o is None:
            rows.append(
                ReportRow(f.path, f.sop_instance_uid, series, "", "not-sent", 0, "", "interrupted")
            )
            continue
        unit = f"batch {index + 1}"
        if not o.success and v is not None and problem is None and uri:
            # The batch failed part-way, yet the verification found this file in the session
            # (written before the failure, then committed): it landed.
            rows.append(
                ReportRow(
                    f.path,
                    f.sop_instance_uid,
                    series,
                    unit,
                    "sent",
                    o.attempts,
                    uri,
                    f"found on the server although its batch failed ({o.error or 'failed'})",
                )
            )
        elif not o.success:
            rows.append(
                ReportRow(
                    f.path,
                    f.sop_instance_uid,
                    series,
                    unit,
                    "failed",
                    o.attempts,
                    "",
                    o.error or "failed",
                )
            )
        else:
            rows.append(
                ReportRow(
                    f.path,
                    f.sop_instance_uid,
                    series,
                    unit,
                    "missing" if problem else "sent",
                    o.attempts,
                    uri or (o.uris[0] if o.uris else ""),
                    problem or "",
                )
            )
    return rows + _skipped(result.skipped)


def dicom_store_rows(files: Sequence[DicomFile], result: DicomStoreResult) -> list[ReportRow]:
    """Rows for a C-STORE send of ``files`` (``result.present`` lists those not sent because
    already confirmed)."""
    by_path = {o.path: o for o in result.outcomes}
    report = result.verification
    verification = report.comparison if report is not None else None
    missing = set(verification.missing) if verification is not None else set()
    present = result.present
    rows: list[ReportRow] = []
    for f in files:
        series = scan_id_for(f)
        uri, problem = _verified(f, verification, missing)
        o = by_path.get(f.path)
        if o is None:
            reason = present.get(f.path, "not sent")
            outcome = "already-present" if f.path in present else "not-sent"
            rows.append(
                ReportRow(
                    f.path,
                    f.sop_instance_uid,
                    series,
                    "",
                    "missing" if problem else outcome,
                    0,
                    uri,
                    problem or reason,
                )
            )
            continue
        unit = f"association {o.association}" if o.association is not None else ""
        status = f"0x{o.status:04X} {o.meaning}" if o.status is not None else o.meaning
        if o.comment:
            status += f" ({o.comment})"
        if o.category == "failure":
            outcome = "failed"
        elif problem:
            outcome = "missing"
            status = f"{problem}; the receiver answered {status}"
        else:
            outcome = "sent-warning" if o.category == "warning" else "sent"
        rows.append(
            ReportRow(f.path, f.sop_instance_uid, series, unit, outcome, o.attempts, uri, status)
        )
    return rows + _skipped(result.skipped)


def write_report(path: str | Path, rows: Sequence[ReportRow]) -> None:
    """Write ``rows`` to ``path``: JSON lines for ``.jsonl``, CSV with a header for ``.csv``."""
    p = check_report_path(path)
    try:
        with open(p, "w", encoding="utf-8", newline="") as fh:
            if p.suffix.lower() == ".csv":
                writer = csv.DictWriter(fh, fieldnames=FIELDS)
                writer.writeheader()
                for row in rows:
                    writer.writerow(asdict(row))
            else:
                for row in rows:
                    fh.write(json.dumps(asdict(row)) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write the report {p}: {exc}") from exc
