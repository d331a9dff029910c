"""Parallel REST upload through XNAT's import service (``POST /data/services/import``).

The session is cut into byte-balanced batches. Each batch is streamed as a tar or zip straight into
the request body, with an exact Content-Length, by a pool of upload workers that share one login.
Every batch goes to the prearchive with ``prevent_auto_commit=true`` under the same project, subject
and session labels, so XNAT gathers them in one prearchive session; one commit then archives it with
the chosen overwrite mode, and the session's file listing is checked against the inventory
(``xnat-server-behaviour.md`` §3.3, §3.6-§3.9, §9, §11). With ``direct_archive`` the batches use
Direct-Archive instead and the archive is triggered once every batch is in.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from xnatio.config import XnatConfig, normalise_server
from xnatio.errors import InputError, ServerResponseError, XnatioError
from xnatio.inventory import DicomFile, Inventory, SkippedFile, build_inventory
from xnatio.plan import Batch, check_inventory, entry_name, plan_batches, validate_label
from xnatio.progress import ProgressCallback, ProgressEvent, emit
from xnatio.result.journal import Journal, JournalKey, JournalState
from xnatio.transport.bodies import ArchiveError, ArchiveMember, make_body
from xnatio.verify import (
    Comparison,
    PrearchiveSession,
    ServerFile,
    compare,
    experiment_path,
    find_prearchive_sessions,
    list_prearchive_files,
    list_session_files,
    present_names,
    scan_id_for,
    stored_name,
    template_name,
)
from xnatio.xnat.session import XnatSession, error_message

__all__ = [
    "BatchOutcome",
    "UploadCancelled",
    "UploadPlan",
    "UploadResult",
    "list_session_files",
    "plan_upload",
    "upload_dicom_parallel_rest",
]

logger = logging.getLogger(__name__)

Overwrite = Literal["none", "append", "delete"]
ArchiveFormat = Literal["tar", "zip"]
ImportHandler = Literal["DICOM-zip", "gradual-DICOM"]

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_PREARC_URI = re.compile(r"^/data/prearchive/projects/([^/]+)/([^/]+)/([^/]+)$")
_DA_URI = re.compile(r"^/xapi/direct-archive/([^/]+)/([^/]+)/([^/]+)$")


class UploadCancelled(XnatioError):
    """The upload was stopped by the user (Ctrl-C); ``result`` says what was sent."""

    exit_code = 130

    def __init__(self, message: str, result: UploadResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What happened to one batch.

    Attributes
    ----------
    index
        Batch number (0-based).
    files, bytes
        Instances and payload bytes in the batch.
    success
        True when the server accepted the batch and named the expected session.
    attempts
        Requests made for the batch.
    uris
        Session URIs the server returned.
    error
        Why the batch failed, if it did.
    duration
        Seconds from the first request to the final answer.
    """

    index: int
    files: int
    bytes: int
    success: bool
    attempts: int
    uris: tuple[str, ...] = ()
    error: str | None = None
    duration: float = 0.0


