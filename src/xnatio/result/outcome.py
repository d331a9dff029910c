"""The results of an upload, one per transport, and the exceptions that carry them on Ctrl-C.

Per-file outcomes are data (a :class:`~xnatio.transport.rest.BatchOutcome` per batch, an
:class:`~xnatio.transport.dicom_store.InstanceOutcome` per instance); only session-level failures
raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xnatio.errors import XnatioError
from xnatio.inventory import DicomFile, SkippedFile
from xnatio.plan import Batch

if TYPE_CHECKING:  # annotations only: a C-STORE run loads neither the HTTP stack nor the checks
    from xnatio.transport.dicom_store import InstanceOutcome, StoreRun
    from xnatio.transport.rest import BatchOutcome
    from xnatio.verify import Comparison, VerifyReport

__all__ = [
    "DicomStoreCancelled",
    "DicomStoreResult",
    "UploadCancelled",
    "UploadResult",
    "dicom_store_result",
    "send_rate",
]


class UploadCancelled(XnatioError):
    """The upload was stopped by the user (Ctrl-C); ``result`` says what was sent."""

    exit_code = 130

    def __init__(self, message: str, result: UploadResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class UploadResult:
    """Outcome of :func:`upload_dicom_parallel_rest`.

    ``duration`` (also ``total_duration``) is the whole run; ``send_duration`` the seconds from
    the first batch sent to the last answer, over which ``send_rate`` counts this run's bytes
    (the rate the progress bar and the summary show). ``sent_batches`` holds the
    batches of this run (their files), ``present`` the inventory paths not sent because the
    server already held them (path -> why), ``nothing_to_send`` is True when a re-run found
    everything in place, ``journal_path`` names the upload's journal, and ``adaptive`` says what
    ``--compress auto``, ``--upload-workers auto`` and ``--bwlimit`` did (one line each).
    """

    success: bool
    total_files: int
    total_size_mb: float
    duration: float
    errors: list[str] = field(default_factory=list)
    batches_succeeded: int = 0
    batches_failed: int = 0
    batches: list[BatchOutcome] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    already_present: int = 0
    files_sent: int = 0
    bytes_sent: int = 0
    retries: int = 0
    prearchive_uris: list[str] = field(default_factory=list)
    archive_uri: str | None = None
    verification: Comparison | None = None
    sent_batches: list[Batch] = field(default_factory=list)
    present: dict[str, str] = field(default_factory=dict)
    resumed: bool = False
    nothing_to_send: bool = False
    journal_path: str | None = None
    verify_report: VerifyReport | None = None
    files: list[DicomFile] = field(default_factory=list, repr=False)
    adaptive: dict[str, str] = field(default_factory=dict)
    send_duration: float = 0.0

    @property
    def total_duration(self) -> float:
        """Seconds for the whole upload (the same as :attr:`duration`)."""
        return self.duration

    @property
    def files_failed(self) -> int:
        """Instances of this run in batches that failed."""
        return sum(b.files for b in self.batches if not b.success)

    @property
    def send_rate(self) -> float:
        """This run's file bytes per second of sending (:func:`send_rate`)."""
        return send_rate(self.bytes_sent, self.send_duration)

    @property
    def throughput_mb_s(self) -> float:
        """:attr:`send_rate` in megabytes (10^6 bytes) per second."""
        return self.send_rate / 1e6


