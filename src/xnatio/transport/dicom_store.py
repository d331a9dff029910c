"""The C-STORE transport: send instances to XNAT's DICOM receiver (or any Storage SCP).

A C-ECHO, then parallel associations whose presentation contexts come from the inventory's (SOP
Class, Transfer Syntax) pairs. Each file's data set is sent as the bytes it has on disk; only
Patient Comments (0010,4000) is rewritten in memory to carry XNAT's routing string. Per-instance
statuses follow DICOM PS3.4 annex B: what cannot succeed is not sent again, what may succeed
later is retried a bounded number of times without holding up the other associations
(:mod:`xnatio.transport.store_workers`). The orchestration around it (plan, journal, resume,
verification) is :mod:`xnatio.upload`.

The network layer is :mod:`xnatio.dimse.client`, a lean Storage SCU (see its docstring for the
measurements that led to it).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from xnatio.budget import ConnectionBudget, slot
from xnatio.dicom.dataset import IMPLICIT_VR_LITTLE_ENDIAN, DatasetParseError, open_dataset
from xnatio.dicom.syntax import classify, native_uid
from xnatio.dimse.client import VERIFICATION_SOP_CLASS, DimseError
from xnatio.dimse.status import status_category, status_meaning
from xnatio.errors import ConnectionFailedError, InputError
from xnatio.inventory import DicomFile, Inventory
from xnatio.options import DicomOptions, DicomTls
from xnatio.progress import ProgressCallback
from xnatio.transport.store_workers import (
    INTERRUPTED,
    REFUSED,
    InstanceOutcome,
    Job,
    SendState,
    StoreConfig,
    describe,
    report_progress,
    run_workers,
    uid_name,
)

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


def _syntax(inventory: Inventory, f: DicomFile) -> str | None:
    """The transfer syntax to send ``f`` in, or None when none can carry its bytes as they are.

    The file's own, except that a data set whose bytes are in the other VR style than its
    syntax says (:attr:`~xnatio.inventory.DicomFile.vr_mismatch`) goes in the native syntax
    those bytes are in: sent under its label, a receiver would misread it (Orthanc waits for the
    rest of a data set that never comes). No syntax has implicit VR with compressed pixel data,
    or implicit VR big endian: such a file is not sent. Files without a meta group are
    recognised by their bytes.
    """
    if f.transfer_syntax_uid:
        if not f.vr_mismatch:
            return f.transfer_syntax_uid
        declared = classify(f.transfer_syntax_uid)
        if declared is None or declared.encapsulated or declared.deflated:
            return None
        if not declared.little_endian:
            return None
        return native_uid(not declared.explicit_vr, True)
    try:
        with inventory.source.open(f.path) as stream:
            return open_dataset(stream).transfer_syntax_uid
    except (OSError, DatasetParseError):
        return IMPLICIT_VR_LITTLE_ENDIAN


def _unsendable(f: DicomFile, has_syntax: bool) -> str:
    """Why ``f`` cannot be sent at all (found before any association), or ``""``."""
    if not f.sop_class_uid or not f.sop_instance_uid:
        return "not sent: no SOP Class or Instance UID"
    if not has_syntax:
        declared = classify(f.transfer_syntax_uid)
        style = "implicit" if declared is None or declared.explicit_vr else "explicit"
        return (
            f"not sent: its data set is {style} VR, which its transfer syntax "
            f"{uid_name(f.transfer_syntax_uid)} cannot carry; a receiver would misread it"
        )
    return ""


# -- entry point ------------------------------------------------------------------------------


def _echo(cfg: StoreConfig) -> None:
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
    except (OSError, DimseError) as exc:
        if cfg.ssl_context is not None:
            import ssl  # loaded already (the context was made with it); kept off plain sends

            if isinstance(exc, ssl.SSLError):
                raise ConnectionFailedError(f"TLS handshake with {where} failed: {exc}") from exc
        raise ConnectionFailedError(f"{where}: {describe(exc)}") from exc
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

    syntaxes = [_syntax(inventory, f) for f in files]
    pairs = {i: (files[i].sop_class_uid, ts) for i, ts in enumerate(syntaxes) if ts}
    groups = _context_groups(list(pairs.values()))
    group_of = {pair: g for g, members in enumerate(groups) for pair in members}
    jobs: list[Job] = []
    pre_failed: dict[int, InstanceOutcome] = {}
    for i, f in enumerate(files):
        why = _unsendable(f, i in pairs)
        if why:
            pre_failed[i] = InstanceOutcome(f.path, f.sop_instance_uid, None, why, 0, None)
            continue
        jobs.append(Job(i, f, pairs[i], group_of[pairs[i]]))
    workers = max(1, min(options.associations, len(jobs)))
    state = SendState(jobs, groups, on_instance)
    state.outcomes.update(pre_failed)
    state.done = len(pre_failed)
    state.report(list(pre_failed.values()))
    if state.callback_error is not None:
        raise state.callback_error
    try:
        report_progress(state, cfg, None)
    except KeyboardInterrupt:  # stopped before any association started: nothing was sent
        cancelled = True
    else:
        cancelled = run_workers(state, cfg, inventory, workers if jobs else 0)
    if state.callback_error is not None:
        raise state.callback_error
    outcomes = [
        state.outcomes.get(i)
        or InstanceOutcome(f.path, f.sop_instance_uid, None, "not sent: interrupted", 0, None)
        for i, f in enumerate(files)
    ]
    return StoreRun(outcomes, time.monotonic() - started, state.associations, cancelled)


def _config(
    options: DicomOptions,
    comment: str | None,
    progress: ProgressCallback | None,
    total: int,
    bytes_total: int,
) -> StoreConfig:
    """The workers' view of ``options``; loads the TLS files (an InputError when it cannot)."""
    _check_aets(options.called_aet, options.calling_aet)
    try:
        ssl_context = options.tls.context() if options.tls is not None else None
    except OSError as exc:  # ssl.SSLError included
        raise InputError(f"cannot load the TLS files: {exc}") from exc
    return StoreConfig(
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
