"""The C-STORE transport: send instances to XNAT's DICOM receiver (or any Storage SCP).

A C-ECHO, then parallel associations whose presentation contexts come from the inventory's (SOP
Class, Transfer Syntax) pairs. Each file's data set is sent as the bytes it has on disk; only
Patient Comments (0010,4000) is rewritten in memory to carry XNAT's routing string. Per-instance
statuses follow DICOM PS3.4 annex B; failed instances and those of an aborted association are
retried on a fresh association. The orchestration around it (plan, journal, resume,
verification) is :mod:`xnatio.upload`.

The network layer is :mod:`xnatio.dimse.client`, a lean Storage SCU (see its docstring for the
measurements that led to it).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from xnatio.budget import ConnectionBudget, slot
from xnatio.dicom.dataset import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    DatasetParseError,
    dataset_chunks,
    open_dataset,
)
from xnatio.dimse.client import (
    VERIFICATION_SOP_CLASS,
    Association,
    AssociationRejectedError,
    DimseError,
)
from xnatio.dimse.status import Category, status_category, status_meaning
from xnatio.errors import ConnectionFailedError, InputError, XnatioError
from xnatio.inventory import DicomFile, Inventory
from xnatio.options import DicomOptions, DicomTls
from xnatio.progress import ProgressCallback, ProgressEvent, emit, emit_ordered

__all__ = [
    "INTERRUPTED",
    "REFUSED",
    "DicomTls",
    "InstanceOutcome",
    "StoreRun",
    "check_receiver",
    "echo_receiver",
    "status_category",
    "status_meaning",
    "store_instances",
]

logger = logging.getLogger(__name__)

_MAX_CONTEXTS = 128
_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
# A worker gives up after this many connection attempts in a row fail.
_CONNECT_TRIES = 3


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
class _Job:
    index: int
    file: DicomFile
    pair: tuple[str, str]
    group: int
    attempts: int = 0
    last_error: str = ""


class _State:
    """Work queues per context group, shared by the worker threads under one lock."""

    def __init__(
        self,
        jobs: list[_Job],
        groups: list[list[tuple[str, str]]],
        workers: int,
        on_instance: Callable[[InstanceOutcome], None] | None = None,
    ) -> None:
        self.cond = threading.Condition()
        self.queues: list[deque[_Job]] = [deque() for _ in groups]
        for job in jobs:
            self.queues[job.group].append(job)
        self.groups = groups
        self.in_flight = 0
        self.alive = workers
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

    def next_group(self, prefer: int | None) -> int | None:
        """A group with queued work (``prefer`` if it has some); None when all work is done."""
        with self.cond:
            while not self.stop.is_set():
                if prefer is not None and self.queues[prefer]:
                    return prefer
                busiest = max(range(len(self.queues)), key=lambda g: len(self.queues[g]))
                if self.queues[busiest]:
                    return busiest
                if self.in_flight == 0:
                    return None
                # Something in flight may fail and come back; wait for it.
                self.cond.wait()
            return None

    def take(self, group: int) -> _Job | None:
        with self.cond:
            if self.stop.is_set() or not self.queues[group]:
                return None
            self.in_flight += 1
            return self.queues[group].popleft()

    def put_back(self, job: _Job, *, retry: bool) -> None:
        with self.cond:
            self.in_flight -= 1
            if retry:
                self.retries += 1
            self.queues[job.group].appendleft(job)
            self.cond.notify_all()

    def finish(self, job: _Job, outcome: InstanceOutcome) -> int:
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

    def worker_exit(self) -> None:
        """Called by each worker on its way out; the last one fails whatever is left."""
        left: list[InstanceOutcome] = []
        with self.cond:
            self.alive -= 1
            if self.alive == 0:
                reason = self.last_connect_error or "the upload stopped"
                for queue in self.queues:
                    while queue:
                        job = queue.popleft()
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
class _Config:
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


def _syntax(inventory: Inventory, f: DicomFile) -> str:
    """The transfer syntax of ``f``; files without a meta group are recognised by their bytes."""
    if f.transfer_syntax_uid:
        return f.transfer_syntax_uid
    try:
        with inventory.source.open(f.path) as stream:
            return open_dataset(stream).transfer_syntax_uid
    except (OSError, DatasetParseError):
        return IMPLICIT_VR_LITTLE_ENDIAN


# The start of the meaning of an instance whose presentation context the receiver refused.
REFUSED = "not sent: the receiver refused"
# The meaning of an instance that was on its way when the send was stopped (Ctrl-C, SIGTERM).
INTERRUPTED = "not confirmed: interrupted while being sent"


def _uid_name(uid: str) -> str:
    # pydicom's UID dictionary costs a tenth of a second to import (with numpy); only a refused
    # presentation context, a rare path, needs the names.
    from pydicom.uid import UID

    name = UID(uid).name
    return uid if name == uid else f"{name} ({uid})"


_FIX_ADDRESS = "check --dicom-host/--dicom-port and that the receiver is running"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, XnatioError):
        return exc.message
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused; {_FIX_ADDRESS}"
    if isinstance(exc, TimeoutError):
        return f"connection timed out; {_FIX_ADDRESS}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror}); check --dicom-host"
    return str(exc) or type(exc).__name__


def _take_slot(state: _State, budget: ConnectionBudget, group: int) -> bool:
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


def _worker(state: _State, cfg: _Config, inventory: Inventory) -> None:
    assoc: Association | None = None
    group: int | None = None
    index = 0
    connect_failures = 0
    holding = False  # a slot of the connection budget, from before associating to after release

    def drop(abort: bool) -> None:
        nonlocal assoc, holding
        if assoc is not None:
            state.unregister(assoc)
            if abort:
                assoc.abort()
            else:
                assoc.release()
            assoc = None
        if holding and cfg.budget is not None:
            cfg.budget.release()
            holding = False

    try:
        while not state.stop.is_set():
            wanted = state.next_group(group if assoc is not None else None)
            if wanted is None:
                break
            if assoc is None or wanted != group:
                drop(abort=False)
                if cfg.budget is not None:
                    if not _take_slot(state, cfg.budget, wanted):
                        continue  # next_group decides whether anything is left
                    holding = True
                try:
                    # Associate before taking work: a receiver that serves one association at a
                    # time keeps us waiting here, and no job is held hostage meanwhile.
                    opened = cfg.associate(state.groups[wanted])
                except (OSError, DimseError) as exc:
                    connect_failures += 1
                    with state.cond:
                        state.last_connect_error = f"cannot associate: {_describe(exc)}"
                    logger.info("association attempt failed: %s", _describe(exc))
                    drop(abort=False)
                    if connect_failures >= _CONNECT_TRIES or (
                        isinstance(exc, AssociationRejectedError) and exc.permanent
                    ):
                        break
                    state.stop.wait(0.2 * 2**connect_failures)
                    continue
                connect_failures = 0
                assoc, group = opened, wanted
                index = state.register(assoc)
                with state.cond:
                    for pair, res in assoc.contexts.items():
                        if not res.accepted:
                            state.refused[pair] = res.reason
            job = state.take(wanted)
            if job is None:
                continue
            refused = state.refused.get(job.pair)
            if refused is not None:
                state.finish(
                    job,
                    InstanceOutcome(
                        job.file.path,
                        job.file.sop_instance_uid,
                        None,
                        f"{REFUSED} {_uid_name(job.pair[0])} "
                        f"in {_uid_name(job.pair[1])} ({refused})",
                        job.attempts,
                        index,
                    ),
                )
                _progress(state, cfg, index)
                continue
            job.attempts += 1
            try:
                resp = assoc.store(
                    job.file.sop_class_uid,
                    job.file.sop_instance_uid,
                    job.pair[1],
                    _dataset_chunks(inventory, job.file, cfg.comment),
                )
            except DimseError as exc:
                drop(abort=True)
                # Stopped by us (Ctrl-C, SIGTERM): the receiver is not to blame, and the
                # instance may or may not have been stored.
                job.last_error = INTERRUPTED if state.stop.is_set() else _describe(exc)
                if job.attempts < cfg.max_attempts and not state.stop.is_set():
                    state.put_back(job, retry=True)
                    continue
                state.finish(
                    job,
                    InstanceOutcome(
                        job.file.path,
                        job.file.sop_instance_uid,
                        None,
                        job.last_error
                        if job.last_error == INTERRUPTED
                        else f"not stored: {job.last_error}",
                        job.attempts,
                        index,
                    ),
                )
                _progress(state, cfg, index)
                continue
            except (OSError, DatasetParseError, ValueError) as exc:
                # A local problem with this file; part of a message may be on the wire, so the
                # association cannot carry on. Retrying would read the same bytes again.
                drop(abort=True)
                state.finish(
                    job,
                    InstanceOutcome(
                        job.file.path,
                        job.file.sop_instance_uid,
                        None,
                        f"not sent: cannot read the file: {_describe(exc)}",
                        job.attempts,
                        index,
                    ),
                )
                _progress(state, cfg, index)
                continue
            category = status_category(resp.status)
            if category == "failure" and job.attempts < cfg.max_attempts:
                job.last_error = f"0x{resp.status:04X} {status_meaning(resp.status)}"
                # Retry on a fresh association, after a pause that lets a busy receiver recover.
                drop(abort=False)
                state.put_back(job, retry=True)
                state.stop.wait(min(0.1 * 2**job.attempts, 2.0))
                continue
            state.finish(
                job,
                InstanceOutcome(
                    job.file.path,
                    job.file.sop_instance_uid,
                    resp.status,
                    status_meaning(resp.status),
                    job.attempts,
                    index,
                    resp.error_comment,
                ),
            )
            _progress(state, cfg, index)
    finally:
        drop(abort=state.stop.is_set())
        state.worker_exit()


def _progress(state: _State, cfg: _Config, index: int | None) -> None:
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


# -- entry point ------------------------------------------------------------------------------


def _echo(cfg: _Config) -> None:
    """C-ECHO the receiver; any failure becomes one :class:`ConnectionFailedError` line."""
    where = (
        f"DICOM receiver {cfg.host}:{cfg.port} "
        f"(called AE {cfg.called_aet!r}, calling AE {cfg.calling_aet!r})"
    )
    pairs = [
        (VERIFICATION_SOP_CLASS, _EXPLICIT_VR_LITTLE_ENDIAN),
        (VERIFICATION_SOP_CLASS, IMPLICIT_VR_LITTLE_ENDIAN),
    ]
    try:
        assoc = cfg.associate(pairs)
    except ssl.SSLError as exc:
        raise ConnectionFailedError(f"TLS handshake with {where} failed: {exc}") from exc
    except (OSError, DimseError) as exc:
        raise ConnectionFailedError(f"{where}: {_describe(exc)}") from exc
    try:
        if not any(r.accepted for r in assoc.contexts.values()):
            # The association itself was accepted, which is what C-ECHO is here to prove.
            logger.info("%s does not support C-ECHO; continuing", where)
            return
        resp = assoc.echo()
        if resp.status != 0:
            raise ConnectionFailedError(f"{where}: C-ECHO answered 0x{resp.status:04X}")
    except DimseError as exc:
        raise ConnectionFailedError(f"{where}: C-ECHO failed: {exc.message}") from exc
    finally:
        assoc.release()


def _check_aets(called_aet: str, calling_aet: str) -> None:
    for kind, aet in (("called", called_aet), ("calling", calling_aet)):
        if not 0 < len(aet) <= 16 or not aet.isascii() or "\\" in aet:
            raise InputError(f"{kind} AE title {aet!r} must be 1-16 ASCII characters")


def check_receiver(
    *,
    host: str,
    port: int = 8104,
    called_aet: str = "XNAT",
    calling_aet: str = "XNATIO",
    tls: DicomTls | None = None,
    timeout: float = 60.0,
    tcp_quickack: bool = True,
) -> None:
    """C-ECHO a receiver: the check :func:`xnatio.send_dicom_store` makes before sending.

    A caller that keeps state about a send (the resume journal) runs this first and then sends
    with ``echo=False``, so that a receiver that refuses us leaves no trace of a send that never
    began.

    Parameters
    ----------
    host, port
        The receiver.
    called_aet, calling_aet
        The receiver's AE title and ours.
    tls
        Use TLS with these settings.
    timeout
        Seconds allowed to connect and for each answer.
    tcp_quickack
        As for :class:`~xnatio.options.DicomOptions`.

    Raises
    ------
    InputError
        An AE title that is not 1-16 ASCII characters; TLS files that cannot be loaded.
    ConnectionFailedError
        One line: closed port, unreachable host, rejected association, TLS failure, or a
        C-ECHO answered with a failure.
    """
    echo_receiver(
        DicomOptions(
            host=host,
            port=port,
            called_aet=called_aet,
            calling_aet=calling_aet,
            tls=tls,
            timeout=timeout,
            tcp_quickack=tcp_quickack,
        )
    )


def echo_receiver(options: DicomOptions, *, budget: ConnectionBudget | None = None) -> None:
    """:func:`check_receiver` with the settings of an upload (holding a slot of ``budget``)."""
    cfg = _config(options, None, None, 0, 0)
    with slot(budget):
        _echo(cfg)


def _context_groups(pairs_of: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Split the (SOP Class, Transfer Syntax) pairs into groups of at most 128."""
    counts: dict[tuple[str, str], int] = {}
    for pair in pairs_of:
        counts[pair] = counts.get(pair, 0) + 1
    pairs = sorted(counts, key=lambda p: (-counts[p], p))
    return [pairs[i : i + _MAX_CONTEXTS] for i in range(0, len(pairs), _MAX_CONTEXTS)]


