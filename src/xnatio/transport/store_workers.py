"""The C-STORE senders: work queues and the association workers of :mod:`.dicom_store`.

Instances wait in one queue per group of presentation contexts (at most 128 per association);
each worker thread holds one association at a time and sends from its group's queue. What follows
a failure is decided by the status's retry class (:mod:`xnatio.dimse.status`, PS3.4 annex B and
PS3.7 annex C): a permanent failure (0xCxxx cannot understand, 0xA9xx data set does not match,
refusals) is final after one attempt; a transient one (0xA7xx out of resources, 0x0110, 0x0213,
unknown codes) is tried again, at most ``max_attempts`` times in all, after a per-instance
backoff during which it is parked aside and the other instances keep going. An association the
receiver aborts or closes (or that does not answer in time) is replaced at once and its instance
queued again; only failed attempts to associate pause before the next.
"""

from __future__ import annotations

import heapq
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xnatio.budget import ConnectionBudget
from xnatio.dicom.dataset import DatasetParseError, dataset_chunks
from xnatio.dimse.client import Association, AssociationRejectedError, DimseError
from xnatio.dimse.status import Category, status_category, status_meaning, status_retry
from xnatio.errors import XnatioError
from xnatio.inventory import DicomFile, Inventory
from xnatio.progress import ProgressCallback, ProgressEvent, emit, emit_ordered

if TYPE_CHECKING:  # ssl is loaded only when a TLS context is made (start-up time)
    import ssl

__all__ = [
    "INTERRUPTED",
    "REFUSED",
    "InstanceOutcome",
    "Job",
    "SendState",
    "StoreConfig",
    "describe",
    "report_progress",
    "run_workers",
    "uid_name",
]

logger = logging.getLogger(__name__)

# A worker gives up after this many connection attempts in a row fail.
_CONNECT_TRIES = 3
# Backoff of an instance answered with a transient failure status: base and cap, in seconds.
_RETRY_BASE = 0.25
_RETRY_CAP = 4.0

# -- public data ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceOutcome:
    """What happened to one instance.

    Attributes
    ----------
    path
        :attr:`xnatio.inventory.DicomFile.path`.
    sop_instance_uid
        The instance's UID.
    status
        The last C-STORE status, or ``None`` when nothing was answered (not sent, or the
        association failed).
    meaning
        The status in words (PS3.4 annex B), or why the instance was not sent.
    attempts
        C-STORE requests made for the instance.
    association
        Index (from 1) of the association that carried the last attempt, if any.
    comment
        The receiver's Error Comment (0000,0902), if it sent one.
    """

    path: str
    sop_instance_uid: str
    status: int | None
    meaning: str
    attempts: int
    association: int | None
    comment: str = ""

    @property
    def category(self) -> Category:
        """``success``, ``warning`` or ``failure`` (no status counts as failure)."""
        return "failure" if self.status is None else status_category(self.status)


# -- scheduling -------------------------------------------------------------------------------


@dataclass(slots=True)
class Job:
    index: int
    file: DicomFile
    pair: tuple[str, str]
    group: int
    attempts: int = 0
    last_error: str = ""