@dataclass
class UploadResult:
    """Outcome of :func:`upload_dicom_parallel_rest`.

    ``total_size_mb / duration`` is the throughput the user sees. ``sent_batches`` holds the
    batches of this run (their files), ``present`` the inventory paths not sent because the
    server already held them (path -> why), ``nothing_to_send`` is True when a re-run found
    everything in place, and ``journal_path`` names the upload's journal.
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
    files: list[DicomFile] = field(default_factory=list, repr=False)

    @property
    def throughput_mb_s(self) -> float:
        """Payload megabytes per second over the whole run."""
        return self.total_size_mb / self.duration if self.duration > 0 else 0.0


@dataclass(frozen=True)
class UploadPlan:
    """What an upload would send (``--dry-run``)."""

    inventory: Inventory
    batches: list[Batch]
    studies: dict[str, int]
    series: dict[str, int]


def plan_upload(
    source_dir: str | Path,
    *,
    project: str,
    subject: str,
    session: str,
    num_batches: int = 42,
    allow_multiple_studies: bool = False,
    progress_callback: ProgressCallback | None = None,
) -> UploadPlan:
    """Scan ``source_dir`` and cut it into batches, sending nothing.

    Parameters
    ----------
    source_dir
        A folder (searched recursively) or a ``.zip``, ``.tar``, ``.tar.gz``/``.tgz`` file.
    project, subject, session
        Target labels, checked against XNAT's ``[A-Za-z0-9_-]`` rule.
    num_batches
        How many byte-balanced batches to cut (never more than there are files).
    allow_multiple_studies
        Accept a source holding several StudyInstanceUIDs.
    progress_callback
        Receives ``scanning`` events while headers are read.

    Returns
    -------
    UploadPlan
        The inventory (its source stays open: close it, or hand the plan to
        :func:`upload_dicom_parallel_rest`, which does), the batches, and file counts per study
        and per scan.

    Raises
    ------
    InputError
        Bad labels, no DICOM files, several studies (unless allowed), conflicting duplicates.
    """
    for kind, value in (("project", project), ("subject", subject), ("session", session)):
        validate_label(kind, value)
    if num_batches < 1:
        raise InputError("--num-batches must be at least 1")

    def scan_progress(done: int, total: int) -> None:
        emit(progress_callback, ProgressEvent("scanning", done, total, "reading DICOM headers"))

    inventory = build_inventory(source_dir, progress=scan_progress)
    try:
        inventory = check_inventory(inventory, allow_multiple_studies=allow_multiple_studies)
        batches = plan_batches(inventory.files, num_batches)
    except BaseException:
        inventory.source.close()
        raise
    studies: dict[str, int] = {}
    series: dict[str, int] = {}
    for f in inventory.files:
        studies[f.study_instance_uid] = studies.get(f.study_instance_uid, 0) + 1
        series[scan_id_for(f)] = series.get(scan_id_for(f), 0) + 1
    return UploadPlan(inventory=inventory, batches=batches, studies=studies, series=series)


class _Progress:
    """Thread-safe byte and batch counters that turn into progress events."""

    def __init__(self, callback: ProgressCallback | None, total_batches: int, bytes_total: int):
        self.callback = callback
        self.total_batches = total_batches
        self.bytes_total = bytes_total
        self.batches_done = 0
        self.retries = 0
        self._attempt_bytes: dict[int, int] = {}
        self._done_bytes = 0
        self._lock = threading.Lock()
        self._last_emit = 0.0

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return self._done_bytes + sum(self._attempt_bytes.values())

    def add(self, batch: int, n: int) -> None:
        with self._lock:
            self._attempt_bytes[batch] = self._attempt_bytes.get(batch, 0) + n
            now = time.monotonic()
            if now - self._last_emit < 0.1:
                return
            self._last_emit = now
        self.emit(f"sending batch {batch + 1}", batch)

    def restart(self, batch: int) -> None:
        """A batch is being re-sent: its bytes count again from zero."""
        with self._lock:
            self._attempt_bytes[batch] = 0
            self.retries += 1

    def finish(self, batch: int, success: bool) -> None:
        with self._lock:
            sent = self._attempt_bytes.pop(batch, 0)
            if success:
                self._done_bytes += sent
            self.batches_done += 1
        self.emit(f"batch {batch + 1} {'done' if success else 'failed'}", batch)

    def emit(self, message: str, batch: int | None = None) -> None:
        emit(
            self.callback,
            ProgressEvent(
                "uploading",
                self.batches_done,
                self.total_batches,
                message,
                bytes_sent=self.bytes_sent,
                bytes_total=self.bytes_total,
                batch=batch,
                retries=self.retries,
            ),
        )


class _CancellableBody:
    """A re-iterable request body that stops between chunks once ``cancel`` is set."""

    def __init__(self, inner: object, cancel: threading.Event) -> None:
        self._inner = inner
        self._cancel = cancel

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:  # type: ignore[attr-defined]
            if self._cancel.is_set():
                raise _Cancelled
            yield chunk


class _Cancelled(Exception):
    pass


def _backoff(attempt: int, retry_after: str | None = None) -> float:
    """Exponential backoff with full jitter, honouring a Retry-After in seconds."""
    if retry_after and retry_after.strip().isdigit():
        return min(120.0, float(retry_after.strip()))
    cap = min(60.0, 1.0 * 2 ** (attempt - 1))
    return random.uniform(cap / 2, cap)


def _import_params(
    project: str, subject: str, session: str, *, handler: str, direct_archive: bool
) -> dict[str, str]:
    params = {
        "import-handler": handler,
        "PROJECT_ID": project,
        "SUBJECT_ID": subject,
        "EXPT_LABEL": session,
        "rename": "false",
    }
    if handler == "DICOM-zip":
        params["inbody"] = "true"  # gradual-DICOM sends multipart, to name each file
    if direct_archive:
        params["Direct-Archive"] = "true"
    else:
        # Keep XNAT's idle-time rebuilder away until the single explicit commit.
        params["prevent_auto_commit"] = "true"
    return params


def _check_uris(
    lines: Sequence[str], project: str, session: str, direct_archive: bool
) -> str | None:
    """Return why the URIs in an import response are not the expected session, or None."""
    if not lines:
        return "the server stored nothing (empty response)"
    for uri in lines:
        pre = _PREARC_URI.match(uri)
        da = _DA_URI.match(uri)
        if pre:
            proj, _, folder = pre.groups()
            if proj == "Unassigned":
                return (
                    f"XNAT put the files in the Unassigned prearchive ({uri}): project {project} "
                    "is unknown to it or not readable by this user"
                )
            if proj != project:
                return f"XNAT put the files in project {proj} instead of {project} ({uri})"
            if folder == "dicom_upload":
                return f"XNAT ignored the session label and used dicom_upload ({uri})"
            if folder != session:
                return f"XNAT filed the files under {folder} instead of {session} ({uri})"
            if direct_archive:
                return (
                    f"Direct-Archive fell back to the prearchive ({uri}); XNAT does this when the "
                    "session already exists"
                )
        elif da:
            proj, _, label = da.groups()
            if proj != project or label != session:
                return f"XNAT filed the files under {proj}/{label} instead of {project}/{session}"
        else:
            return f"unexpected URI in the import response: {uri}"
    return None


def upload_dicom_parallel_rest(
    *,
    server: str,
    username: str,
    password: str,
    source_dir: str | Path,
    project: str,
    subject: str,
    session: str,
    verify_tls: bool | str = True,
    num_batches: int = 42,
    upload_workers: int = 42,
    archive_workers: int = 5,
    archive_format: ArchiveFormat = "tar",
    progress_callback: ProgressCallback | None = None,
    timeout: float = 10800.0,
    overwrite: Overwrite = "none",
    direct_archive: bool = False,
    import_handler: ImportHandler = "DICOM-zip",
    allow_multiple_studies: bool = False,
    verify: bool = True,
    max_attempts: int = 5,
    plan: UploadPlan | None = None,
    journal: str | Path | bool = True,
    resume: bool = False,
) -> UploadResult:
    """Upload a DICOM session to XNAT through the import service, in parallel batches.

    Parameters
    ----------
    server, username, password, verify_tls
        The XNAT server and credentials; ``verify_tls`` may be a CA bundle path.
    source_dir
        A folder (searched recursively) or a ``.zip``, ``.tar``, ``.tar.gz``/``.tgz`` file.
    project, subject, session
        Target labels (``[A-Za-z0-9_-]``). The project must exist.
    num_batches, upload_workers
        Batches to cut the session into, and how many are sent at once.
    archive_workers
        Kept for compatibility with earlier xnatio versions: archives are now streamed by the
        upload workers while they send, so there is no separate archiving pool to size.
    archive_format
        ``tar`` (default) or ``zip`` request bodies.
    progress_callback
        Receives :class:`~xnatio.progress.ProgressEvent` objects from worker threads.
    timeout
        Seconds allowed for each request.
    overwrite
        ``none``: the session must be new. ``append``: add to an existing session, sending only
        the instances it lacks. ``delete``: replace files that exist with the same name.
    direct_archive
        Use Direct-Archive (brand-new sessions only) instead of prearchive plus commit.
    import_handler
        ``DICOM-zip`` (batches) or ``gradual-DICOM`` (one request per file).
    allow_multiple_studies
        Accept a source holding several StudyInstanceUIDs.
    verify
        Compare the session's file listing with the inventory after the commit.
    max_attempts
        Requests per batch before it counts as failed (connection errors, 429, 5xx, timeouts).
    plan
        A plan from :func:`plan_upload` to reuse instead of scanning ``source_dir`` again.
    journal
        Keep a journal of the instances confirmed sent: ``True`` (default) in the user's cache
        folder (:func:`xnatio.result.journal.default_journal_dir`), a path, or ``False`` for none.
    resume
        Send only what is missing after an interrupted upload: the journal narrows the
        candidates, the server's listings (archive, and the prearchive session left uncommitted)
        confirm them; the missing batches go into the same prearchive session, which is then
        committed once (``append`` when part of the session is already archived). A completed
        upload sends nothing.

    Returns
    -------
    UploadResult
        Success is True only when every batch landed, the commit worked and (when ``verify``)
        every instance is present exactly once.

    Raises
    ------
    InputError
        Bad input found before anything was sent.
    AuthenticationError, ConnectionFailedError
        Login failed or the server was unreachable; nothing was sent.
    UploadCancelled
        Ctrl-C; carries the partial result.
    """
    del archive_workers  # see the docstring
    if overwrite not in ("none", "append", "delete"):
        raise InputError(f"--overwrite must be none, append or delete, not {overwrite!r}")
    if archive_format not in ("tar", "zip"):
        raise InputError(f"--archive-format must be tar or zip, not {archive_format!r}")
    if import_handler not in ("DICOM-zip", "gradual-DICOM"):
        raise InputError(
            f"--import-handler must be DICOM-zip or gradual-DICOM, not {import_handler!r}"
        )
    if upload_workers < 1:
        raise InputError("--upload-workers must be at least 1")
    if resume and direct_archive:
        raise InputError(
            "--resume sends the missing batches into the prearchive session left by the "
            "interrupted upload; drop --direct-archive"
        )
    config = XnatConfig(
        server=normalise_server(server), username=username, password=password, verify_tls=verify_tls
    )
    started = time.monotonic()
    log: Journal | None = None
    try:
        with XnatSession(config, timeout=timeout, max_connections=upload_workers + 4) as xnat:
            if plan is None:
                # Log in and look at the server while the headers are read: on a distant server
                # these round trips would otherwise add to the time before the first byte.
                with cf.ThreadPoolExecutor(1, thread_name_prefix="xio-preflight") as pool:
                    checks = pool.submit(_preflight, xnat, project, subject, session)
                    plan = plan_upload(
                        source_dir,
                        project=project,
                        subject=subject,
                        session=session,
                        num_batches=num_batches,
                        allow_multiple_studies=allow_multiple_studies,
                        progress_callback=progress_callback,
                    )
                    try:
                        existing = checks.result()
                    except BaseException:
                        plan.inventory.source.close()
                        raise
            else:
                try:
                    existing = _preflight(xnat, project, subject, session)
                except BaseException:
                    plan.inventory.source.close()
                    raise
            inventory = plan.inventory
            try:
                if journal is not False:
                    key = JournalKey.create(
                        server=config.server,
                        project=project,
                        subject=subject,
                        session=session,
                        files=inventory.files,
                    )
                    log = Journal.for_upload(key, None if journal is True else journal)
                return _run(
                    xnat,
                    plan,
                    existing=existing,
                    journal=log,
                    resume=resume,
                    project=project,
                    subject=subject,
                    session=session,
                    num_batches=num_batches,
                    upload_workers=upload_workers,
                    archive_format=archive_format,
                    progress_callback=progress_callback,
                    timeout=timeout,
                    overwrite=overwrite,
                    direct_archive=direct_archive,
                    import_handler=import_handler,
                    verify=verify,
                    max_attempts=max_attempts,
                    started=started,
                )
            finally:
                inventory.source.close()
    finally:
        if log is not None:
            log.close()


def _preflight(
    xnat: XnatSession, project: str, subject: str, session: str
) -> list[ServerFile] | None:
    """Log in, check the project, and list the session's files (None when it does not exist)."""
    xnat.login()
    response = xnat.request("GET", f"/data/projects/{project}", params={"format": "json"})
    if response.status_code in (403, 404):
        raise InputError(
            f"project {project} does not exist on {xnat.config.server} or {xnat.config.username} "
            "cannot read it; check the project ID (XNAT would silently file the data as Unassigned)"
        )
    xnat.check(response, f"checking project {project}")
    return list_session_files(xnat, project, subject, session)


