"""One orchestration for both transports: inventory → plan → transport → verify → result.

:func:`upload_session` takes the transport's settings as a value object (:class:`RestOptions` or
:class:`DicomOptions`). The seed's entry points, :func:`upload_dicom_parallel_rest` and
:func:`send_dicom_store`, keep their keyword arguments and call the same code, so both get the
journal, ``resume``, the wait for XNAT to settle and the verification.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from xnatio.config import XnatConfig
from xnatio.errors import InputError
from xnatio.inventory import Inventory
from xnatio.options import (
    ArchiveFormat,
    Compress,
    DicomOptions,
    DicomTls,
    ImportHandler,
    Overwrite,
    RestOptions,
    parse_workers,
)
from xnatio.plan import UploadPlan
from xnatio.progress import ProgressCallback
from xnatio.result.outcome import DicomStoreResult, UploadResult
from xnatio.transport.ratelimit import parse_rate
from xnatio.upload.steps import Target
from xnatio.verify.levels import VerifyLevel

if TYPE_CHECKING:
    from xnatio.transport.dicom_store import InstanceOutcome
    from xnatio.upload.anonymize import Anonymization, AnonymizeSpec
from xnatio.xnat.naming import validate_label

__all__ = ["send_dicom_store", "upload_dicom_parallel_rest", "upload_session"]


def _anonymization(value: AnonymizeSpec) -> Anonymization | None:
    """``anonymize=`` normalised; the de-identification code loads only when one is given."""
    if value is None:  # the common case: keep its modules off the start-up path
        return None
    from xnatio.upload.anonymize import as_anonymization

    return as_anonymization(value)


def upload_session(
    source: str | Path | UploadPlan,
    *,
    project: str,
    subject: str,
    session: str,
    transport: RestOptions | DicomOptions,
    server: XnatConfig | None = None,
    verify: bool | VerifyLevel = True,
    journal: str | Path | bool = True,
    resume: bool = False,
    allow_multiple_studies: bool = False,
    progress_callback: ProgressCallback | None = None,
    skip_unreadable: bool = False,
    anonymize: AnonymizeSpec = None,
) -> UploadResult | DicomStoreResult:
    """Upload one DICOM session to XNAT over the transport ``transport`` describes.

    Parameters
    ----------
    source
        A folder (searched recursively), a ``.zip``/``.tar``/``.tar.gz`` file, or (REST) a plan
        from :func:`xnatio.plan_upload`.
    project, subject, session
        Target labels (``[A-Za-z0-9_-]``). The project must exist.
    transport
        :class:`RestOptions` for XNAT's import service, :class:`DicomOptions` for C-STORE.
    server
        The XNAT server and credentials. Required for REST; for C-STORE it serves the resume's
        listings and the verification (without it, C-STORE goes to any Storage SCP unchecked).
    verify
        Compare the session's files with the inventory afterwards (for C-STORE, after waiting
        up to ``transport.wait`` seconds for XNAT to build and archive the session):
        ``"listing"`` (or True) matches instances by SOP Instance UID and checks listed sizes
        and digests, ``"deep"`` also downloads every stored file and compares its data
        elements, ``"none"`` (or False) skips the check (:mod:`xnatio.verify.content`).
    journal
        Keep a journal of the instances confirmed sent: True (default) in the user's cache
        folder, a path, or False for none.
    resume
        Send only what an interrupted upload did not deliver (journal plus server listings).
    allow_multiple_studies
        Accept a source holding several StudyInstanceUIDs.
    progress_callback
        Receives :class:`~xnatio.progress.ProgressEvent` objects, from worker threads too.
    skip_unreadable
        Leave out files and folders of the source that cannot be read (no permission, an I/O
        error), listed as skipped, instead of refusing the source (:class:`InputError`).
    anonymize
        De-identify every file on this machine before it is sent (docs/anonymisation.md):
        ``"server"`` (the XNAT server's site and project scripts, applied as the XNAT Desktop
        Client does; over REST XNAT is then told not to apply them again), a DicomEdit 6 script
        file, compiled :class:`~xnatio.anonymize.Script` objects, or an
        :class:`~xnatio.Anonymization` (with the Basic Profile and its options). ``None`` or
        ``"none"`` (default): files are sent as they are. The files on disk are never changed.

    Returns
    -------
    UploadResult or DicomStoreResult
        The transport's result; ``success`` is True only when everything landed and verified.

    Raises
    ------
    InputError
        Bad input found before anything was sent.
    AuthenticationError, ConnectionFailedError
        Login failed or the server was unreachable; nothing was sent.
    UploadCancelled, DicomStoreCancelled
        Ctrl-C; carries the partial result.
    """
    target = Target(project, subject, session)
    anon = _anonymization(anonymize)
    # Each transport's flow is loaded when it runs: a C-STORE upload never loads the HTTP stack
    # unless it talks to XNAT.
    if isinstance(transport, RestOptions):
        from xnatio.upload.rest_flow import run_rest

        if server is None:
            raise InputError("a REST upload needs the XNAT server (server=XnatConfig(...))")
        return run_rest(
            source,
            target,
            transport,
            server,
            verify_after=verify,
            journal=journal,
            resume=resume,
            allow_multiple_studies=allow_multiple_studies,
            progress_callback=progress_callback,
            skip_unreadable=skip_unreadable,
            anonymize=anon,
        )
    from xnatio.upload.dicom_flow import run_dicom

    return run_dicom(
        source.inventory if isinstance(source, UploadPlan) else source,
        target,
        transport,
        server,
        verify_after=verify,
        journal=journal,
        resume=resume,
        echo=True,
        allow_multiple_studies=allow_multiple_studies,
        progress_callback=progress_callback,
        skip_unreadable=skip_unreadable,
        anonymize=anon,
    )


def _reject_mixed(given: object, defaults: object, names: Sequence[str]) -> None:
    """Refuse transport keyword arguments next to an options object (which one would win?).

    ``given`` holds the keyword arguments as an options object; any of ``names`` that differs
    from ``defaults`` was passed explicitly.
    """
    clash = [n for n in names if getattr(given, n) != getattr(defaults, n)]
    if clash:
        raise InputError(
            "give the transport settings either as options=... or as keyword arguments, not "
            f"both ({', '.join(sorted(clash))})"
        )


# The keyword arguments of send_dicom_store that are DicomOptions fields.
_DICOM_KEYWORDS = (
    "host",
    "port",
    "called_aet",
    "calling_aet",
    "associations",
    "routing_tags",
    "tls",
    "timeout",
    "max_attempts",
    "tcp_quickack",
    "wait",
)


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
    upload_workers: int | str = 42,
    archive_workers: int = 5,
    archive_format: ArchiveFormat = "tar",
    compress: Compress = "auto",
    bwlimit: float | str | None = None,
    progress_callback: ProgressCallback | None = None,
    timeout: float = 10800.0,
    overwrite: Overwrite = "none",
    direct_archive: bool = False,
    import_handler: ImportHandler = "DICOM-zip",
    allow_multiple_studies: bool = False,
    verify: bool | VerifyLevel = True,
    max_attempts: int = 5,
    plan: UploadPlan | None = None,
    journal: str | Path | bool = True,
    resume: bool = False,
    options: RestOptions | None = None,
    skip_unreadable: bool = False,
    anonymize: AnonymizeSpec = None,
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
    num_batches, upload_workers, archive_workers, archive_format, compress, bwlimit, timeout,
    overwrite, direct_archive, import_handler, max_attempts
        The transport settings; see :class:`~xnatio.options.RestOptions` (``archive_workers`` is
        accepted for compatibility and ignored: archives are streamed while they are sent).
        ``upload_workers`` may be ``"auto"`` or ``"auto:N"`` (adaptive, at most 42 or N),
        ``bwlimit`` a rate such as ``"20M"`` (bytes per second, binary suffixes).
    options
        The same settings as one :class:`~xnatio.options.RestOptions`, instead of the keywords.
    progress_callback
        Receives :class:`~xnatio.progress.ProgressEvent` objects from worker threads.
    allow_multiple_studies
        Accept a source holding several StudyInstanceUIDs.
    verify
        Check the session after the commit: ``"listing"`` (or True), ``"deep"`` or ``"none"``
        (or False), as for :func:`upload_session`.
    plan
        A plan from :func:`~xnatio.plan_upload` to reuse instead of scanning ``source_dir`` again.
    journal
        Keep a journal of the instances confirmed sent: ``True`` (default) in the user's cache
        folder (:func:`xnatio.result.journal.default_journal_dir`), a path, or ``False`` for none.
    resume
        Send only what is missing after an interrupted upload: the journal narrows the
        candidates, the server's listings (archive, and the prearchive session left uncommitted)
        confirm them; the missing batches go into the same prearchive session, which is then
        committed once (``append`` when part of the session is already archived). A completed
        upload sends nothing.
    skip_unreadable, anonymize
        As for :func:`upload_session`: leave out what cannot be read; de-identify every file
        before it is sent.

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
    workers, adaptive = parse_workers(upload_workers)
    # xnatio 0.2's keywords, one by one onto the options object (as send_dicom_store does
    # for DicomOptions): the public signature is kept, so the mapping is spelt out.
    given = RestOptions(
        num_batches=num_batches,
        upload_workers=workers,
        adaptive_workers=adaptive,
        archive_workers=archive_workers,
        archive_format=archive_format,
        compress=compress,
        bwlimit=parse_rate(bwlimit) if isinstance(bwlimit, str) else bwlimit,
        timeout=timeout,
        overwrite=overwrite,
        direct_archive=direct_archive,
        import_handler=import_handler,
        max_attempts=max_attempts,
    )
    if options is not None:
        _reject_mixed(given, RestOptions(), [f.name for f in fields(RestOptions)])
    config = XnatConfig.given(server, username, password, verify_tls)
    from xnatio.upload.rest_flow import run_rest

    return run_rest(
        plan if plan is not None else source_dir,
        Target(project, subject, session),
        options or given,
        config,
        verify_after=verify,
        journal=journal,
        resume=resume,
        allow_multiple_studies=allow_multiple_studies,
        progress_callback=progress_callback,
        skip_unreadable=skip_unreadable,
        anonymize=_anonymization(anonymize),
    )


def send_dicom_store(
    *,
    source_dir: str | Path | None = None,
    inventory: Inventory | None = None,
    options: DicomOptions | None = None,
    host: str = "",
    port: int = 8104,
    called_aet: str = "XNAT",
    calling_aet: str = "XNATIO",
    num_batches: int = 45,
    project: str | None = None,
    subject: str | None = None,
    session: str | None = None,
    routing_tags: bool = True,
    tls: DicomTls | None = None,
    max_attempts: int = 3,
    progress_callback: ProgressCallback | None = None,
    echo: bool = True,
    timeout: float = 60.0,
    allow_multiple_studies: bool = False,
    tcp_quickack: bool = True,
    on_instance: Callable[[InstanceOutcome], None] | None = None,
    server: XnatConfig | None = None,
    verify: bool | VerifyLevel = True,
    wait: float = 600.0,
    journal: str | Path | bool | None = None,
    resume: bool = False,
    skip_unreadable: bool = False,
    anonymize: AnonymizeSpec = None,
) -> DicomStoreResult:
    """Send a DICOM session to a Storage SCP (XNAT's DICOM receiver) with C-STORE.

    Parameters
    ----------
    source_dir
        A folder or a ``.zip``/``.tar``/``.tar.gz`` file; scanned with
        :func:`xnatio.inventory.build_inventory`. Give this or ``inventory``.
    inventory
        An inventory already built (it is not closed here).
    options
        The transport settings as one :class:`~xnatio.options.DicomOptions`, instead of the
        keywords that follow.
    host, port, called_aet, calling_aet, num_batches, routing_tags, tls, max_attempts, timeout,
    tcp_quickack, wait
        The same settings one by one (``num_batches`` is the options' ``associations``).
    project, subject, session
        XNAT labels (``[A-Za-z0-9_-]``); all three are needed for routing tags and for checking
        the session.
    progress_callback
        Receives ``uploading`` events (instances and bytes done, association index, retries).
    echo
        C-ECHO the receiver first, so that an unreachable or refusing receiver fails early.
    allow_multiple_studies
        Accept several StudyInstanceUIDs in the source.
    on_instance
        Called once per instance as soon as its final outcome is known: accepted (success or
        warning status), or failed after its last attempt, refused context, unreadable file,
        or never sent because every association attempt failed. The outcome is the one that
        :attr:`DicomStoreResult.outcomes` will hold. Calls come from the worker threads (and
        from the calling thread for instances without UIDs, before any sending), possibly
        several at once, in completion order; each happens before the instance counts as done
        in progress events. Instances left without an outcome by Ctrl-C get no call. If the
        callback raises, the send stops (instances in flight finish, nothing new starts, no
        further calls), and :func:`send_dicom_store` raises that exception.
    server
        The XNAT server behind the receiver. With it, the session is checked after sending
        (``verify``, waiting up to ``wait`` seconds for XNAT to build and archive it) and a
        ``resume`` lists what the server holds.
    verify
        Check the session when ``server`` is given: ``"listing"`` (or True), ``"deep"`` or
        ``"none"`` (or False), as for :func:`upload_session`.
    journal
        Keep a journal of the instances the receiver confirmed: a path, True (in the user's cache
        folder) or False. The default keeps one when ``server`` is given.
    resume
        Send only what an earlier, interrupted send did not deliver.
    skip_unreadable
        As for :func:`upload_session`, for ``source_dir``.
    anonymize
        De-identify every data set before it is sent, as for :func:`upload_session`
        (``"server"`` needs ``server`` and the labels). XNAT's receiver still applies the
        server's scripts after receipt unless its anonymisation is switched off.

    Returns
    -------
    DicomStoreResult
        Counts and one outcome per instance; ``success`` is False when any instance failed or
        the verification found a mismatch.

    Raises
    ------
    InputError
        Bad labels, missing labels with routing tags, bad arguments, or nothing to send.
    ConnectionFailedError
        The C-ECHO failed: closed port, unreachable host, rejected association, TLS failure.
    DicomStoreCancelled
        Interrupted by Ctrl-C; carries the partial result.
    """
    if (source_dir is None) == (inventory is None):
        raise InputError("give either source_dir or inventory")
    # The keywords onto DicomOptions, as upload_dicom_parallel_rest does for RestOptions.
    given = DicomOptions(
        host=host,
        port=port,
        called_aet=called_aet,
        calling_aet=calling_aet,
        associations=num_batches,
        routing_tags=routing_tags,
        tls=tls,
        timeout=timeout,
        max_attempts=max_attempts,
        tcp_quickack=tcp_quickack,
        wait=wait,
    )
    if options is not None:
        _reject_mixed(given, DicomOptions(host=""), _DICOM_KEYWORDS)
    options = options or given
    if not options.host:
        raise InputError("give the receiver's host (host=...)")
    for kind, value in (("project", project), ("subject", subject), ("session", session)):
        if value is not None:
            validate_label(kind, value)
    target = (
        Target(project, subject, session)
        if project is not None and subject is not None and session is not None
        else None
    )
    source: str | Path | Inventory
    if inventory is not None:
        source = inventory
    else:
        assert source_dir is not None
        source = source_dir
    from xnatio.upload.dicom_flow import run_dicom

    return run_dicom(
        source,
        target,
        options,
        server,
        verify_after=verify,
        journal=(server is not None) if journal is None else journal,
        resume=resume,
        echo=echo,
        allow_multiple_studies=allow_multiple_studies,
        progress_callback=progress_callback,
        on_instance=on_instance,
        skip_unreadable=skip_unreadable,
        anonymize=_anonymization(anonymize),
    )