class SendState:
    """Work queues per context group, shared by the worker threads under one lock.

    A job waiting for its next attempt (after a transient failure status) sits in
    :attr:`waiting` until its time comes, while the workers go on with the other jobs.
    """

    def __init__(
        self,
        jobs: list[Job],
        groups: list[list[tuple[str, str]]],
        on_instance: Callable[[InstanceOutcome], None] | None = None,
    ) -> None:
        self.cond = threading.Condition()
        self.queues: list[deque[Job]] = [deque() for _ in groups]
        for job in jobs:
            self.queues[job.group].append(job)
        self.waiting: list[tuple[float, int, Job]] = []  # heap of (due, index, job)
        self.groups = groups
        self.in_flight = 0
        self.alive = 0  # worker threads started and not yet finished
        self.opening = 0  # of those, the ones that have not associated (or failed to) yet
        self.stop = threading.Event()
        self.outcomes: dict[int, InstanceOutcome] = {}
        self.refused: dict[tuple[str, str], str] = {}
        self.associations = 0
        self.live: set[Association] = set()
        self.done = 0
        self.stored = 0  # answered with success or warning
        self.interrupted = 0  # on their way when the send was stopped: not failed
        self.bytes_done = 0
        self.started = time.monotonic()
        self.retries = 0
        self.last_connect_error = ""
        self.on_instance = on_instance
        self.callback_error: BaseException | None = None

    def report(self, outcomes: list[InstanceOutcome]) -> None:
        """Hand final outcomes to ``on_instance`` (never under the lock).

        The first exception it raises stops the send; no further outcomes are reported.
        """
        if self.on_instance is None:
            return
        for outcome in outcomes:
            if self.callback_error is not None:
                return
            try:
                self.on_instance(outcome)
            except BaseException as exc:
                with self.cond:
                    if self.callback_error is None:
                        self.callback_error = exc
                    self.stop.set()
                    self.cond.notify_all()
                logger.error("on_instance raised %r; stopping the send", exc)
                return

    def _release_due(self) -> float | None:
        """Queue the waiting jobs whose time has come; seconds until the next one, or None."""
        now = time.monotonic()
        while self.waiting and self.waiting[0][0] <= now:
            job = heapq.heappop(self.waiting)[2]
            self.queues[job.group].append(job)
        return self.waiting[0][0] - now if self.waiting else None

    def next_group(self, prefer: int | None) -> int | None:
        """A group with queued work (``prefer`` if it has some); None when this worker is done.

        A worker is done when all work is, and also when nothing is queued now and the other
        workers are enough for what may still come back (instances in flight, retries waiting
        for their time): it then leaves, and its association with it. An idle association
        holds one of the receiver's threads (Orthanc has four by default), which the others
        may need.
        """
        with self.cond:
            while not self.stop.is_set():
                until_due = self._release_due()
                if prefer is not None and self.queues[prefer]:
                    return prefer
                busiest = max(range(len(self.queues)), key=lambda g: len(self.queues[g]))
                if self.queues[busiest]:
                    return busiest
                if self.in_flight == 0 and until_due is None:
                    return None
                idle_others = self.alive - self.in_flight - 1
                if idle_others >= len(self.waiting):
                    self.alive -= 1  # counted out now, so that the next idle one sees it
                    return RETIRED
                # Something in flight may fail and come back, or a retry falls due.
                self.cond.wait(until_due)
            return None

    def thread_starts(self) -> None:
        """A worker thread is about to start."""
        with self.cond:
            self.alive += 1
            self.opening += 1

    def opened(self) -> None:
        """A worker's first association attempt ended (either way), or it never made one."""
        with self.cond:
            self.opening -= 1
            self.cond.notify_all()

    def wants_another(self) -> bool:
        """Whether one more association could help now.

        Associations open like TCP's slow start: at most as many attempts at once as are
        open already (one at first). A receiver that serves a few associations at a time
        (Orthanc: 4 threads) answers the others only once one of those ends, which is at the
        end of the work: an association opened then would cost it and us a round trip for
        nothing, so few wait.
        """
        with self.cond:
            if self.stop.is_set() or not any(self.queues):
                return False
            return self.opening < max(1, len(self.live))

    def take(self, group: int) -> Job | None:
        with self.cond:
            if self.stop.is_set() or not self.queues[group]:
                return None
            self.in_flight += 1
            return self.queues[group].popleft()

    def retry(self, job: Job, delay: float) -> None:
        """Send ``job`` again after ``delay`` seconds (at once with 0), on any association."""
        with self.cond:
            self.in_flight -= 1
            self.retries += 1
            if delay <= 0:
                self.queues[job.group].appendleft(job)
            else:
                heapq.heappush(self.waiting, (time.monotonic() + delay, job.index, job))
            self.cond.notify_all()

    def finish(self, job: Job, outcome: InstanceOutcome) -> int:
        """Record the final outcome of ``job``, report it; returns how many instances are done."""
        with self.cond:
            self.in_flight -= 1
            self.outcomes[job.index] = outcome
            self.done += 1
            if outcome.category != "failure":
                self.stored += 1
                self.bytes_done += job.file.size
            elif outcome.meaning == INTERRUPTED:
                self.interrupted += 1
            self.cond.notify_all()
            done = self.done
        self.report([outcome])
        return done

    def worker_exit(self, *, retired: bool = False) -> None:
        """Called by each worker on its way out; the last one fails whatever is left.

        ``retired``: :meth:`next_group` counted the worker out already.
        """
        left: list[InstanceOutcome] = []
        with self.cond:
            if not retired:
                self.alive -= 1
            if self.alive == 0:
                reason = self.last_connect_error or "the upload stopped"
                leftover = [job for queue in self.queues for job in queue]
                leftover += [job for _, _, job in self.waiting]
                for queue in self.queues:
                    queue.clear()
                self.waiting.clear()
                for job in sorted(leftover, key=lambda j: j.index):
                    outcome = InstanceOutcome(
                        job.file.path,
                        job.file.sop_instance_uid,
                        None,
                        f"not sent: {job.last_error or reason}",
                        job.attempts,
                        None,
                    )
                    self.outcomes[job.index] = outcome
                    left.append(outcome)
            self.cond.notify_all()
        self.report(left)

    def register(self, assoc: Association) -> int:
        with self.cond:
            self.associations += 1
            self.live.add(assoc)
            return self.associations

    def unregister(self, assoc: Association) -> None:
        with self.cond:
            self.live.discard(assoc)