_experiment_path = experiment_path


def _run(
    xnat: XnatSession,
    plan: UploadPlan,
    *,
    existing: list[ServerFile] | None,
    journal: Journal | None,
    resume: bool,
    project: str,
    subject: str,
    session: str,
    num_batches: int,
    upload_workers: int,
    archive_format: ArchiveFormat,
    progress_callback: ProgressCallback | None,
    timeout: float,
    overwrite: Overwrite,
    direct_archive: bool,
    import_handler: ImportHandler,
    verify: bool,
    max_attempts: int,
    started: float,
) -> UploadResult:
    inventory = plan.inventory
    files = inventory.files
    state = journal.state if journal is not None else JournalState()
    where = f" (journal {journal.path})" if journal is not None else ""
    present: dict[str, str] = {}
    adopted: list[PrearchiveSession] = []
    commit_overwrite = overwrite
    if resume:
        study_uids = {f.study_instance_uid for f in files}
        # The prearchive session an interrupted upload left uncommitted: new batches land in it
        # anyway (same project, StudyInstanceUID and label), and it must be committed.
        adopted = [
            p
            for p in find_prearchive_sessions(xnat, project, session, study_uids)
            if p.project == project
            and p.name == session
            and p.study_uid in study_uids
            and p.status.lstrip("_") not in _NOT_INTERRUPTIBLE
        ]
        todo = _resume_candidates(xnat, files, existing, adopted, state, present)
        batches = plan_batches(todo, num_batches) if todo else []
        if existing is not None and overwrite == "none":
            commit_overwrite = "append"
        logger.info(
            "resuming: %d of %d instances are confirmed on the server; sending %d",
            len(present),
            len(files),
            len(todo),
        )
    elif state.unfinished and overwrite == "none":
        raise InputError(
            f"an earlier upload of this source to {project}/{subject}/{session} did not finish"
            f"{where}, {len(state.confirmed)} of {len(files)} instances confirmed; run the same "
            "command with --resume to send only what is missing"
        )
    elif existing is not None:
        if direct_archive:
            raise InputError(
                f"session {session} already exists in {project}; Direct-Archive only works for new "
                "sessions: drop --direct-archive and use --overwrite append or delete"
            )
        if overwrite == "none":
            earlier = " and this upload completed earlier" if state.complete else ""
            raise InputError(
                f"session {session} already exists in {project}{earlier}; use --resume to check it "
                "and send anything missing, --overwrite append to add the missing instances or "
                "--overwrite delete to replace files"
            )
        if overwrite == "append":
            have = present_names(existing)
            todo = []
            for f in files:
                if (scan_id_for(f), stored_name(f)) in have or (
                    scan_id_for(f),
                    template_name(f),
                ) in have:
                    present[f.path] = "already in the archived session"
                else:
                    todo.append(f)
            if present:
                logger.info(
                    "%d instances are already in the session; not sending them", len(present)
                )
            batches = plan_batches(todo, num_batches) if todo else []
        else:
            batches = plan.batches
    else:
        batches = plan.batches
    already_present = len(present)

    result = UploadResult(
        success=False,
        total_files=len(files),
        total_size_mb=inventory.total_bytes / 1e6,
        duration=0.0,
        skipped=list(inventory.skipped),
        already_present=already_present,
        present=present,
        resumed=resume,
        journal_path=str(journal.path) if journal is not None else None,
        files=list(files),
    )
    if journal is not None:
        journal.start_run(resume=resume, total=len(files))
    if import_handler == "gradual-DICOM":
        # One request per instance: every file is its own batch.
        batches = [
            Batch(index=i, files=(f,)) for i, f in enumerate(f for b in batches for f in b.files)
        ]

    result.sent_batches = list(batches)
    progress = _Progress(progress_callback, len(batches), 0)
    bodies = [
        _make_body(
            inventory, b, archive_format, import_handler, functools.partial(progress.add, b.index)
        )
        for b in batches
    ]
    progress.bytes_total = sum(length for _, length, _ in bodies)
    cancel = threading.Event()
    outcomes: list[BatchOutcome] = []
    params = _import_params(
        project, subject, session, handler=import_handler, direct_archive=direct_archive
    )
    send = functools.partial(
        _send_batch,
        xnat,
        params=params,
        project=project,
        session=session,
        direct_archive=direct_archive,
        progress=progress,
        cancel=cancel,
        max_attempts=max_attempts,
        timeout=timeout,
    )
    if journal is not None:
        send = functools.partial(_send_and_record, send, journal)
    if batches:
        progress.emit("starting")
        pool = cf.ThreadPoolExecutor(
            max_workers=min(upload_workers, len(batches)), thread_name_prefix="xio-up"
        )
        futures = [pool.submit(send, b, body) for b, body in zip(batches, bodies, strict=True)]
        # Each batch's archive plan now lives only in its queued work item, which the pool drops
        # once the batch is sent: memory shrinks as batches finish.
        del bodies
        try:
            pending: set[cf.Future[BatchOutcome]] = set(futures)
            while pending:
                # Short waits keep the main thread responsive to Ctrl-C.
                _, pending = cf.wait(pending, timeout=0.25)
        except KeyboardInterrupt:
            cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            done = [
                f.result()
                for f in futures
                if f.done() and not f.cancelled() and f.exception() is None
            ]
            result.batches = sorted(done, key=lambda o: o.index)
            _tally(result, progress)
            result.duration = time.monotonic() - started
            sent = sum(o.files for o in result.batches if o.success)
            raise UploadCancelled(
                f"interrupted: {sent} of {len(files)} instances were sent in "
                f"{result.batches_succeeded} complete batches; nothing was committed. "
                "Run the same command again with --resume to send the rest",
                result,
            ) from None
        pool.shutdown(wait=True)
        outcomes = [f.result() for f in futures]
    result.batches = outcomes
    _tally(result, progress)
    for o in outcomes:
        if not o.success:
            result.errors.append(f"batch {o.index + 1} ({o.files} files): {o.error}")

    session_uris: list[str] = []
    for uri in [u for o in outcomes for u in o.uris] + [p.url for p in adopted]:
        if uri not in session_uris:
            session_uris.append(uri)
    result.prearchive_uris = session_uris
    if resume and not batches and not adopted and existing is not None:
        result.nothing_to_send = True

    if session_uris:
        emit(progress_callback, ProgressEvent("committing", 0, len(session_uris), "archiving"))
        for uri in session_uris:
            try:
                result.archive_uri = _commit(
                    xnat, uri, project, subject, session, commit_overwrite, direct_archive
                )
                if journal is not None:
                    journal.record_commit(result.archive_uri)
            except ServerResponseError as exc:
                result.errors.append(f"commit of {uri} failed: {exc.message}")
        emit(
            progress_callback,
            ProgressEvent("committing", len(session_uris), len(session_uris), "archived"),
        )
    elif batches:
        result.errors.append("no batch reached the server; nothing was committed")

    if verify and (session_uris or existing is not None):
        emit(
            progress_callback,
            ProgressEvent("verifying", 0, len(files), "checking the session's files"),
        )
        result.verification = _verify(xnat, files, project, subject, session)
        comp = result.verification
        if not comp.ok:
            for path in comp.missing:
                result.errors.append(f"missing on the server: {path}")
            for path in comp.duplicated:
                result.errors.append(f"present more than once on the server: {path}")
            for path, scan in comp.misplaced:
                result.errors.append(f"filed under scan {scan} instead of its own: {path}")
        emit(progress_callback, ProgressEvent("verifying", comp.matched, len(files), "checked"))

    result.duration = time.monotonic() - started
    result.success = not result.errors
    if journal is not None:
        journal.record_done(
            ok=result.success,
            matched=result.verification.matched if result.verification is not None else 0,
            expected=len(files),
        )
    emit(
        progress_callback,
        ProgressEvent("done", len(files), len(files), "done", bytes_sent=result.bytes_sent),
    )
    return result


