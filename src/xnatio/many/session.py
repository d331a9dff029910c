"""One session of a run: its settings, its inventory, its upload, its outcome.

The same code runs a session in the submitting process and in a Dask worker. The upload itself
is :func:`xnatio.upload.rest_flow.run_rest` or :func:`xnatio.upload.dicom_flow.run_dicom`, with
the run's shared XNAT session and connection budget, the session's own journal and
verification. Whatever goes wrong in one session becomes its outcome, never an exception: the
other sessions carry on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from xnatio.budget import BudgetClosed, ConnectionBudget
from xnatio.config import XnatConfig
from xnatio.errors import AuthenticationError, InputError, XnatioError
from xnatio.inventory import Inventory, build_inventory
from xnatio.many.gathered import gathered_inventory
from xnatio.many.outcome import SessionOutcome
from xnatio.many.spec import SessionSpec, Transport
from xnatio.options import DicomOptions, Overwrite, RestOptions
from xnatio.plan import UploadPlan, plan_inventory
from xnatio.progress import ProgressCallback
from xnatio.result.outcome import (
    DicomStoreCancelled,
    DicomStoreResult,
    UploadCancelled,
    UploadResult,
)
from xnatio.transport.dicom_store import InstanceOutcome
from xnatio.upload.anonymize import Anonymization
from xnatio.upload.dicom_flow import run_dicom
from xnatio.upload.rest_flow import run_rest
from xnatio.upload.steps import Target
from xnatio.verify import VerifyLevel
from xnatio.xnat.session import XnatSession

__all__ = ["ManyOptions", "Prepared", "SessionRun", "prepare", "run_session"]

logger = logging.getLogger(__name__)
_MAX_ERRORS = 20


@dataclass(frozen=True)
class ManyOptions:
    """The settings of a run of many sessions (a manifest row's own settings win).

    Attributes
    ----------
    transport
        ``rest`` or ``dicom-store``.
    rest
        REST settings for every session (``num_batches`` and ``upload_workers`` are per session;
        the budget caps the total).
    dicom
        C-STORE settings (receiver, AE titles, associations per session); required for
        ``dicom-store`` sessions.
    max_connections
        HTTP connections and DICOM associations open to the server at once, for the whole run.
    max_sessions
        Sessions uploading at once.
    verify
        Verify each session after sending (``True``/``"listing"``, ``"deep"``, or off).
    resume
        Send only what earlier runs did not deliver; sessions the server holds complete are
        checked and not sent again.
    fail_fast
        Stop at the first failed session (the sessions in flight are interrupted).
    allow_multiple_studies
        Accept sources holding several studies.
    anonymize
        De-identify every session's files before they are sent (a manifest row's
        ``anonymize`` column replaces its scripts, keeping its profile and variables).
    """

    transport: Transport = "rest"
    rest: RestOptions = field(
        default_factory=lambda: RestOptions(num_batches=12, upload_workers=12)
    )
    dicom: DicomOptions | None = None
    max_connections: int = 12
    max_sessions: int = 4
    verify: bool | VerifyLevel = True
    resume: bool = False
    fail_fast: bool = False
    allow_multiple_studies: bool = False
    anonymize: Anonymization | None = None

    def check(self) -> None:
        """Raise :class:`~xnatio.errors.InputError` for settings that cannot work."""
        if self.max_connections < 1:
            raise InputError("--max-connections must be at least 1")
        if self.max_sessions < 1:
            raise InputError("--max-sessions must be at least 1")
        self.rest.check()
        if self.dicom is not None:
            self.dicom.check()

    def transport_for(self, spec: SessionSpec) -> Transport:
        """The session's transport."""
        return spec.transport or self.transport

    def multiple_for(self, spec: SessionSpec) -> bool:
        """Whether the session may hold several studies."""
        if spec.allow_multiple_studies is not None:
            return spec.allow_multiple_studies
        return self.allow_multiple_studies

    def anonymize_for(self, spec: SessionSpec) -> Anonymization | None:
        """The session's de-identification: the run's, or the manifest row's scripts."""
        if spec.anonymize is None:
            return self.anonymize
        named = spec.anonymize in ("server", "none")
        scripts = spec.anonymize if named else Path(spec.anonymize)
        anon = dataclasses.replace(self.anonymize or Anonymization(), scripts=scripts)
        return anon if anon.active else None

    def rest_for(self, spec: SessionSpec, action: str) -> RestOptions:
        """The session's REST settings: the run's, with the manifest row's on top."""
        changes: dict[str, object] = {
            name: getattr(spec, name)
            for name in ("num_batches", "upload_workers", "archive_format", "import_handler")
            if getattr(spec, name) is not None
        }
        overwrite: Overwrite = spec.overwrite or self.rest.overwrite
        if action == "append":
            overwrite = "append"
        elif action == "replace":
            overwrite = "delete"
        changes["overwrite"] = overwrite
        if spec.direct_archive is not None:
            changes["direct_archive"] = spec.direct_archive
        return dataclasses.replace(self.rest, **changes)  # type: ignore[arg-type]

    def dicom_for(self) -> DicomOptions:
        """The C-STORE settings (an InputError when the run has none)."""
        if self.dicom is None:
            raise InputError("a dicom-store session needs the receiver: give --dicom-host")
        return self.dicom


#: A session's inventory read ahead of its upload: a REST plan or a C-STORE inventory.
Prepared = UploadPlan | Inventory