@dataclass(frozen=True, slots=True)
class StoreConfig:
    host: str
    port: int
    called_aet: str
    calling_aet: str
    timeout: float
    ssl_context: ssl.SSLContext | None
    max_attempts: int
    comment: str | None
    total: int
    bytes_total: int
    progress: ProgressCallback | None
    quickack: bool
    budget: ConnectionBudget | None = None

    def associate(self, pairs: Sequence[tuple[str, str]]) -> Association:
        """Open an association to the receiver proposing ``pairs`` (SOP class, transfer syntax)."""
        return Association.open(
            self.host,
            self.port,
            called_aet=self.called_aet,
            calling_aet=self.calling_aet,
            pairs=pairs,
            timeout=self.timeout,
            ssl_context=self.ssl_context,
            quickack=self.quickack,
        )


def _dataset_chunks(inventory: Inventory, f: DicomFile, comment: str | None) -> Iterator[bytes]:
    """The data set bytes of ``f`` as sent: the file's own bytes, routing comment spliced in."""
    with inventory.source.open(f.path) as stream:
        yield from dataset_chunks(stream, comment)


# What next_group says to a worker that the others can do without.
RETIRED = -1

# The start of the meaning of an instance whose presentation context the receiver refused.
REFUSED = "not sent: the receiver refused"
# The meaning of an instance that was on its way when the send was stopped (Ctrl-C, SIGTERM).
INTERRUPTED = "not confirmed: interrupted while being sent"


def uid_name(uid: str) -> str:
    # pydicom's UID dictionary costs a tenth of a second to import (with numpy); only a refused
    # presentation context, a rare path, needs the names.
    from pydicom.uid import UID

    name = UID(uid).name
    return uid if name == uid else f"{name} ({uid})"


_FIX_ADDRESS = "check --dicom-host/--dicom-port and that the receiver is running"


def describe(exc: BaseException) -> str:
    if isinstance(exc, XnatioError):
        return exc.message
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused; {_FIX_ADDRESS}"
    if isinstance(exc, TimeoutError):
        return f"connection timed out; {_FIX_ADDRESS}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror}); check --dicom-host"
    return str(exc) or type(exc).__name__


def _take_slot(state: SendState, budget: ConnectionBudget, group: int) -> bool:
    """Wait for a slot of the shared connection budget while ``group`` still has queued work.

    False when the send stops, or the other associations took the work meanwhile (an association
    opened for nothing would cost the server a connection and us two round trips).
    """
    while not state.stop.is_set() and state.queues[group]:
        if budget.acquire(timeout=0.25):
            if state.queues[group] and not state.stop.is_set():
                return True
            budget.release()
            return False
    return False