# Prearchive states in which new data starts a new session row (§3.4 step 6).
_NOT_INTERRUPTIBLE = frozenset(
    {
        "ARCHIVING",
        "QUEUED_ARCHIVING",
        "MOVING",
        "QUEUED_MOVING",
        "DELETING",
        "QUEUED_DELETING",
        "SEPARATING",
        "QUEUED_SEPARATING",
    }
)


def _resume_candidates(
    xnat: XnatSession,
    files: Sequence[DicomFile],
    existing: list[ServerFile] | None,
    adopted: Sequence[PrearchiveSession],
    state: JournalState,
    present: dict[str, str],
) -> list[DicomFile]:
    """The instances a resume must send; fills ``present`` with those it need not send.

    The archive listing is authoritative. The prearchive session is listed when the server
    offers a prearchive file listing; otherwise an instance the journal confirmed counts as
    present when the prearchive session it was sent into is still there (re-sending would only
    replace it, so trusting the journal saves time without risking a duplicate, and the
    verification after the commit catches anything lost).
    """
    archived = present_names(existing) if existing is not None else set()
    pre_names: set[tuple[str, str]] | None = set()
    for p in adopted:
        listed = list_prearchive_files(xnat, p.url)
        if listed is None:
            pre_names = None
            break
        assert pre_names is not None
        pre_names |= present_names(listed)
    todo: list[DicomFile] = []
    for f in files:
        keys = {(scan_id_for(f), stored_name(f)), (scan_id_for(f), template_name(f))}
        if keys & archived:
            present[f.path] = "already in the archived session"
        elif pre_names is not None and adopted and keys & pre_names:
            present[f.path] = "already in the uncommitted prearchive session"
        elif pre_names is None and f.sop_instance_uid in state.confirmed:
            present[f.path] = "confirmed by the journal, in the uncommitted prearchive session"
        else:
            todo.append(f)
    return todo