def prepare(spec: SessionSpec, options: ManyOptions) -> Prepared:
    """Read the session's source (headers only) and cut its batches.

    Raises
    ------
    InputError
        Missing source, no DICOM files, several studies when not allowed.
    """
    if spec.gathered is not None:
        inventory = gathered_inventory(spec.gathered)
    else:
        inventory = build_inventory(spec.source)
    if options.transport_for(spec) == "dicom-store":
        return inventory
    return plan_inventory(
        inventory,
        num_batches=options.rest_for(spec, "upload").batches_for(len(inventory.files)),
        allow_multiple_studies=options.multiple_for(spec),
    )


def _close(prepared: Prepared | None) -> None:
    if isinstance(prepared, UploadPlan):
        prepared.inventory.close()
    elif prepared is not None:
        prepared.close()


def _from_rest(outcome: SessionOutcome, result: UploadResult) -> None:
    outcome.files_sent = result.files_sent
    outcome.bytes_sent = result.bytes_sent
    outcome.already_present = result.already_present
    outcome.journal = result.journal_path
    if result.verification is not None:
        outcome.verified = result.verification.ok and not result.errors
        outcome.matched = result.verification.matched
    outcome.errors = result.errors[:_MAX_ERRORS]
    outcome.status = "landed" if result.success else "failed"


def _from_dicom(outcome: SessionOutcome, result: DicomStoreResult) -> None:
    outcome.files_sent = result.sent
    outcome.bytes_sent = result.bytes_sent
    outcome.already_present = len(result.present)
    outcome.journal = result.journal_path
    report = result.verification
    errors = list(result.errors)
    if report is not None:
        outcome.verified = report.ok
        if report.comparison is not None:
            outcome.matched = report.comparison.matched
        if not report.ok:
            errors.append(report.where)
    outcome.errors = errors[:_MAX_ERRORS]
    outcome.status = "landed" if result.success else "failed"


@dataclass
class SessionRun:
    """Everything one session's upload shares with the rest of the run.

    Attributes
    ----------
    options, config
        The run's settings and server.
    client
        The run's XNAT session (one login for all sessions of this process).
    budget
        The run's connection budget.
    stop
        Set when the run stops (Ctrl-C, ``--fail-fast``): a C-STORE send ends after the
        instances in flight; REST requests are refused by the closed budget.
    worker
        Where this runs, for the report.
    """

    options: ManyOptions
    config: XnatConfig
    client: XnatSession
    budget: ConnectionBudget
    stop: threading.Event = field(default_factory=threading.Event)
    worker: str = "local"


def run_session(
    run: SessionRun,
    spec: SessionSpec,
    action: str,
    *,
    prepared: Prepared | None = None,
    progress: ProgressCallback | None = None,
) -> SessionOutcome:
    """Upload one session and say what happened; only Ctrl-C and an authentication failure
    escape (the latter as :class:`~xnatio.errors.AuthenticationError`, which ends the run)."""
    options = run.options
    kind = options.transport_for(spec)
    outcome = SessionOutcome(
        spec.key,
        spec.project,
        spec.subject,
        spec.session,
        origin=spec.origin,
        transport=kind,
        started=time.time(),
        worker=run.worker,
        attempts=1,
    )
    try:
        if prepared is None:
            prepared = prepare(spec, options)
        inventory = prepared.inventory if isinstance(prepared, UploadPlan) else prepared
        outcome.files = len(inventory.files)
        outcome.bytes = inventory.total_bytes
        outcome.sending = time.time()
        _upload(run, spec, action, prepared, progress, outcome)
    except AuthenticationError:
        raise
    except (BudgetClosed, UploadCancelled, DicomStoreCancelled) as exc:
        outcome.status = "interrupted"
        outcome.errors = [f"interrupted: {exc.message}"]
        if isinstance(exc, UploadCancelled | DicomStoreCancelled):
            outcome.files_sent = getattr(exc.result, "files_sent", 0) or getattr(
                exc.result, "sent", 0
            )
    except XnatioError as exc:
        outcome.status = "failed"
        outcome.errors = [exc.message]
    except Exception as exc:  # a bug in one session must not end the others
        logger.exception("session %s failed", spec.key)
        outcome.status = "failed"
        outcome.errors = [f"internal error: {type(exc).__name__}: {exc}"]
    finally:
        _close(prepared)
        outcome.finished = time.time()
    return outcome


def _upload(
    run: SessionRun,
    spec: SessionSpec,
    action: str,
    prepared: Prepared,
    progress: ProgressCallback | None,
    outcome: SessionOutcome,
) -> None:
    options = run.options
    target = Target(spec.project, spec.subject, spec.session)
    resume = action == "resume"
    if isinstance(prepared, UploadPlan):
        result = run_rest(
            prepared,
            target,
            options.rest_for(spec, action),
            run.config,
            verify_after=options.verify,
            journal=True,
            resume=resume,
            allow_multiple_studies=options.multiple_for(spec),
            progress_callback=progress,
            client=run.client,
            budget=run.budget,
            anonymize=options.anonymize_for(spec),
        )
        _from_rest(outcome, result)
        return

    def stop_check(_: InstanceOutcome) -> None:
        if run.stop.is_set():
            raise BudgetClosed("the run was stopped")

    dicom = run_dicom(
        prepared,
        target,
        options.dicom_for(),
        run.config,
        verify_after=options.verify,
        journal=True,
        resume=resume,
        echo=True,
        allow_multiple_studies=options.multiple_for(spec),
        progress_callback=progress,
        on_instance=stop_check,
        client=run.client,
        budget=run.budget,
        anonymize=options.anonymize_for(spec),
    )
    _from_dicom(outcome, dicom)