def _backoff(attempts: int) -> float:
    """Seconds before the next attempt of an instance that failed ``attempts`` times with a
    transient status: 0.25, 0.5, 1, ... up to 4 (the receiver is short of resources)."""
    return float(min(_RETRY_BASE * 2 ** (attempts - 1), _RETRY_CAP))


class _Worker:
    """One association at a time, sending queued instances until the work is done.

    What happens after a failure follows the status's retry class (:mod:`xnatio.dimse.status`):
    a permanent failure is final at once; a transient one (out of resources, 0xA7xx) is tried
    again after a per-instance backoff, on whichever association is free then, so that the
    others keep sending meanwhile. An association that ends abnormally (the receiver aborted or
    closed it, or did not answer in time) is replaced at once, and the instance on it is tried
    again; only failed connection attempts pause.
    """

    def __init__(self, state: SendState, cfg: StoreConfig, inventory: Inventory) -> None:
        self.state, self.cfg, self.inventory = state, cfg, inventory
        self.assoc: Association | None = None
        self.group: int | None = None
        self.index = 0  # of the association, from 1
        self.connect_failures = 0
        self.holding = False  # a slot of the connection budget, from associating to release
        self.first_attempt = True  # counted in SendState.opening until it ends

    def run(self) -> None:
        state = self.state
        retired = False
        try:
            while not state.stop.is_set():
                wanted = state.next_group(self.group if self.assoc is not None else None)
                retired = wanted == RETIRED
                if wanted is None or retired:
                    break
                if self.assoc is None or wanted != self.group:
                    opened = self.associate(wanted)
                    if opened is None:
                        break
                    if not opened:
                        continue
                job = state.take(wanted)
                if job is not None:
                    self.send(job)
        finally:
            self.drop(abort=state.stop.is_set())
            self.attempted()
            state.worker_exit(retired=retired)

    def attempted(self) -> None:
        """Tell the ramp-up (:meth:`SendState.wants_another`) that the first attempt ended."""
        if self.first_attempt:
            self.first_attempt = False
            self.state.opened()

    def associate(self, group: int) -> bool | None:
        """Open an association for ``group``: True when open, False to look for work again,
        None when this worker gives up (connection attempts keep failing)."""
        state, cfg = self.state, self.cfg
        self.drop(abort=False)
        if cfg.budget is not None:
            if not _take_slot(state, cfg.budget, group):
                return False  # next_group decides whether anything is left
            self.holding = True
        try:
            # Associate before taking work: a receiver that serves one association at a time
            # keeps us waiting here, and no job is held hostage meanwhile.
            assoc = cfg.associate(state.groups[group])
        except (OSError, DimseError) as exc:
            self.attempted()
            self.connect_failures += 1
            with state.cond:
                state.last_connect_error = f"cannot associate: {describe(exc)}"
            logger.info("association attempt failed: %s", describe(exc))
            self.drop(abort=False)
            if self.connect_failures >= _CONNECT_TRIES or (
                isinstance(exc, AssociationRejectedError) and exc.permanent
            ):
                return None
            state.stop.wait(0.2 * 2**self.connect_failures)
            return False
        self.connect_failures = 0
        self.assoc, self.group = assoc, group
        self.index = state.register(assoc)
        self.attempted()
        with state.cond:
            for pair, res in assoc.contexts.items():
                if not res.accepted:
                    state.refused[pair] = res.reason
        return True

    def send(self, job: Job) -> None:
        """One attempt at ``job`` on the open association, and what follows from its answer."""
        assert self.assoc is not None
        refused = self.state.refused.get(job.pair)
        if refused is not None:
            pair = f"{uid_name(job.pair[0])} in {uid_name(job.pair[1])}"
            self.final(job, None, f"{REFUSED} {pair} ({refused})")
            return
        job.attempts += 1
        try:
            resp = self.assoc.store(
                job.file.sop_class_uid,
                job.file.sop_instance_uid,
                job.pair[1],
                _dataset_chunks(self.inventory, job.file, self.cfg.comment),
            )
        except DimseError as exc:
            self.lost(job, exc)
            return
        except (OSError, DatasetParseError, ValueError) as exc:
            # A local problem with this file; part of a message may be on the wire, so the
            # association cannot carry on. Retrying would read the same bytes again.
            self.drop(abort=True)
            self.final(job, None, f"not sent: cannot read the file: {describe(exc)}")
            return
        if status_retry(resp.status) == "transient" and job.attempts < self.cfg.max_attempts:
            job.last_error = f"0x{resp.status:04X} {status_meaning(resp.status)}"
            self.state.retry(job, _backoff(job.attempts))
            return
        self.final(job, resp.status, status_meaning(resp.status), resp.error_comment)

    def lost(self, job: Job, exc: DimseError) -> None:
        """The association ended while ``job`` was on it: replace it, and try the job again."""
        state = self.state
        self.drop(abort=True)
        if state.stop.is_set():
            # Stopped by us (Ctrl-C, SIGTERM): the receiver is not to blame, and the instance
            # may or may not have been stored.
            self.final(job, None, INTERRUPTED)
            return
        job.last_error = describe(exc)
        if job.attempts < self.cfg.max_attempts:
            state.retry(job, 0.0)
            return
        self.final(job, None, f"not stored: {job.last_error}")

    def final(self, job: Job, status: int | None, meaning: str, comment: str = "") -> None:
        """Record the last outcome of ``job`` and tell the progress callback."""
        path, uid = job.file.path, job.file.sop_instance_uid
        outcome = InstanceOutcome(path, uid, status, meaning, job.attempts, self.index, comment)
        self.state.finish(job, outcome)
        report_progress(self.state, self.cfg, self.index)

    def drop(self, abort: bool) -> None:
        """End the association (A-ABORT or release) and give its budget slot back."""
        if self.assoc is not None:
            self.state.unregister(self.assoc)
            if abort:
                self.assoc.abort()
            else:
                self.assoc.release()
            self.assoc = None
        if self.holding and self.cfg.budget is not None:
            self.cfg.budget.release()
            self.holding = False