@dataclass
class StoreRun:
    """What :func:`store_instances` did.

    Attributes
    ----------
    outcomes
        One :class:`InstanceOutcome` per instance, in inventory order (instances Ctrl-C left
        without an outcome are "not sent: interrupted").
    duration
        Seconds from the C-ECHO (or the first association) to the end of the last association.
    associations
        Associations opened for sending (the C-ECHO's not counted).
    cancelled
        True when Ctrl-C stopped the send.
    """

    outcomes: list[InstanceOutcome] = field(default_factory=list)
    duration: float = 0.0
    associations: int = 0
    cancelled: bool = False


def store_instances(
    inventory: Inventory,
    *,
    options: DicomOptions,
    comment: str | None,
    progress_callback: ProgressCallback | None = None,
    echo: bool = True,
    on_instance: Callable[[InstanceOutcome], None] | None = None,
    budget: ConnectionBudget | None = None,
) -> StoreRun:
    """Send every instance of ``inventory`` over parallel associations.

    Parameters
    ----------
    inventory
        The instances to send, and where their bytes come from.
    options
        Receiver, AE titles, associations, TLS, timeouts, attempts.
    comment
        The Patient Comments routing string to splice into every data set, or None.
    progress_callback
        Receives ``uploading`` events from the worker threads.
    echo
        C-ECHO the receiver first (skip when the caller already did).
    on_instance
        Called once per instance as soon as its final outcome is known, from the worker threads;
        if it raises, the send stops and :func:`store_instances` raises that exception.
    budget
        A connection budget shared with other uploads: each association (and the C-ECHO) holds
        one slot while it is open, so ``options.associations`` is an upper bound per session.

    Returns
    -------
    StoreRun
        One outcome per instance, and whether Ctrl-C stopped the send.

    Raises
    ------
    InputError
        Nothing to send; TLS files that cannot be loaded.
    ConnectionFailedError
        The C-ECHO failed.
    """
    files = inventory.files
    if not files:
        raise InputError("no DICOM files to send")
    cfg = _config(options, comment, progress_callback, len(files), sum(f.size for f in files))
    cfg = dataclasses.replace(cfg, budget=budget)
    started = time.monotonic()
    if echo:
        with slot(budget):
            _echo(cfg)

    pairs = [(f.sop_class_uid, _syntax(inventory, f)) for f in files]
    groups = _context_groups(pairs)
    group_of = {pair: g for g, members in enumerate(groups) for pair in members}
    jobs: list[_Job] = []
    pre_failed: dict[int, InstanceOutcome] = {}
    for i, f in enumerate(files):
        if not f.sop_class_uid or not f.sop_instance_uid:
            pre_failed[i] = InstanceOutcome(
                f.path, f.sop_instance_uid, None, "not sent: no SOP Class or Instance UID", 0, None
            )
            continue
        jobs.append(_Job(i, f, pairs[i], group_of[pairs[i]]))
    workers = max(1, min(options.associations, len(jobs)))
    state = _State(jobs, groups, workers, on_instance)
    state.outcomes.update(pre_failed)
    state.done = len(pre_failed)
    state.report(list(pre_failed.values()))
    if state.callback_error is not None:
        raise state.callback_error
    try:
        _progress(state, cfg, None)
    except KeyboardInterrupt:  # stopped before any association started: nothing was sent
        cancelled = True
    else:
        cancelled = _run_workers(state, cfg, inventory, workers if jobs else 0)
    if state.callback_error is not None:
        raise state.callback_error
    outcomes = [
        state.outcomes.get(i)
        or InstanceOutcome(f.path, f.sop_instance_uid, None, "not sent: interrupted", 0, None)
        for i, f in enumerate(files)
    ]
    return StoreRun(outcomes, time.monotonic() - started, state.associations, cancelled)


def _run_workers(state: _State, cfg: _Config, inventory: Inventory, workers: int) -> bool:
    """Run the association threads to the end; True when Ctrl-C stopped them."""
    threads = [
        threading.Thread(
            target=_worker, args=(state, cfg, inventory), name=f"xnatio-cstore-{n}", daemon=True
        )
        for n in range(workers)
    ]
    try:  # Ctrl-C (or SIGTERM) while threads start stops the ones already running
        for t in threads:
            t.start()
        for t in threads:
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


def _config(
    options: DicomOptions,
    comment: str | None,
    progress: ProgressCallback | None,
    total: int,
    bytes_total: int,
) -> _Config:
    """The workers' view of ``options``; loads the TLS files (an InputError when it cannot)."""
    _check_aets(options.called_aet, options.calling_aet)
    try:
        ssl_context = options.tls.context() if options.tls is not None else None
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"cannot load the TLS files: {exc}") from exc
    return _Config(
        options.host,
        options.port,
        options.called_aet,
        options.calling_aet,
        options.timeout,
        ssl_context,
        options.max_attempts,
        comment,
        total,
        bytes_total,
        progress,
        options.tcp_quickack,
    )
