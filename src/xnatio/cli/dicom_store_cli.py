"""The C-STORE half of ``xio upload-dicom`` (``--transport dicom-store``).

Adds what the transport itself leaves to its caller: a journal of the instances the receiver
confirmed (recorded as each instance's outcome arrives and written in batches, so an interrupted
send resumes with ``--resume``), the check of the XNAT session after sending (waiting for XNAT to
build it), and the per-file report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from xnatio.cli.display import ProgressDisplay, human_bytes
from xnatio.cli.options import ServerOptions
from xnatio.config import XnatConfig
from xnatio.errors import InputError
from xnatio.inventory import DicomFile, Inventory
from xnatio.progress import ProgressCallback, ProgressEvent
from xnatio.result.journal import BatchedSent, Journal, JournalKey
from xnatio.result.report import dicom_store_rows, write_report
from xnatio.transport.dicom_store import (
    DicomStoreCancelled,
    DicomStoreResult,
    DicomTls,
    InstanceOutcome,
    check_receiver,
    send_dicom_store,
)
from xnatio.transport.rest import plan_upload
from xnatio.verify import (
    VerifyReport,
    find_prearchive_sessions,
    is_settling,
    list_prearchive_files,
    list_session_files,
    present_names,
    scan_id_for,
    stored_name,
    template_name,
    verify_session,
)
from xnatio.xnat.session import XnatSession

EXIT_OK, EXIT_PARTIAL, EXIT_CANCELLED = 0, 1, 130


def _env(value: str | None, key: str) -> str | None:
    return value if value is not None else (os.environ.get(key) or None)


def _result_dict(result: DicomStoreResult) -> dict[str, Any]:
    data = asdict(result)
    data["outcomes"] = [o for o in data.get("outcomes", []) if o.get("status") != 0]
    return data


# Journal writes while sending: at most every this many seconds, or sooner when this many
# confirmed instances are pending (``--journal-chunk``).
JOURNAL_INTERVAL = 0.5
JOURNAL_RECORDS = 256


def _resume_todo(
    files: list[DicomFile],
    journal: Journal | None,
    config: XnatConfig | None,
    project: str,
    subject: str,
    session: str,
    present: dict[str, str],
    wait: float,
    progress: ProgressCallback,
) -> list[DicomFile]:
    """What a C-STORE resume sends: what neither the server's listings nor the journal confirm.

    The archive listing is authoritative; a prearchive session is listed where the server allows
    it. Instances the journal confirmed count as delivered when the server cannot list where
    they are (still in the prearchive, or a receiver that is not XNAT): re-sending them into the
    prearchive would replace them anyway.

    A prearchive session that XNAT is still receiving, building or archiving is waited for (up
    to ``wait`` seconds) first: data sent while it is being archived would start a second
    session, and the listings are only meaningful once it has settled.
    """
    confirmed = journal.state.confirmed if journal is not None else set()
    archived: set[tuple[str, str]] = set()
    pre: set[tuple[str, str]] | None = None
    if config is not None:
        with XnatSession(config, timeout=300.0) as xnat:
            _wait_until_settled(xnat, project, session, wait, progress)
            listed = list_session_files(xnat, project, subject, session)
            archived = present_names(listed) if listed is not None else set()
            pre = set()
            for p in find_prearchive_sessions(xnat, project, session):
                if p.project != project or p.name != session:
                    continue
                listed = list_prearchive_files(xnat, p.url)
                if listed is None:
                    pre = None
                    break
                pre |= present_names(listed)
    todo: list[DicomFile] = []
    for f in files:
        keys = {(scan_id_for(f), stored_name(f)), (scan_id_for(f), template_name(f))}
        if keys & archived:
            present[f.path] = "already in the archived session"
        elif pre is not None and keys & pre:
            present[f.path] = "already in the prearchive session"
        elif pre is None and f.sop_instance_uid in confirmed:
            present[f.path] = "confirmed by the journal (the receiver answered success)"
        else:
            todo.append(f)
    return todo


def run_dicom_store(
    *,
    project: str,
    subject: str,
    session: str,
    source: Path,
    num_batches: int,
    allow_multiple_studies: bool,
    creds: ServerOptions,
    dicom_host: str | None,
    dicom_port: int | None,
    dicom_called_aet: str | None,
    dicom_calling_aet: str | None,
    dicom_tls: bool,
    dicom_tls_ca: Path | None,
    dicom_tls_cert: Path | None,
    dicom_tls_key: Path | None,
    routing_tags: bool,
    verify: bool,
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
) -> int:
    """Run a C-STORE upload from parsed options; return the exit code."""
    config = None
    if creds.server or os.environ.get("XNAT_SERVER") or not dry_run:
        config = creds.config(required=False)
    host = _env(dicom_host, "XNAT_DICOM_HOST")
    if host is None and config is not None:
        host = urlsplit(config.server).hostname
    if host is None:
        raise InputError("no DICOM host: pass --dicom-host, set XNAT_DICOM_HOST, or give --server")
    port_text = _env(str(dicom_port) if dicom_port else None, "XNAT_DICOM_PORT") or "8104"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InputError(f"DICOM port {port_text!r} is not a port number (1-65535)")
    called = _env(dicom_called_aet, "XNAT_DICOM_CALLED_AET") or "XNAT"
    calling = _env(dicom_calling_aet, "XNAT_DICOM_CALLING_AET") or "XNATIO"
    tls = DicomTls(ca=dicom_tls_ca, cert=dicom_tls_cert, key=dicom_tls_key) if dicom_tls else None

    if config is not None and (verify or resume) and not dry_run:
        # The credentials serve the check after sending (and the resume's listings): a wrong
        # password or server URL must stop us before anything is sent, not after.
        with XnatSession(config, timeout=60.0) as xnat:
            xnat.login()

    mode = progress_mode if not as_json or progress_mode != "auto" else "none"
    with ProgressDisplay(mode, unit="instances") as display:
        plan = plan_upload(
            source,
            project=project,
            subject=subject,
            session=session,
            num_batches=num_batches,
            allow_multiple_studies=allow_multiple_studies,
            progress_callback=display,
        )
        inventory = plan.inventory
        files = inventory.files
        if dry_run:
            inventory.source.close()
            n = min(num_batches, len(files))
            summary = {
                "files": len(files),
                "bytes": inventory.total_bytes,
                "associations": n,
                "receiver": f"{called}@{host}:{port_text}",
                "skipped": [{"path": s.path, "reason": s.reason} for s in inventory.skipped],
            }
            if as_json:
                click.echo(json.dumps(summary, indent=2))
            else:
                click.echo(
                    f"{summary['files']} DICOM files, {human_bytes(inventory.total_bytes)}, "
                    f"{n} associations to {summary['receiver']}; "
                    f"{len(inventory.skipped)} files skipped"
                )
                for s in inventory.skipped[:50]:
                    click.echo(f"  skipped {s.path}: {s.reason}")
                click.echo("dry run: nothing was sent")
            return EXIT_OK
        log: Journal | None = None
        try:
            if journal is not False:
                target = config.server if config is not None else f"dicom://{host}:{port_text}"
                key = JournalKey.create(
                    server=f"{target}#{called}",
                    project=project,
                    subject=subject,
                    session=session,
                    files=files,
                    transport="dicom-store",
                )
                log = Journal.for_upload(key, None if journal is True else journal)
            present: dict[str, str] = {}
            if resume:
                todo = _resume_todo(
                    files, log, config, project, subject, session, present, wait, display
                )
            elif log is not None and log.state.runs:
                state = log.state
                what = "did not finish" if state.unfinished else "completed earlier"
                raise InputError(
                    f"an earlier C-STORE send of this source to {project}/{subject}/{session} "
                    f"{what} (journal {log.path}, {len(state.confirmed)} of {len(files)} "
                    "instances confirmed); add --resume to send only what is missing, or "
                    "--no-journal to send everything again"
                )
            else:
                todo = list(files)
            result, cancelled = _send_and_journal(
                inventory,
                todo,
                files,
                log,
                resume=resume,
                journal_records=journal_chunk or JOURNAL_RECORDS,
                display=display,
                host=host,
                port=int(port_text),
                called_aet=called,
                calling_aet=calling,
                num_batches=num_batches,
                project=project,
                subject=subject,
                session=session,
                routing_tags=routing_tags,
                tls=tls,
                timeout=timeout,
            )
            report: VerifyReport | None = None
            if verify and config is not None and not cancelled:
                report = _verify_after_send(
                    config, files, result, project, subject, session, wait, display
                )
            ok = result.success and (report is None or report.ok)
            if log is not None and not cancelled:
                matched = report.comparison.matched if report and report.comparison else 0
                log.record_done(ok=ok, matched=matched, expected=len(files))
        finally:
            if log is not None:
                log.close()
            inventory.source.close()
    if report_path is not None:
        write_report(
            report_path,
            dicom_store_rows(
                files,
                result,
                skipped=inventory.skipped,
                present=present,
                verification=report.comparison if report is not None else None,
            ),
        )
    if as_json:
        data = _result_dict(result)
        data["already_present"] = len(present)
        data["nothing_to_send"] = resume and not todo
        data["journal"] = str(log.path) if log is not None else None
        data["verification"] = report.to_dict() if report is not None else None
        data["success"] = ok
        click.echo(json.dumps(data, indent=2, default=str))
    elif not (quiet and ok):
        if resume and not todo:
            click.echo(f"nothing to send: all {len(files)} instances are already confirmed")
        elif present:
            click.echo(f"{len(present)} instances were already delivered and not re-sent")
        verdict = "OK" if ok else "INCOMPLETE"
        rate = result.bytes_sent / result.duration if result.duration > 0 else 0.0
        click.echo(
            f"{verdict}: {result.sent} of {len(todo)} instances stored "
            f"({result.warned} with warnings, {result.failed} failed) in {result.duration:.1f} s, "
            f"{human_bytes(rate)}/s"
        )
        if report is not None:
            c = report.comparison
            partial = result.failed and c is not None and c.expected < len(files)
            which = "stored instances" if partial else "instances"
            counted = f"; {c.matched} of {c.expected} {which} present exactly once" if c else ""
            click.echo(f"verified: {report.where}{counted}")
            for line in report.problems()[:100]:
                click.echo(f"error: {line}", err=True)
        for err in result.errors[:100]:
            click.echo(f"error: {err}", err=True)
    if cancelled:
        click.echo(
            f"xio: interrupted after {result.sent} instances; run the same command with --resume "
            "to send the rest",
            err=True,
        )
        return EXIT_CANCELLED
    return EXIT_OK if ok else EXIT_PARTIAL


def _wait_until_settled(
    xnat: XnatSession, project: str, session: str, wait: float, progress: ProgressCallback
) -> None:
    started = time.monotonic()
    while True:
        busy = [
            p
            for p in find_prearchive_sessions(xnat, project, session)
            if p.project == project and p.name == session and is_settling(p)
        ]
        waited = time.monotonic() - started
        if not busy or waited >= wait:
            return
        progress(
            ProgressEvent(
                "verifying",
                int(waited),
                int(wait),
                f"waiting for XNAT to finish with {busy[0].url} (status {busy[0].status}) "
                "before resuming",
            )
        )
        time.sleep(min(2.0, max(0.05, wait - waited)))


def _send_and_journal(
    inventory: Inventory,
    todo: list[DicomFile],
    files: list[DicomFile],
    log: Journal | None,
    *,
    resume: bool,
    journal_records: int,
    display: ProgressCallback,
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str,
    num_batches: int,
    project: str,
    subject: str,
    session: str,
    routing_tags: bool,
    tls: DicomTls | None,
    timeout: float = 60.0,
) -> tuple[DicomStoreResult, bool]:
    """Send ``todo`` in one go, journaling each confirmed instance as its outcome arrives.

    The journal's run starts only once the receiver answered the C-ECHO: a send refused there
    (wrong AE title, host or port) stores nothing and must not leave an unfinished journal
    behind. Confirmations are written in batches (every :data:`JOURNAL_INTERVAL` seconds, or
    every ``journal_records`` instances, and at the end), each batch flushed and fsync'd.

    Returns
    -------
    tuple
        The result (``total_files`` counts the whole source) and whether Ctrl-C stopped it.
    """
    if not todo:
        if log is not None:
            log.start_run(resume=resume, total=len(files))
        empty = DicomStoreResult(
            success=True,
            total_files=len(files),
            sent=0,
            warned=0,
            failed=0,
            duration=0.0,
            bytes_sent=0,
        )
        return empty, False
    # Only once the receiver answered: a send refused here (wrong AE title, host or port)
    # stored nothing, and must not leave an unfinished journal that asks for --resume.
    check_receiver(
        host=host,
        port=port,
        called_aet=called_aet,
        calling_aet=calling_aet,
        tls=tls,
        timeout=timeout,
    )
    batch: BatchedSent | None = None
    if log is not None:
        log.start_run(resume=resume, total=len(files))
        batch = log.batched(interval=JOURNAL_INTERVAL, max_records=journal_records)

    def confirmed(outcome: InstanceOutcome) -> None:
        if batch is not None and outcome.category != "failure":
            batch.add(outcome.sop_instance_uid)

    cancelled = False
    try:
        result = send_dicom_store(
            inventory=Inventory(source=inventory.source, files=todo),
            host=host,
            port=port,
            called_aet=called_aet,
            calling_aet=calling_aet,
            num_batches=num_batches,
            project=project,
            subject=subject,
            session=session,
            routing_tags=routing_tags,
            tls=tls,
            progress_callback=display,
            timeout=timeout,
            allow_multiple_studies=True,  # checked once for the whole source
            echo=False,  # done just above
            on_instance=confirmed,
        )
    except DicomStoreCancelled as exc:
        result, cancelled = exc.result, True
    except BaseException:
        if batch is not None:
            with contextlib.suppress(InputError):
                batch.close()  # keep what was confirmed; the first error is the one to show
        raise
    if batch is not None:
        batch.close()
    return dataclasses.replace(result, total_files=len(files)), cancelled


def _verify_after_send(
    config: XnatConfig,
    files: list[DicomFile],
    result: DicomStoreResult,
    project: str,
    subject: str,
    session: str,
    wait: float,
    display: ProgressCallback,
) -> VerifyReport:
    """Check the XNAT session after a send, waiting only for what the receiver stored.

    The instances the sender saw fail are left out of the waiting check: XNAT will never
    build them into the session, and waiting for them would take the whole ``wait``. They
    stay in the sender's errors and in the report. When an instance's failure is uncertain
    (its request went out and no answer came) and the server holds a file the check could
    not place, one more look, without waiting, counts those instances too.
    """
    failed = {o.path: o for o in result.outcomes if o.category == "failure"}
    stored = [f for f in files if f.path not in failed]
    uncertain = {p for p, o in failed.items() if o.status is None and o.attempts > 0}
    with XnatSession(config, timeout=300.0) as xnat:
        xnat.login()

        def look(inventory: list[DicomFile], seconds: float) -> VerifyReport:
            return verify_session(
                server=config.server,
                username=config.username,
                password=config.password,
                verify_tls=config.verify_tls,
                project=project,
                subject=subject,
                session=session,
                inventory=inventory,
                wait=seconds,
                progress_callback=display,
                xnat=xnat,
            )

        if not stored:
            # Nothing was stored: nothing to wait for; say where the session stands.
            return look(files, 0.0)
        report = look(stored, wait)
        c = report.comparison
        if uncertain and c is not None and c.extra:
            report = look([f for f in files if f.path not in failed or f.path in uncertain], 0)
        return report