def _send_and_record(
    send: Callable[[Batch, tuple[str, int, object]], BatchOutcome],
    journal: Journal,
    batch: Batch,
    body: tuple[str, int, object],
) -> BatchOutcome:
    """Send a batch and, once the server confirmed it, journal its instances."""
    outcome = send(batch, body)
    if outcome.success:
        journal.record_sent(
            [f.sop_instance_uid for f in batch.files], batch=batch.index, uris=outcome.uris
        )
    return outcome


def _tally(result: UploadResult, progress: _Progress) -> None:
    result.batches_succeeded = sum(1 for o in result.batches if o.success)
    result.batches_failed = sum(1 for o in result.batches if not o.success)
    result.files_sent = sum(o.files for o in result.batches if o.success)
    result.bytes_sent = sum(o.bytes for o in result.batches if o.success)
    result.retries = progress.retries


def _make_body(
    inventory: Inventory,
    batch: Batch,
    archive_format: ArchiveFormat,
    handler: ImportHandler,
    on_bytes: Callable[[int], None],
) -> tuple[str, int, object]:
    """The request body of one batch: (Content-Type, exact length, re-iterable content)."""
    if handler == "gradual-DICOM":
        # A multipart part carries the file name XNAT stores (an in-body upload would be named
        # "upload.dcm" for every instance, and collide).
        only = batch.files[0]
        part = _MultipartFileBody(inventory, only, entry_name(only), on_bytes)
        return part.content_type, part.length, part
    members = [
        ArchiveMember(
            name=entry_name(f), size=f.size, open=functools.partial(inventory.source.open, f.path)
        )
        for f in batch.files
    ]
    archive = make_body(archive_format, members, on_bytes=on_bytes)
    return archive.content_type, archive.length, archive


