"""The REST transport: batches streamed into XNAT's import service, then one commit.

Each batch is streamed as a tar or zip straight into the body of ``POST /data/services/import``,
with an exact Content-Length, by a pool of upload workers that share one login. Every batch goes
to the prearchive with ``prevent_auto_commit=true`` under the same project, subject and session
labels, so XNAT gathers them in one prearchive session, and every response must name that session;
:func:`commit` then archives it with the chosen overwrite mode (docs/xnat-behaviour.md §3.3,
§3.6-§3.9, §9 and §11). With Direct-Archive the batches use Direct-Archive instead and the commit
triggers the archive once every batch is in.

The orchestration around it (plan, journal, resume, verification) is :mod:`xnatio.upload`.
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

import httpx

from xnatio.errors import ServerResponseError
from xnatio.inventory import DicomFile, Inventory
from xnatio.options import ArchiveFormat, ImportHandler, Overwrite, RestOptions
from xnatio.plan import Batch
from xnatio.progress import ProgressCallback, ProgressEvent, emit
from xnatio.transport.bodies import ArchiveError, ArchiveMember, make_body
from xnatio.xnat.listings import experiment_path
from xnatio.xnat.naming import entry_name
from xnatio.xnat.session import XnatSession, error_message

__all__ = ["BatchOutcome", "BatchRun", "commit", "send_batches"]

logger = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_PREARC_URI = re.compile(r"^/data/prearchive/projects/([^/]+)/([^/]+)/([^/]+)$")
_DA_URI = re.compile(r"^/xapi/direct-archive/([^/]+)/([^/]+)/([^/]+)$")


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


@dataclass
class BatchRun:
    """What :func:`send_batches` did.

    Attributes
    ----------
    outcomes
        One outcome per batch that finished (all of them unless ``cancelled``), by index.
    cancelled
        True when Ctrl-C stopped the run; batches in flight were abandoned.
    retries
        Requests repeated after a retryable failure.
    bytes_total
        Request body bytes of all batches (archive framing included).
    """

    outcomes: list[BatchOutcome] = field(default_factory=list)
    cancelled: bool = False
    retries: int = 0
    bytes_total: int = 0


def send_batches(
    xnat: XnatSession,
    inventory: Inventory,
    batches: Sequence[Batch],
    *,
    options: RestOptions,
    project: str,
    subject: str,
    session: str,
    progress_callback: ProgressCallback | None = None,
    on_batch: Callable[[Batch, BatchOutcome], None] | None = None,
) -> BatchRun:
    """Send ``batches`` in parallel, each into the import service.

    Parameters
    ----------
    xnat
        A logged-in session with room for ``options.upload_workers`` connections.
    inventory
        Where the files' bytes come from.
    batches
        What to send, one request each.
    options
        Workers, body format, handler, timeout, attempts, Direct-Archive.
    project, subject, session
        The target; every response must name it.
    progress_callback
        Receives ``uploading`` events from the worker threads.
    on_batch
        Called from the worker thread with each batch the server confirmed (the journal records
        its instances here).

    Returns
    -------
    BatchRun
        Outcomes, and whether Ctrl-C stopped the run (then nothing more is sent).
    """
    progress = _Progress(progress_callback, len(batches), 0)
    bodies = [
        _make_body(
            inventory,
            b,
            options.archive_format,
            options.import_handler,
            functools.partial(progress.add, b.index),
        )
        for b in batches
    ]
    progress.bytes_total = sum(length for _, length, _ in bodies)
    run = BatchRun(bytes_total=progress.bytes_total)
    if not batches:
        return run
    cancel = threading.Event()
    params = _import_params(
        project,
        subject,
        session,
        handler=options.import_handler,
        direct_archive=options.direct_archive,
    )
    send = functools.partial(
        _send_batch,
        xnat,
        params=params,
        project=project,
        session=session,
        direct_archive=options.direct_archive,
        progress=progress,
        cancel=cancel,
        max_attempts=options.max_attempts,
        timeout=options.timeout,
    )
    if on_batch is not None:
        send = functools.partial(_send_and_report, send, on_batch)
    pool = cf.ThreadPoolExecutor(
        max_workers=min(options.upload_workers, len(batches)), thread_name_prefix="xio-up"
    )
    futures: list[cf.Future[BatchOutcome]] = []
    try:  # from the first event on, Ctrl-C (or SIGTERM) stops whatever was started
        progress.emit("starting")
        futures += [pool.submit(send, b, body) for b, body in zip(batches, bodies, strict=True)]
        # Each batch's archive plan now lives only in its queued work item, which the pool drops
        # once the batch is sent: memory shrinks as batches finish.
        del bodies
        pending: set[cf.Future[BatchOutcome]] = set(futures)
        while pending:
            # Short waits keep the main thread responsive to Ctrl-C.
            _, pending = cf.wait(pending, timeout=0.25)
    except KeyboardInterrupt:
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        done = [f.result() for f in futures if f.done() and not f.cancelled() and not f.exception()]
        run.outcomes = sorted(done, key=lambda o: o.index)
        run.cancelled = True
        run.retries = progress.retries
        return run
    pool.shutdown(wait=True)
    run.outcomes = [f.result() for f in futures]
    run.retries = progress.retries
    return run


def _send_and_report(
    send: Callable[[Batch, tuple[str, int, object]], BatchOutcome],
    on_batch: Callable[[Batch, BatchOutcome], None],
    batch: Batch,
    body: tuple[str, int, object],
) -> BatchOutcome:
    """Send a batch and, once the server confirmed it, hand it to ``on_batch``."""
    outcome = send(batch, body)
    if outcome.success:
        on_batch(batch, outcome)
    return outcome


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


def commit(
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
        return experiment_path(project, subject, session).replace("/data/", "/data/archive/", 1)
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
