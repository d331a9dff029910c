"""The REST transport: batches streamed into XNAT's import service, then one commit.

Each batch is streamed as an archive straight into the body of ``POST /data/services/import`` by
a pool of upload workers that share one login: a tar or zip with an exact Content-Length
(``--compress none``), or a chunked zip whose entries are deflated while measurements say the
link limits the upload (``--compress auto``, the default; :mod:`xnatio.transport.compression`).
With ``--upload-workers auto`` a controller sets how many batches are in flight
(:mod:`xnatio.transport.adaptive`); ``--bwlimit`` caps their total rate. Every batch goes to the
prearchive with ``prevent_auto_commit=true`` under the same project, subject and session labels,
so XNAT gathers them in one prearchive session, and every response must name that session;
:func:`commit` then archives it with the chosen overwrite mode (docs/xnat-behaviour.md §3.2,
§3.3, §3.6-§3.9, §9 and §11). With Direct-Archive the batches use Direct-Archive instead and the
commit triggers the archive once every batch is in.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from xnatio.budget import LocalBudget
from xnatio.errors import ServerResponseError
from xnatio.inventory import Inventory
from xnatio.options import ArchiveFormat, ImportHandler, Overwrite, RestOptions
from xnatio.plan import Batch
from xnatio.progress import ProgressCallback, ProgressEvent, Throttle, emit, emit_ordered
from xnatio.transport.adaptive import WorkerController
from xnatio.transport.batch_body import (
    Body,
    Cancelled,
    TrackedBody,
    exact_body,
    streaming_body,
    would_shrink,
)
from xnatio.transport.bodies import ArchiveError
from xnatio.transport.compression import CompressionPolicy, calibrate
from xnatio.transport.link import Link, LinkSettings, link_for, usable_cpus
from xnatio.transport.ratelimit import RateLimiter
from xnatio.xnat.listings import experiment_path
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
    sent
        Request body bytes of the attempt that succeeded (compressed when deflated).
    """

    index: int
    files: int
    bytes: int
    success: bool
    attempts: int
    uris: tuple[str, ...] = ()
    error: str | None = None
    duration: float = 0.0
    sent: int = 0


class _Progress:
    """Thread-safe byte and batch counters that turn into progress events.

    ``current`` counts the batches XNAT acknowledged and ``failed`` those that failed; a batch
    stopped by Ctrl-C is neither. Bytes run ahead of acknowledgements: a batch's bytes are all
    sent before XNAT answers for it.
    """

    def __init__(
        self,
        callback: ProgressCallback | None,
        total_batches: int,
        bytes_total: int,
        cancel: threading.Event | None = None,
    ):
        self.callback = callback
        self.total_batches = total_batches
        self.bytes_total = bytes_total
        self.cancel = cancel
        self.acknowledged = 0
        self.failed = 0
        self.retries = 0
        self._attempt_bytes: dict[int, int] = {}
        self._done_bytes = 0
        self._lock = threading.Lock()
        self._throttle = Throttle()
        self._started = time.monotonic()

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return self._done_bytes + sum(self._attempt_bytes.values())

    def add(self, batch: int, n: int) -> None:
        with self._lock:
            self._attempt_bytes[batch] = self._attempt_bytes.get(batch, 0) + n
        if self._throttle.ready():
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
                self.acknowledged += 1
            elif self.cancel is None or not self.cancel.is_set():
                self.failed += 1
        self.emit(f"batch {batch + 1} {'done' if success else 'failed'}", batch)

    def emit(self, message: str, batch: int | None = None) -> None:
        if self.callback is None:
            return
        # Counted and emitted under emit's own lock: events leave in the order of their counts.
        with emit_ordered():
            with self._lock:
                sent = self._done_bytes + sum(self._attempt_bytes.values())
                acknowledged, failed, retries = self.acknowledged, self.failed, self.retries
            emit(
                self.callback,
                ProgressEvent(
                    "uploading",
                    acknowledged,
                    self.total_batches,
                    message,
                    bytes_sent=sent,
                    bytes_total=self.bytes_total,
                    batch=batch,
                    retries=retries,
                    elapsed=time.monotonic() - self._started,
                    failed=failed,
                ),
            )


def _backoff(attempt: int, retry_after: str | None = None) -> float:
    """Exponential backoff with full jitter, honouring a Retry-After in seconds."""
    if retry_after and retry_after.strip().isdigit():
        return min(120.0, float(retry_after.strip()))
    cap = min(60.0, 1.0 * 2 ** (attempt - 1))
    return random.uniform(cap / 2, cap)


