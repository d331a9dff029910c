"""The REST upload: plan and pre-flight, what to send, the batches, one commit, verification.

Every batch goes to the prearchive with ``prevent_auto_commit=true`` under the same labels, so XNAT
gathers them in one prearchive session; one commit archives it with the overwrite mode
(docs/xnat-behaviour.md §3.8, §3.9, §9). A resume adds the missing batches to the session an
interrupted upload left uncommitted, then commits once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from xnatio.budget import ConnectionBudget, LocalBudget
from xnatio.config import XnatConfig
from xnatio.errors import InputError, ServerResponseError
from xnatio.inventory import DicomFile
from xnatio.options import Overwrite, RestOptions
from xnatio.plan import Batch, UploadPlan, plan_batches, plan_inventory
from xnatio.progress import ProgressCallback, ProgressEvent, emit
from xnatio.result.journal import Journal, JournalState
from xnatio.result.outcome import UploadCancelled, UploadResult
from xnatio.result.resume import (
    ServerHoldings,
    archived_holdings,
    gather_holdings,
    refuse_rerun,
    resume_todo,
)
from xnatio.transport.rest import BatchOutcome, BatchRun, commit, send_batches
from xnatio.upload.anonymize import Anonymization, resolve
from xnatio.upload.anonymized import Applied, apply_scripts, content_check
from xnatio.upload.steps import (
    Target,
    open_journal,
    plan_with_preflight,
    server_session,
    verify,
)
from xnatio.verify import VerifyLevel, compare, verify_level
from xnatio.xnat.listings import PrearchiveSession, ServerFile
from xnatio.xnat.session import XnatSession

__all__ = ["run_rest"]

logger = logging.getLogger(__name__)

# After the commit the archived session is listed at once; a server that is slow to show it is
# given this long before the comparison counts what is missing.
_VERIFY_WAIT = 7.5
_VERIFY_POLL = 0.5


def run_rest(
    source: str | Path | UploadPlan,
    target: Target,
    options: RestOptions,
    config: XnatConfig,
    *,
    verify_after: bool | VerifyLevel,
    journal: str | Path | bool,
    resume: bool,
    allow_multiple_studies: bool,
    progress_callback: ProgressCallback | None,
    client: XnatSession | None = None,
    budget: ConnectionBudget | None = None,
    skip_unreadable: bool = False,
    anonymize: Anonymization | None = None,
) -> UploadResult:
    """Upload ``source`` to ``target`` over REST; see :func:`xnatio.upload_dicom_parallel_rest`.

    ``client`` is a session shared with other uploads (left open); without it the upload logs in
    on a session of its own, whose requests hold slots of ``budget`` when one is given.
    ``anonymize`` de-identifies every file on the way out (:mod:`xnatio.upload.anonymize`).
    """
    options.check()
    level = verify_level(verify_after)
    if resume and options.direct_archive:
        raise InputError(
            "--resume sends the missing batches into the prearchive session left by the "
            "interrupted upload; drop --direct-archive"
        )
    started = time.monotonic()
    if options.adaptive_workers and client is None and budget is None:
        # --upload-workers auto changes the capacity of the upload's connection budget.
        budget = LocalBudget(options.upload_workers)
    with server_session(
        config, client, timeout=options.timeout, workers=options.upload_workers, budget=budget
    ) as xnat:
        # Scripts are compiled (and the server's fetched) before a file is read.
        checks = level != "none" or resume
        resolved = (
            resolve(anonymize, target=target, xnat=xnat, transport="rest", server_side=checks)
            if anonymize is not None
            else None
        )
        plan, existing = plan_with_preflight(
            xnat,
            source,
            target,
            num_batches=options.num_batches,
            allow_multiple_studies=allow_multiple_studies,
            progress_callback=progress_callback,
            skip_unreadable=skip_unreadable,
        )
        with (
            plan.inventory,
            open_journal(
                journal,
                server=config.server,
                target=target,
                files=plan.inventory.files,
                transport="rest",
            ) as log,
        ):
            view, applied = apply_scripts(
                plan.inventory, resolved, log, resume=resume, progress_callback=progress_callback
            )
            if applied is not None:
                plan = plan_inventory(
                    view,
                    num_batches=options.num_batches,
                    allow_multiple_studies=allow_multiple_studies,
                )
            if options.adaptive_workers:  # auto sends smaller batches (RestOptions.batches_for)
                plan = plan.with_batches(options.batches_for(len(plan.inventory.files)))
            run = _RestRun(xnat, plan, target, options, log, progress_callback, started, applied)
            return run.run(existing, resume=resume, level=level)


class _RestRun:
    """One REST upload after planning: choose, send, commit, verify, record."""

    def __init__(
        self,
        xnat: XnatSession,
        plan: UploadPlan,
        target: Target,
        options: RestOptions,
        journal: Journal | None,
        progress_callback: ProgressCallback | None,
        started: float,
        applied: Applied | None = None,
    ) -> None:
        self.xnat = xnat
        self.applied = applied
        self.plan = plan
        self.files = plan.inventory.files
        self.target = target
        self.options = options
        self.journal = journal
        self.progress_callback = progress_callback
        self.started = started

    def run(
        self, existing: list[ServerFile] | None, *, resume: bool, level: VerifyLevel
    ) -> UploadResult:
        batches, present, adopted, overwrite = self.choose(existing, resume)
        inventory = self.plan.inventory
        result = UploadResult(
            success=False,
            total_files=len(self.files),
            total_size_mb=inventory.total_bytes / 1e6,
            duration=0.0,
            skipped=list(inventory.skipped),
            already_present=len(present),
            present=present,
            resumed=resume,
            journal_path=str(self.journal.path) if self.journal is not None else None,
            files=list(self.files),
        )
        if self.journal is not None:
            self.journal.start_run(resume=resume, total=len(self.files))
        if self.options.import_handler == "gradual-DICOM":
            # One request per instance: every file is its own batch.
            batches = [
                Batch(index=i, files=(f,))
                for i, f in enumerate(f for b in batches for f in b.files)
            ]
        result.sent_batches = list(batches)
        sent = self.send_all(result, batches)
        for o in sent.outcomes:
            if not o.success:
                result.errors.append(f"batch {o.index + 1} ({o.files} files): {o.error}")
        uris: list[str] = []
        for uri in [u for o in sent.outcomes for u in o.uris] + [p.url for p in adopted]:
            if uri not in uris:
                uris.append(uri)
        result.prearchive_uris = uris
        if resume and not batches and not adopted and existing is not None:
            result.nothing_to_send = True
        if uris:
            self.commit(result, uris, overwrite)
        elif batches:
            result.errors.append("no batch reached the server; nothing was committed")
        if level != "none" and (uris or existing is not None):
            self.verify(result, deep=level == "deep")
        result.duration = time.monotonic() - self.started
        result.success = not result.errors
        if self.journal is not None:
            self.journal.record_done(
                ok=result.success,
                matched=result.verification.matched if result.verification is not None else 0,
                expected=len(self.files),
            )
        emit(self.progress_callback, done_event(result, batches))
        return result

    def choose(
        self, existing: list[ServerFile] | None, resume: bool
    ) -> tuple[list[Batch], dict[str, str], list[PrearchiveSession], Overwrite]:
        """What to send: batches, what is already there (path -> why), sessions to commit,
        and the overwrite mode of the commit."""
        options, target, files = self.options, self.target, self.files
        state = self.journal.state if self.journal is not None else JournalState()
        if resume:
            holdings = gather_holdings(
                self.xnat, files, project=target.project, session=target.session, archived=existing
            )
            todo, present = resume_todo(files, holdings, state.confirmed)
            logger.info(
                "resuming: %d of %d instances are confirmed on the server; sending %d",
                len(present),
                len(files),
                len(todo),
            )
            # Part of the session may already be archived: the commit then appends.
            overwrite: Overwrite = (
                "append"
                if existing is not None and options.overwrite == "none"
                else options.overwrite
            )
            return self.batches(todo), present, holdings.sessions, overwrite
        if options.overwrite == "none" and self.journal is not None:
            refuse_rerun(
                state,
                transport="rest",
                target=str(target),
                files=len(files),
                journal_path=str(self.journal.path),
            )
        if existing is None:
            return self.plan.batches, {}, [], options.overwrite
        if options.direct_archive:
            raise InputError(
                f"session {target.session} already exists in {target.project}; Direct-Archive "
                "only works for new sessions: drop --direct-archive and use --overwrite append "
                "or delete"
            )
        if options.overwrite == "none":
            earlier = " and this upload completed earlier" if state.complete else ""
            raise InputError(
                f"session {target.session} already exists in {target.project}{earlier}; use "
                "--resume to check it and send anything missing, --overwrite append to add the "
                "missing instances or --overwrite delete to replace files"
            )
        if options.overwrite == "append":
            held = archived_holdings(self.xnat, files, existing)
            todo, present = resume_todo(files, ServerHoldings(archived=held), set())
            if present:
                logger.info(
                    "%d instances are already in the session; not sending them", len(present)
                )
            return self.batches(todo), present, [], "append"
        return self.plan.batches, {}, [], options.overwrite

    def batches(self, todo: list[DicomFile]) -> list[Batch]:
        """Re-cut the batches for a subset of the inventory."""
        return plan_batches(todo, self.options.batches_for(len(todo))) if todo else []

    def send_all(self, result: UploadResult, batches: list[Batch]) -> BatchRun:
        """Send ``batches``, count what XNAT acknowledged into ``result``, and close the
        uploading phase with one event that says what the summary will say (the same bytes,
        batches and seconds, so the bar ends on the summary's rate)."""
        started = time.monotonic()
        sent = self.send(batches)
        result.send_duration = time.monotonic() - started
        _tally(result, sent)
        if sent.cancelled:
            result.duration = time.monotonic() - self.started
            raise UploadCancelled(
                f"interrupted: {result.files_sent} of {sum(len(b.files) for b in batches)} "
                f"instances were sent in {result.batches_succeeded} of {len(batches)} batches "
                "acknowledged by XNAT; nothing was committed. Run the same command again with "
                "--resume to send the rest",
                result,
            )
        if batches:
            emit(
                self.progress_callback,
                ProgressEvent(
                    "uploading",
                    result.batches_succeeded,
                    len(batches),
                    "sent",
                    bytes_sent=result.bytes_sent,
                    bytes_total=sum(b.total_bytes for b in batches),
                    retries=result.retries,
                    elapsed=result.send_duration,
                    failed=result.batches_failed,
                ),
            )
        return sent

    def send(self, batches: list[Batch]) -> BatchRun:
        journal = self.journal

        def confirmed(batch: Batch, outcome: BatchOutcome) -> None:
            if journal is not None:
                journal.record_sent(
                    [f.sop_instance_uid for f in batch.files], batch=batch.index, uris=outcome.uris
                )

        return send_batches(
            self.xnat,
            self.plan.inventory,
            batches,
            options=self.options,
            project=self.target.project,
            subject=self.target.subject,
            session=self.target.session,
            progress_callback=self.progress_callback,
            on_batch=confirmed,
            prevent_anon=self.applied is not None and self.applied.prevent_anon,
        )

    def commit(self, result: UploadResult, uris: list[str], overwrite: Overwrite) -> None:
        emit(self.progress_callback, ProgressEvent("committing", 0, len(uris), "archiving"))
        t = self.target
        for uri in uris:
            try:
                result.archive_uri = commit(
                    self.xnat,
                    uri,
                    t.project,
                    t.subject,
                    t.session,
                    overwrite,
                    self.options.direct_archive,
                )
                if self.journal is not None:
                    self.journal.record_commit(result.archive_uri)
            except ServerResponseError as exc:
                result.errors.append(f"commit of {uri} failed: {exc.message}")
        emit(self.progress_callback, ProgressEvent("committing", len(uris), len(uris), "archived"))

    def verify(self, result: UploadResult, *, deep: bool) -> None:
        files = self.files
        emit(
            self.progress_callback,
            ProgressEvent("verifying", 0, len(files), "checking the session's files"),
        )
        report = verify(
            self.xnat,
            files,
            self.target,
            wait=_VERIFY_WAIT,
            poll_interval=_VERIFY_POLL,
            progress_callback=self.progress_callback if deep else None,
            content=content_check(self.plan.inventory.source, self.applied, deep=deep),
        )
        result.verify_report = report
        comp = report.comparison if report.comparison is not None else compare(files, [])
        result.verification = comp
        result.errors += comp.problems()
        emit(
            self.progress_callback, ProgressEvent("verifying", comp.matched, len(files), "checked")
        )


def done_event(result: UploadResult, batches: list[Batch]) -> ProgressEvent:
    """The last event of an upload: files and bytes this run sent of those it had to send, and
    the seconds of the whole run."""
    return ProgressEvent(
        "done",
        result.files_sent,
        sum(len(b.files) for b in batches),
        "done" if result.success else "incomplete",
        bytes_sent=result.bytes_sent,
        bytes_total=sum(b.total_bytes for b in batches),
        retries=result.retries,
        elapsed=result.duration,
        failed=result.files_failed,
    )


def _tally(result: UploadResult, run: BatchRun) -> None:
    result.batches = run.outcomes
    result.batches_succeeded = sum(1 for o in run.outcomes if o.success)
    result.batches_failed = sum(1 for o in run.outcomes if not o.success)
    result.files_sent = sum(o.files for o in run.outcomes if o.success)
    result.bytes_sent = sum(o.bytes for o in run.outcomes if o.success)
    result.retries = run.retries
    result.adaptive = run.adaptive
