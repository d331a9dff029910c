"""Per-file upload reports (``--report FILE``): one row per file, as JSON lines or CSV.

Each row names the file, its SOP Instance UID and series, the batch (REST) or association
(C-STORE) that carried it, the outcome, the attempts made, and the server's URI for the stored
file or the reason it did not land. Skipped files get a row with their reason.

File names are written losslessly. On Linux a name is a string of bytes that need not be UTF-8;
Python keeps the bytes that do not decode as lone surrogates (PEP 383), which neither UTF-8 nor
JSON can carry. The report writes such a name in a readable form, with each undecodable byte as
``\\xNN``, and adds the exact bytes, base64-encoded, in ``path_bytes``; ``path_bytes`` is empty
when ``path`` is the exact name.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xnatio.errors import InputError
from xnatio.inventory import DicomFile, SkippedFile
from xnatio.xnat.naming import scan_id_for

if TYPE_CHECKING:
    from xnatio.result.outcome import DicomStoreResult, UploadResult
    from xnatio.verify import Comparison

__all__ = [
    "ReportRow",
    "check_report_path",
    "dicom_store_rows",
    "exact_bytes",
    "json_safe",
    "path_fields",
    "readable",
    "rest_rows",
    "skipped_list",
    "write_report",
]

# path_bytes comes last so that the columns of earlier reports keep their places.
FIELDS = (
    "path",
    "sop_instance_uid",
    "series",
    "unit",
    "outcome",
    "attempts",
    "uri",
    "reason",
    "path_bytes",
)


def exact_bytes(text: str) -> bytes:
    """The bytes a name stands for: UTF-8, with surrogate-escaped bytes (PEP 383) restored."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return text.encode("utf-8", "surrogatepass")


def readable(text: str) -> str:
    """``text`` as valid Unicode: every byte that is not UTF-8 becomes ``\\xNN``."""
    if text.isascii():
        return text
    return exact_bytes(text).decode("utf-8", "backslashreplace")


def path_fields(path: str) -> dict[str, str]:
    """``{"path": readable}``, plus ``path_bytes`` (base64 of the exact bytes) when the readable
    form is not the exact name."""
    shown = readable(path)
    if shown == path:
        return {"path": path}
    return {"path": shown, "path_bytes": base64.b64encode(exact_bytes(path)).decode("ascii")}


def skipped_list(skipped: Sequence[SkippedFile]) -> list[dict[str, str]]:
    """Skipped files for a JSON summary: path (readable), path_bytes when needed, reason."""
    return [{**path_fields(s.path), "reason": readable(s.reason)} for s in skipped]


def json_safe(value: object) -> object:
    """``value`` with every string made :func:`readable` (for JSON without lone surrogates)."""
    if isinstance(value, str):
        return readable(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


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
        found by the verification), ``not-sent`` (never sent: interrupted, or for C-STORE a
        context the receiver refused or a file that could not be read) or ``skipped``.
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


def _row(f: DicomFile, unit: str, outcome: str, attempts: int, uri: str, reason: str) -> ReportRow:
    return ReportRow(
        f.path, f.sop_instance_uid, scan_id_for(f), unit, outcome, attempts, uri, reason
    )


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
        uri, problem = _verified(f, v, missing)
        if f.path in result.present:
            outcome = "missing" if problem else "already-present"
            rows.append(_row(f, "", outcome, 0, uri, problem or result.present[f.path]))
            continue
        index = batch_of.get(f.path)
        o = outcome_of.get(index) if index is not None else None
        if index is None or o is None:
            rows.append(_row(f, "", "not-sent", 0, "", "interrupted"))
            continue
        unit = f"batch {index + 1}"
        if not o.success and v is not None and problem is None and uri:
            # The batch failed part-way, yet the verification found this file in the session
            # (written before the failure, then committed): it landed.
            why = f"found on the server although its batch failed ({o.error or 'failed'})"
            rows.append(_row(f, unit, "sent", o.attempts, uri, why))
        elif not o.success:
            rows.append(_row(f, unit, "failed", o.attempts, "", o.error or "failed"))
        else:
            outcome = "missing" if problem else "sent"
            uri = uri or (o.uris[0] if o.uris else "")
            rows.append(_row(f, unit, outcome, o.attempts, uri, problem or ""))
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
        uri, problem = _verified(f, verification, missing)
        o = by_path.get(f.path)
        if o is None:
            reason = present.get(f.path, "not sent")
            outcome = "already-present" if f.path in present else "not-sent"
            rows.append(_row(f, "", "missing" if problem else outcome, 0, uri, problem or reason))
            continue
        unit = f"association {o.association}" if o.association is not None else ""
        status = f"0x{o.status:04X} {o.meaning}" if o.status is not None else o.meaning
        if o.comment:
            status += f" ({o.comment})"
        if o.category == "failure":
            # Never sent (interrupted, refused context, unreadable file) or sent and failed.
            outcome = "not-sent" if o.attempts == 0 else "failed"
        elif problem:
            outcome = "missing"
            status = f"{problem}; the receiver answered {status}"
        else:
            outcome = "sent-warning" if o.category == "warning" else "sent"
        rows.append(_row(f, unit, outcome, o.attempts, uri, status))
    return rows + _skipped(result.skipped)


def _record(row: ReportRow) -> dict[str, object]:
    """One row as written: every text readable, the exact name in ``path_bytes`` if needed."""
    record: dict[str, object] = {k: json_safe(v) for k, v in asdict(row).items()}
    record["path_bytes"] = ""
    record.update(path_fields(row.path))
    return {name: record[name] for name in FIELDS}


def write_report(path: str | Path, rows: Sequence[ReportRow]) -> None:
    """Write ``rows`` to ``path``: JSON lines for ``.jsonl``, CSV with a header for ``.csv``.

    Names that are not valid UTF-8 are written as described in the module's documentation.
    """
    p = check_report_path(path)
    try:
        with open(p, "w", encoding="utf-8", newline="") as fh:
            if p.suffix.lower() == ".csv":
                writer = csv.DictWriter(fh, fieldnames=FIELDS)
                writer.writeheader()
                for row in rows:
                    writer.writerow(_record(row))
            else:
                for row in rows:
                    fh.write(json.dumps(_record(row)) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write the report {p}: {exc}") from exc