def _send_batch(
    xnat: XnatSession,
    batch: Batch,
    body: tuple[str, int, object],
    *,
    params: dict[str, str],
    project: str,
    session: str,
    direct_archive: bool,
    progress: _Progress,
    cancel: threading.Event,
    max_attempts: int,
    timeout: float,
) -> BatchOutcome:
    started = time.monotonic()
    index = batch.index
    content_type, length, content = body
    headers = {"Content-Type": content_type, "Content-Length": str(length)}
    stream = _CancellableBody(content, cancel)
    error = "not sent"
    attempt = 0
    while attempt < max_attempts:
        attempt += 1
        if attempt > 1:
            progress.restart(index)
        if cancel.is_set():
            error = "cancelled"
            break
        retry_after: str | None = None
        try:
            response = xnat.request(
                "POST",
                "/data/services/import",
                params=params,
                content=stream,
                headers=headers,
                timeout=timeout,
            )
        except _Cancelled:
            error = "cancelled"
            break
        except ArchiveError as exc:
            error = exc.message
            break
        except httpx.TimeoutException:
            # Unknown outcome: the server may still be writing. Re-sending is safe (same entry
            # names and UIDs replace, never duplicate) once it has had time to finish.
            error = f"timed out after {timeout:g} s (outcome unknown)"
        except httpx.TransportError as exc:
            error = f"connection error: {type(exc).__name__}: {exc}"
            _revalidate(xnat)
        else:
            status = response.status_code
            if status == 200:
                lines = [ln.strip() for ln in response.text.splitlines() if ln.strip()]
                problem = _check_uris(lines, project, session, direct_archive)
                if problem is None:
                    progress.finish(index, True)
                    return BatchOutcome(
                        index,
                        len(batch.files),
                        batch.total_bytes,
                        True,
                        attempt,
                        tuple(lines),
                        None,
                        time.monotonic() - started,
                    )
                error = problem
                break
            message = error_message(response)
            error = f"{status} {message}".strip()
            retry_after = response.headers.get("Retry-After")
            concurrent = status == 400 and "Concurrent file sends" in message
            if status not in _RETRY_STATUSES and not concurrent:
                break
        if attempt < max_attempts:
            delay = _backoff(attempt, retry_after)
            logger.warning("batch %d: %s; retrying in %.1f s", index + 1, error, delay)
            if cancel.wait(delay):
                error = "cancelled"
                break
    progress.finish(index, False)
    return BatchOutcome(
        index,
        len(batch.files),
        batch.total_bytes,
        False,
        attempt,
        (),
        error,
        time.monotonic() - started,
    )