def _worker(state: SendState, cfg: StoreConfig, inventory: Inventory) -> None:
    _Worker(state, cfg, inventory).run()


def report_progress(state: SendState, cfg: StoreConfig, index: int | None) -> None:
    """An ``uploading`` event: instances stored (current) and failed, their bytes, the time.

    The counts are read under the lock :func:`emit` holds, so events leave in count order.
    """
    if cfg.progress is None:
        return
    with emit_ordered():
        with state.cond:
            stored = state.stored
            failed = state.done - state.stored - state.interrupted
            sent, retries = state.bytes_done, state.retries
        emit(
            cfg.progress,
            ProgressEvent(
                "uploading",
                stored,
                cfg.total,
                f"association {index}" if index is not None else "starting",
                bytes_sent=sent,
                bytes_total=cfg.bytes_total,
                batch=index,
                retries=retries,
                elapsed=time.monotonic() - state.started,
                failed=failed,
            ),
        )


def run_workers(state: SendState, cfg: StoreConfig, inventory: Inventory, workers: int) -> bool:
    """Run up to ``workers`` association threads to the end; True when Ctrl-C stopped them.

    Threads start one after the other as :meth:`SendState.wants_another` allows.
    """
    threads: list[threading.Thread] = []

    def start() -> None:
        name = f"xnatio-cstore-{len(threads)}"
        thread = threading.Thread(target=_worker, args=(state, cfg, inventory), name=name)
        thread.daemon = True
        state.thread_starts()
        threads.append(thread)
        thread.start()

    try:  # Ctrl-C (or SIGTERM) while threads start stops the ones already running
        if workers:
            start()
        while True:
            if len(threads) < workers and state.wants_another():
                start()
                continue
            with state.cond:  # woken by every association opened and instance finished
                if state.alive == 0:
                    break  # every worker has left its loop
                state.cond.wait(0.25)
        for t in threads:  # releasing their associations
            while t.is_alive():
                t.join(0.25)
    except KeyboardInterrupt:
        state.stop.set()
        with state.cond:
            state.cond.notify_all()
            live = list(state.live)
        for assoc in live:
            assoc.interrupt()
        for t in threads:
            if t.is_alive():
                t.join(5.0)
        return True
    return False
