"""The C-STORE upload: inventory, what to send, the associations, then XNAT's own build and archive.

XNAT turns received instances into a prearchive session after an idle period and archives it when
the project auto-archives (docs/xnat-behaviour.md §6.3), so the verification waits for that. When
no XNAT server is given (a plain Storage SCP), there is nothing to verify and a resume trusts the
journal alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from xnatio.budget import ConnectionBudget
from xnatio.config import XnatConfig
from xnatio.errors import ConnectionFailedError, InputError, ServerResponseError
from xnatio.inventory import DicomFile, Inventory
from xnatio.options import DicomOptions
from xnatio.progress import ProgressCallback, ProgressEvent, emit
from xnatio.result.outcome import DicomStoreCancelled, DicomStoreResult, dicom_store_result
from xnatio.transport.dicom_store import (
    InstanceOutcome,
    StoreRun,
    echo_receiver,
    store_instances,
)
from xnatio.upload.steps import Target, open_journal, scan_source, server_session, verify
from xnatio.verify.levels import VerifyLevel, verify_level
from xnatio.xnat.naming import routing_comment, validate_label

if TYPE_CHECKING:  # the checks, the HTTP client, journal and de-identification load when used
    from xnatio.result.journal import BatchedSent, Journal
    from xnatio.upload.anonymize import Anonymization
    from xnatio.upload.anonymized import Applied
    from xnatio.verify import VerifyReport
    from xnatio.xnat.session import XnatSession

__all__ = ["run_dicom"]

# Seconds per request while listing and verifying (C-STORE's own timeout is per DIMSE answer).
_REST_TIMEOUT = 300.0


def run_dicom(
    source: str | Path | Inventory,
    target: Target | None,
    options: DicomOptions,
    config: XnatConfig | None,
    *,
    verify_after: bool | VerifyLevel,
    journal: str | Path | bool,
    resume: bool,
    echo: bool,
    allow_multiple_studies: bool,
    progress_callback: ProgressCallback | None,
    on_instance: Callable[[InstanceOutcome], None] | None = None,
    client: XnatSession | None = None,
    budget: ConnectionBudget | None = None,
    skip_unreadable: bool = False,
    anonymize: Anonymization | None = None,
) -> DicomStoreResult:
    """Send ``source`` over C-STORE; see :func:`xnatio.send_dicom_store`.

    ``client`` is an XNAT session shared with other uploads (left open). Each association (and
    the C-ECHO) holds one slot of ``budget`` while it is open. ``anonymize`` de-identifies
    every data set on the way out (:mod:`xnatio.upload.anonymize`).
    """
    options.check()
    started = time.monotonic()
    if target is None and options.routing_tags:
        raise InputError(
            "routing tags need a project, subject and session; give all three or turn routing "
            "tags off (--no-routing-tags)"
        )
    level = verify_level(verify_after)
    if target is None and config is not None and (level != "none" or resume):
        raise InputError(
            "checking the XNAT session needs its project, subject and session; give all three"
        )
    if target is not None:
        for kind, value in (
            ("project", target.project),
            ("subject", target.subject),
            ("session", target.session),
        ):
            validate_label(kind, value)
    xnat: XnatSession | None = None
    checks = level != "none" or resume
    with contextlib.ExitStack() as stack:
        if config is not None and (checks or (anonymize is not None and anonymize.from_server)):
            xnat = stack.enter_context(
                server_session(config, client, timeout=_REST_TIMEOUT, budget=budget)
            )
            # The credentials serve the check after sending and the resume's listings: a wrong
            # password or server URL must stop us before anything is sent, not after.
            xnat.ensure_login()
        resolved = None
        if anonymize is not None:  # compiled (and fetched) before a file is read
            from xnatio.upload.anonymize import resolve

            resolved = resolve(
                anonymize, target=target, xnat=xnat, transport="dicom-store", server_side=checks
            )
        inventory, own = scan_source(
            source,
            allow_multiple_studies=allow_multiple_studies,
            progress_callback=progress_callback,
            skip_unreadable=skip_unreadable,
        )
        if own:
            stack.enter_context(inventory)
        where = config.server if config is not None else f"dicom://{options.host}:{options.port}"
        log = stack.enter_context(
            open_journal(
                journal if target is not None else False,
                server=f"{where}#{options.called_aet}",
                target=target or Target("", "", ""),
                files=inventory.files,
                transport="dicom-store",
            )
        )
        applied = None
        if resolved is not None:
            from xnatio.upload.anonymized import apply_scripts

            inventory, applied = apply_scripts(
                inventory, resolved, log, resume=resume, progress_callback=progress_callback
            )
        flow = _DicomRun(
            xnat, inventory, target, options, log, progress_callback, on_instance, budget, started
        )
        flow.applied = applied
        return flow.run(resume=resume, level=level, echo=echo)
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns or raises


class _DicomRun:
    """One C-STORE upload after the inventory: choose, send, verify, record."""

    def __init__(
        self,
        xnat: XnatSession | None,
        inventory: Inventory,
        target: Target | None,
        options: DicomOptions,
        journal: Journal | None,
        progress_callback: ProgressCallback | None,
        on_instance: Callable[[InstanceOutcome], None] | None,
        budget: ConnectionBudget | None = None,
        started: float | None = None,
    ) -> None:
        self.xnat = xnat
        self.inventory = inventory
        self.files = inventory.files
        self.target = target
        self.options = options
        self.journal = journal
        self.progress_callback = progress_callback
        self.on_instance = on_instance
        self.budget = budget
        self.started = time.monotonic() if started is None else started
        self.applied: Applied | None = None

    def run(self, *, resume: bool, level: VerifyLevel, echo: bool) -> DicomStoreResult:
        files = self.files
        present: dict[str, str] = {}
        if resume:
            todo, present = self.resume_todo()
        else:
            if self.journal is not None:
                from xnatio.result.resume import refuse_rerun

                refuse_rerun(
                    self.journal.state,
                    transport="dicom-store",
                    target=str(self.target),
                    files=len(files),
                    journal_path=str(self.journal.path),
                )
            todo = list(files)
        run = self.send(todo, resume=resume, echo=echo)
        result = dataclasses.replace(
            dicom_store_result(todo, run),
            total_files=len(files),
            present=present,
            nothing_to_send=resume and not todo,
            journal_path=str(self.journal.path) if self.journal is not None else None,
            skipped=list(self.inventory.skipped),
            files=list(files),
        )
        if run.cancelled:
            raise DicomStoreCancelled(
                f"interrupted after {result.sent} of {result.total_files} instances",
                self.finished(result),
            )
        self.sent_event(result, todo)
        report: VerifyReport | None = None
        if level != "none" and self.xnat is not None and self.target is not None:
            try:
                report = self.verify(result, deep=level == "deep")
            except (ServerResponseError, ConnectionFailedError) as exc:
                # Sent, but not checked: exit 1 with the report, not an error without one.
                errors = [*result.errors, exc.message]
                result = dataclasses.replace(result, success=False, errors=errors)
            except KeyboardInterrupt:
                # Everything was sent; XNAT builds and archives the session by itself.
                raise DicomStoreCancelled(
                    f"interrupted while waiting for XNAT, after {result.sent} of "
                    f"{result.total_files} instances were stored",
                    self.finished(result),
                ) from None
        ok = result.success and (report is None or report.ok)
        if self.journal is not None:
            matched = report.comparison.matched if report and report.comparison else 0
            self.journal.record_done(ok=ok, matched=matched, expected=len(files))
        result = self.finished(dataclasses.replace(result, success=ok, verification=report))
        emit(
            self.progress_callback,
            ProgressEvent(
                "done",
                result.sent,
                len(todo),
                "done" if ok else "incomplete",
                bytes_sent=result.bytes_sent,
                bytes_total=sum(f.size for f in todo),
                elapsed=result.total_duration,
                failed=result.failed,
            ),
        )
        return result

    def finished(self, result: DicomStoreResult) -> DicomStoreResult:
        """``result`` with the seconds of the whole upload so far."""
        return dataclasses.replace(result, total_duration=time.monotonic() - self.started)

    def sent_event(self, result: DicomStoreResult, todo: list[DicomFile]) -> None:
        """Close the uploading phase with what the summary will say: the same instances, bytes
        and seconds of sending, so the bar ends on the summary's rate."""
        if not todo:
            return
        emit(
            self.progress_callback,
            ProgressEvent(
                "uploading",
                result.sent,
                len(todo),
                "sent",
                bytes_sent=result.bytes_sent,
                bytes_total=sum(f.size for f in todo),
                elapsed=result.duration,
                failed=result.failed,
            ),
        )

    def resume_todo(self) -> tuple[list[DicomFile], dict[str, str]]:
        """What a resume sends: what neither the server's listings nor the journal confirm.

        A prearchive session XNAT is still receiving, building or archiving is waited for first
        (up to ``options.wait``): data sent while it is archived would start a second session.
        """
        from xnatio.result.resume import ServerHoldings, gather_holdings, resume_todo
        from xnatio.verify.session import wait_until_settled
        from xnatio.xnat.listings import list_session_files

        confirmed = self.journal.state.confirmed if self.journal is not None else set()
        holdings = ServerHoldings(prearchive=None)
        if self.xnat is not None and self.target is not None:
            t = self.target
            wait_until_settled(
                self.xnat,
                project=t.project,
                session=t.session,
                wait=self.options.wait,
                progress_callback=self.progress_callback,
            )
            archived = list_session_files(self.xnat, t.project, t.subject, t.session)
            holdings = gather_holdings(
                self.xnat, self.files, project=t.project, session=t.session, archived=archived
            )
        return resume_todo(self.files, holdings, confirmed)

    def send(self, todo: list[DicomFile], *, resume: bool, echo: bool) -> StoreRun:
        """Send ``todo``, journaling each confirmed instance as its outcome arrives.

        The journal's run starts only once the receiver answered the C-ECHO: a send refused there
        (wrong AE title, host or port) stored nothing and must not leave an unfinished journal
        that asks for --resume. Confirmations are written in batches, each flushed and fsync'd.
        """
        log = self.journal
        if not todo:
            if log is not None:
                log.start_run(resume=resume, total=len(self.files))
            return StoreRun()
        if echo:
            echo_receiver(self.options, budget=self.budget)
        batch: BatchedSent | None = None
        if log is not None:
            log.start_run(resume=resume, total=len(self.files))
            batch = log.batched(
                interval=self.options.journal_interval, max_records=self.options.journal_records
            )
        user_hook = self.on_instance

        def confirmed(outcome: InstanceOutcome) -> None:
            if batch is not None and outcome.category != "failure":
                batch.add(outcome.sop_instance_uid)
            if user_hook is not None:
                user_hook(outcome)

        t = self.target
        comment = (
            routing_comment(t.project, t.subject, t.session)
            if self.options.routing_tags and t is not None
            else None
        )
        try:
            run = store_instances(
                Inventory(source=self.inventory.source, files=todo),
                options=self.options,
                comment=comment,
                progress_callback=self.progress_callback,
                echo=False,
                on_instance=confirmed,
                budget=self.budget,
            )
        except BaseException:
            if batch is not None:
                with contextlib.suppress(InputError):
                    batch.close()  # keep what was confirmed; the first error is the one to show
            raise
        if batch is not None:
            batch.close()
        return run

    def verify(self, result: DicomStoreResult, *, deep: bool) -> VerifyReport:
        """Check the XNAT session after a send, waiting only for what the receiver stored.

        The instances the sender saw fail are left out of the waiting check: XNAT will never
        build them into the session, and waiting for them would take the whole ``wait``. They
        stay in the sender's errors and in the report. When an instance's failure is uncertain
        (its request went out and no answer came) and the server holds a file the check could
        not place, one more look, without waiting, counts those instances too.
        """
        xnat, target = self.xnat, self.target
        assert xnat is not None
        assert target is not None
        files = self.files
        failed = {o.path: o for o in result.outcomes if o.category == "failure"}
        stored = [f for f in files if f.path not in failed]
        uncertain = {p for p, o in failed.items() if o.status is None and o.attempts > 0}

        from xnatio.upload.anonymized import content_check

        def look(expected: list[DicomFile], seconds: float) -> VerifyReport:
            return verify(
                xnat,
                expected,
                target,
                wait=seconds,
                poll_interval=2.0,
                progress_callback=self.progress_callback,
                content=content_check(self.inventory.source, self.applied, deep=deep),
            )

        if not stored:
            # Nothing was stored: nothing to wait for; say where the session stands.
            return look(list(files), 0.0)
        report = look(stored, self.options.wait)
        c = report.comparison
        if uncertain and c is not None and c.extra:
            report = look([f for f in files if f.path not in failed or f.path in uncertain], 0)
        return report