@dataclass(frozen=True, slots=True)
class DicomStoreResult:
    """The outcome of :func:`send_dicom_store`.

    Attributes
    ----------
    success
        True when every instance was stored (with or without a warning).
    total_files
        Instances in the inventory.
    sent
        Instances the receiver accepted (status success or warning).
    warned
        Of :attr:`sent`, those accepted with a warning status.
    failed
        Instances not stored (failure status, refused context, or never answered).
    duration
        Seconds from the C-ECHO to the end of the last association (also ``send_duration``).
    bytes_sent
        File bytes of the accepted instances.
    errors
        One line per problem, for display.
    outcomes
        One :class:`InstanceOutcome` per instance, in inventory order.
    associations
        Associations opened for sending (the C-ECHO's not counted).
    present
        Inventory paths not sent because the server (or the journal) already confirmed them,
        with the reason.
    skipped
        Files of the source that are not sent (not DICOM, hidden, duplicates), with the reason.
    files
        The inventory's instances (for reports).
    nothing_to_send
        True when a resume found every instance already delivered.
    journal_path
        The upload's journal, if one was kept.
    verification
        The check of the XNAT session after sending, when a server was given (also
        ``verify_report``).
    total_duration
        Seconds for the whole upload: the scan, the send, the wait for XNAT to build and
        archive the session, and the check.

    The names both results share (:class:`UploadResult` has the same): ``files_sent``,
    ``files_failed``, ``already_present``, ``send_duration``, ``total_duration``,
    ``send_rate`` and ``verify_report`` are properties over the fields above.
    """

    success: bool
    total_files: int
    sent: int
    warned: int
    failed: int
    duration: float
    bytes_sent: int
    errors: list[str] = field(default_factory=list)
    outcomes: list[InstanceOutcome] = field(default_factory=list)
    associations: int = 0
    present: dict[str, str] = field(default_factory=dict)
    nothing_to_send: bool = False
    journal_path: str | None = None
    verification: VerifyReport | None = None
    skipped: list[SkippedFile] = field(default_factory=list)
    files: list[DicomFile] = field(default_factory=list, repr=False)
    total_duration: float = 0.0

    @property
    def files_sent(self) -> int:
        """Instances stored (:attr:`sent`), the name :class:`UploadResult` uses."""
        return self.sent

    @property
    def files_failed(self) -> int:
        """Instances not stored (:attr:`failed`)."""
        return self.failed

    @property
    def already_present(self) -> int:
        """Instances not sent because the server or the journal already confirmed them."""
        return len(self.present)

    @property
    def send_duration(self) -> float:
        """Seconds of sending (:attr:`duration`)."""
        return self.duration

    @property
    def send_rate(self) -> float:
        """This run's file bytes per second of sending (:func:`send_rate`)."""
        return send_rate(self.bytes_sent, self.duration)

    @property
    def verify_report(self) -> VerifyReport | None:
        """The check of the XNAT session (:attr:`verification`)."""
        return self.verification


def send_rate(bytes_sent: int, seconds: float) -> float:
    """The one rate of an upload: file bytes sent by this run over the seconds of sending.

    The progress bar, the summary line and ``--json`` all use it; bytes the server already
    held (a resume) and the time spent scanning, committing, waiting and verifying are left
    out. 0.0 when nothing was sent.
    """
    return bytes_sent / seconds if bytes_sent > 0 and seconds > 0 else 0.0


class DicomStoreCancelled(XnatioError):
    """The send was stopped by the user (Ctrl-C); ``result`` says what was stored."""

    exit_code = 130

    def __init__(self, message: str, result: DicomStoreResult) -> None:
        super().__init__(message)
        self.result = result


def dicom_store_result(files: Sequence[DicomFile], run: StoreRun) -> DicomStoreResult:
    """Summarise a C-STORE run: counts, bytes and one error line per failure (refusals grouped).

    Parameters
    ----------
    files
        The instances sent, in the order of ``run.outcomes``.
    run
        What :func:`~xnatio.transport.dicom_store.store_instances` returned.
    """
    from xnatio.transport.dicom_store import REFUSED

    outcomes = run.outcomes
    duration = run.duration
    sent = sum(o.category != "failure" for o in outcomes)
    warned = sum(o.category == "warning" for o in outcomes)
    failed = len(outcomes) - sent
    errors: list[str] = []
    refused: dict[str, list[str]] = {}
    for o in outcomes:
        if o.category == "warning":
            continue
        if o.category == "failure":
            if o.meaning.startswith(REFUSED):
                refused.setdefault(o.meaning, []).append(o.path)
                continue
            status = f"0x{o.status:04X} {o.meaning}" if o.status is not None else o.meaning
            extra = f" ({o.comment})" if o.comment else ""
            tries = f" after {o.attempts} attempt(s)" if o.attempts else ""  # 0: never sent
            errors.append(f"{o.path}: {status}{extra}{tries}")
    for reason, paths in refused.items():
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        errors.append(f"{len(paths)} file(s) {reason.removeprefix('not sent: ')}: {shown}")
    return DicomStoreResult(
        success=failed == 0,
        total_files=len(outcomes),
        sent=sent,
        warned=warned,
        failed=failed,
        duration=duration,
        bytes_sent=sum(
            f.size for f, o in zip(files, outcomes, strict=True) if o.category != "failure"
        ),
        errors=errors,
        outcomes=outcomes,
        associations=run.associations,
    )