def _import_params(
    project: str,
    subject: str,
    session: str,
    *,
    handler: str,
    direct_archive: bool,
    prevent_anon: bool = False,
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
    if prevent_anon:
        # The files were de-identified with the server's own scripts here: XNAT must not apply
        # them again (docs/xnat-behaviour.md §3.4 step 12; docs/anonymisation.md).
        params["prevent_anon"] = "true"
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
        File bytes of all batches.
    adaptive
        What compression, the worker controller and the rate limit did (one line each).
    """

    outcomes: list[BatchOutcome] = field(default_factory=list)
    cancelled: bool = False
    retries: int = 0
    bytes_total: int = 0
    adaptive: dict[str, str] = field(default_factory=dict)


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
    prevent_anon: bool = False,
) -> BatchRun:
    """Send ``batches`` in parallel, each into the import service.

    Parameters
    ----------
    xnat
        A logged-in session with room for ``options.upload_workers`` connections. With
        ``options.adaptive_workers`` its connection budget's capacity is what the controller
        changes (a budget without ``set_capacity`` keeps its capacity, and the upload runs with
        ``upload_workers``).
    inventory
        Where the files' bytes come from.
    batches
        What to send, one request each.
    options
        Workers, compression, body format, handler, timeout, attempts, Direct-Archive.
    project, subject, session
        The target; every response must name it.
    progress_callback
        Receives ``uploading`` events from the worker threads; bytes are file bytes.
    on_batch
        Called from the worker thread with each batch the server confirmed (the journal records
        its instances here).
    prevent_anon
        Ask XNAT not to apply its anonymisation scripts (the files were de-identified with them
        already).

    Returns
    -------
    BatchRun
        Outcomes, whether Ctrl-C stopped the run (then nothing more is sent), and what the
        adaptive parts decided.
    """
    cancel = threading.Event()
    progress = _Progress(
        progress_callback, len(batches), sum(b.total_bytes for b in batches), cancel
    )
    run = BatchRun(bytes_total=progress.bytes_total)
    if not batches:
        return run
    link = shared_link(xnat, options, inventory, batches)
    params = _import_params(
        project,
        subject,
        session,
        handler=options.import_handler,
        direct_archive=options.direct_archive,
        prevent_anon=prevent_anon,
    )
    send: Callable[[Batch], BatchOutcome] = functools.partial(
        _send_batch,
        xnat,
        inventory,
        options=options,
        link=link,
        params=params,
        project=project,
        session=session,
        progress=progress,
        cancel=cancel,
    )
    if on_batch is not None:
        send = functools.partial(_send_and_report, send, on_batch)
    pool = cf.ThreadPoolExecutor(
        max_workers=min(options.upload_workers, len(batches)), thread_name_prefix="xio-up"
    )
    futures: list[cf.Future[BatchOutcome]] = []
    link.begin_upload()
    try:  # from the first event on, Ctrl-C (or SIGTERM) stops whatever was started
        progress.emit("starting")
        # Bodies are built when a batch starts, so memory holds only the batches in flight.
        futures += [pool.submit(send, b) for b in batches]
        pending: set[cf.Future[BatchOutcome]] = set(futures)
        while pending:
            # Short waits keep the main thread responsive to Ctrl-C, and measure the link.
            _, pending = cf.wait(pending, timeout=0.25)
            link.tick()
    except KeyboardInterrupt:
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        done = [f.result() for f in futures if f.done() and not f.cancelled() and not f.exception()]
        run.outcomes = sorted(done, key=lambda o: o.index)
        run.cancelled = True
        run.retries = progress.retries
        return run
    finally:
        link.end_upload()
        run.adaptive = link.summary()
        for what, how in run.adaptive.items():
            logger.info("%s: %s", what, how)
    pool.shutdown(wait=True)
    run.outcomes = [f.result() for f in futures]
    run.retries = progress.retries
    return run


def shared_link(
    xnat: XnatSession, options: RestOptions, inventory: Inventory, batches: Sequence[Batch]
) -> Link:
    """The link of ``xnat``: made by the first upload over it, shared by the others."""

    def make() -> Link:
        policy = CompressionPolicy(cpus=usable_cpus(), mode=options.compress)
        if options.compress == "auto":
            # A file from the middle of each batch: the session's content, not its first slices.
            middle = [b.files[len(b.files) // 2] for b in batches]
            sample = [f for f in middle if would_shrink(f)][:: max(1, len(middle) // 8)]
            policy.speed, policy.ratio = calibrate(inventory.source.open(f.path) for f in sample)
        budget = xnat.budget
        controller = None
        if options.adaptive_workers:
            if isinstance(budget, LocalBudget):
                controller = WorkerController(budget, ceiling=budget.capacity)
            else:
                logger.warning(
                    "--upload-workers auto needs a connection budget whose capacity can change; "
                    "sending with %d workers",
                    options.upload_workers,
                )
        settings = LinkSettings(
            options.compress, controller is not None, options.upload_workers, options.bwlimit
        )
        return Link(
            settings,
            policy,
            controller,
            RateLimiter(options.bwlimit) if options.bwlimit else None,
            (lambda: budget.capacity) if budget is not None else None,
        )

    return link_for(xnat, make)


def _send_and_report(
    send: Callable[[Batch], BatchOutcome],
    on_batch: Callable[[Batch, BatchOutcome], None],
    batch: Batch,
) -> BatchOutcome:
    """Send a batch and, once the server confirmed it, hand it to ``on_batch``."""
    outcome = send(batch)
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
    """The exact-length body of one batch: (Content-Type, length, re-iterable content)."""
    body = exact_body(inventory, batch, archive_format, handler, on_bytes)
    assert body.length is not None
    return body.content_type, body.length, body


def _body_for(
    inventory: Inventory,
    batch: Batch,
    options: RestOptions,
    link: Link,
    progress: _Progress,
    cancel: threading.Event,
) -> TrackedBody:
    def build(tracked: TrackedBody) -> Body:
        if options.compress == "none" or options.import_handler == "gradual-DICOM":
            return exact_body(inventory, batch, options.archive_format, options.import_handler)
        return streaming_body(inventory, batch, tracked)

    return TrackedBody(
        link, build, cancel, functools.partial(progress.add, batch.index), batch.total_bytes
    )


def _send_batch(
    xnat: XnatSession,
    inventory: Inventory,
    batch: Batch,
    *,
    options: RestOptions,
    link: Link,
    params: dict[str, str],
    project: str,
    session: str,
    progress: _Progress,
    cancel: threading.Event,
) -> BatchOutcome:
    started = time.monotonic()
    index = batch.index
    direct_archive, timeout, max_attempts = (
        options.direct_archive,
        options.timeout,
        options.max_attempts,
    )
    body = _body_for(inventory, batch, options, link, progress, cancel)
    error = "not sent"
    attempt = 0

    def finish(ok: bool, uris: tuple[str, ...], error: str | None) -> BatchOutcome:
        progress.finish(index, ok)
        wire = body.stream.wire if ok and body.stream is not None else 0  # BatchOutcome.sent
        took = time.monotonic() - started
        size = batch.total_bytes
        return BatchOutcome(index, len(batch.files), size, ok, attempt, uris, error, took, wire)

    while attempt < max_attempts:
        attempt += 1
        if attempt > 1:
            progress.restart(index)
        if cancel.is_set():
            error = "cancelled"
            break
        response, error, retry = _post(xnat, body, link, params, timeout)
        retry_after: str | None = None
        if response is not None:
            status = response.status_code
            if status == 200:
                lines = [ln.strip() for ln in response.text.splitlines() if ln.strip()]
                problem = _check_uris(lines, project, session, direct_archive)
                if problem is None:
                    return finish(True, tuple(lines), None)
                error, retry = problem, False
            else:
                message = error_message(response)
                error = f"{status} {message}".strip()
                retry_after = response.headers.get("Retry-After")
                concurrent = status == 400 and "Concurrent file sends" in message
                retry = status in _RETRY_STATUSES or concurrent
        if not retry:
            break
        if attempt < max_attempts:
            delay = _backoff(attempt, retry_after)
            logger.warning("batch %d: %s; retrying in %.1f s", index + 1, error, delay)
            if cancel.wait(delay):
                error = "cancelled"
                break
    return finish(False, (), error)


def _post(
    xnat: XnatSession, body: TrackedBody, link: Link, params: dict[str, str], timeout: float
) -> tuple[httpx.Response | None, str, bool]:
    """One request: (the answer or None, why it failed, whether a retry may help)."""
    with body.attempt():
        try:
            response = xnat.request(
                "POST",
                "/data/services/import",
                params=params,
                content=body,
                headers=body.headers,
                timeout=timeout,
            )
        except Cancelled:
            return None, "cancelled", False
        except ArchiveError as exc:
            return None, exc.message, False
        except httpx.TimeoutException:
            # Unknown outcome: the server may still be writing. Re-sending is safe (same entry
            # names and UIDs replace, never duplicate) once it has had time to finish.
            link.failed(body.stream)
            return None, f"timed out after {timeout:g} s (outcome unknown)", True
        except httpx.TransportError as exc:
            link.failed(body.stream)
            _revalidate(xnat)
            return None, f"connection error: {type(exc).__name__}: {exc}", True
        link.answered(body.stream, response.status_code)
        return response, "", False


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