class _MultipartFileBody:
    """One file as a ``multipart/form-data`` body with an exact length (gradual-DICOM)."""

    def __init__(
        self, inventory: Inventory, f: DicomFile, filename: str, on_bytes: Callable[[int], None]
    ) -> None:
        self._inventory = inventory
        self._file = f
        self._on_bytes = on_bytes
        boundary = f"xnatio-{uuid.uuid4().hex}"
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self._head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/dicom\r\n\r\n"
        ).encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        self.length = len(self._head) + f.size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        sent = 0
        with self._inventory.source.open(self._file.path) as fh:
            while chunk := fh.read(1 << 20):
                sent += len(chunk)
                if sent > self._file.size:
                    break
                self._on_bytes(len(chunk))
                yield chunk
        if sent != self._file.size:
            raise ArchiveError(f"{self._file.path} changed size while being sent")
        yield self._tail


def _revalidate(xnat: XnatSession) -> None:
    """After a dropped connection, check the session (a server may reject an expired one by
    closing the connection mid-body) so the retry goes out with a valid login."""
    with contextlib.suppress(httpx.TransportError):
        xnat.request("GET", "/data/auth")


def _commit(
    xnat: XnatSession,
    uri: str,
    project: str,
    subject: str,
    session: str,
    overwrite: Overwrite,
    direct_archive: bool,
) -> str:
    """Archive one prearchive (or Direct-Archive) session; return the archive URI."""
    if uri.startswith("/xapi/"):
        response = xnat.request("POST", uri)
        xnat.check(response, f"triggering Direct-Archive of {uri}", ok=(200, 201, 202, 301, 303))
        return _experiment_path(project, subject, session).replace("/data/", "/data/archive/", 1)
    params = {
        "src": uri.removeprefix("/data"),
        "dest": f"/archive/projects/{project}/subjects/{subject}/experiments/{session}",
    }
    if overwrite == "append":
        params["overwrite"] = "append"
    elif overwrite == "delete":
        params["overwrite"] = "delete"
        params["overwrite_files"] = "true"
    last: ServerResponseError | None = None
    for attempt in range(1, 4):
        try:
            response = xnat.request("POST", "/data/services/archive", params=params)
        except httpx.TransportError as exc:
            last = ServerResponseError(f"connection error: {exc}")
        else:
            if response.status_code in (200, 301, 303):
                lines = [ln.strip() for ln in response.text.splitlines() if ln.strip()]
                return lines[0] if lines else response.headers.get("Location", "")
            if response.status_code not in (423, 500, 502, 503, 504):
                xnat.check(response, f"committing {uri}")
            last = ServerResponseError(
                f"{response.status_code} {error_message(response)}",
                status_code=response.status_code,
            )
        time.sleep(_backoff(attempt))
    assert last is not None
    raise last


def _verify(
    xnat: XnatSession, files: Sequence[DicomFile], project: str, subject: str, session: str
) -> Comparison:
    listed: list[ServerFile] | None = None
    for attempt in range(1, 6):
        listed = list_session_files(xnat, project, subject, session)
        if listed is not None:
            break
        time.sleep(0.5 * attempt)
    return compare(files, listed or [])
