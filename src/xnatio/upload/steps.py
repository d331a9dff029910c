"""The steps every upload shares, whatever the transport: server session, plan, journal, verify.

:mod:`xnatio.upload.session` runs them in order; the transports add only what is theirs (REST
batches and the commit, C-STORE associations and the wait for XNAT to build the session).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xnatio.budget import ConnectionBudget
from xnatio.config import XnatConfig
from xnatio.errors import InputError
from xnatio.inventory import DicomFile, Inventory, build_inventory
from xnatio.plan import UploadPlan, check_inventory, plan_upload
from xnatio.progress import ProgressCallback, scan_reporter
from xnatio.xnat.naming import Labels

if TYPE_CHECKING:  # the HTTP side and the journal load when an upload uses them (start-up time)
    from xnatio.result.journal import Journal
    from xnatio.verify import ContentCheck, VerifyReport
    from xnatio.xnat.listings import ServerFile
    from xnatio.xnat.session import XnatSession

__all__ = [
    "Target",
    "open_journal",
    "plan_with_preflight",
    "preflight",
    "scan_source",
    "server_session",
    "verify",
    "xnat_session",
]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a session goes: project, subject and session labels."""

    project: str
    subject: str
    session: str

    def __str__(self) -> str:
        return f"{self.project}/{self.subject}/{self.session}"

    def labels(self) -> Labels:
        """The three labels as keywords (``**target.labels()``)."""
        return Labels(project=self.project, subject=self.subject, session=self.session)


def preflight(xnat: XnatSession, target: Target) -> list[ServerFile] | None:
    """Log in, check the project, and list the session's files (None when it does not exist).

    Raises
    ------
    InputError
        The project does not exist or is not readable: XNAT would file the data as Unassigned
        (docs/xnat-behaviour.md §3.4).
    """
    xnat.ensure_login()
    response = xnat.request("GET", f"/data/projects/{target.project}", params={"format": "json"})
    if response.status_code in (403, 404):
        raise InputError(
            f"project {target.project} does not exist on {xnat.config.server} or "
            f"{xnat.config.username} cannot read it; check the project ID (XNAT would silently "
            "file the data as Unassigned)"
        )
    xnat.check(response, f"checking project {target.project}")
    from xnatio.xnat.listings import list_session_files

    return list_session_files(xnat, target.project, target.subject, target.session)


def plan_with_preflight(
    xnat: XnatSession,
    source: str | Path | UploadPlan,
    target: Target,
    *,
    num_batches: int,
    allow_multiple_studies: bool,
    progress_callback: ProgressCallback | None,
    skip_unreadable: bool = False,
) -> tuple[UploadPlan, list[ServerFile] | None]:
    """Plan the upload while logging in and looking at the server.

    On a distant server the login and listing round trips would otherwise add to the time
    before the first byte, so they run while the headers are read. The plan's source is closed
    again if anything fails.
    """
    if isinstance(source, UploadPlan):
        try:
            return source, preflight(xnat, target)
        except BaseException:
            source.inventory.source.close()
            raise
    with cf.ThreadPoolExecutor(1, thread_name_prefix="xio-preflight") as pool:
        checks = pool.submit(preflight, xnat, target)
        plan = plan_upload(
            source,
            **target.labels(),
            num_batches=num_batches,
            allow_multiple_studies=allow_multiple_studies,
            progress_callback=progress_callback,
            skip_unreadable=skip_unreadable,
        )
        try:
            return plan, checks.result()
        except BaseException:
            plan.inventory.source.close()
            raise


def scan_source(
    source: str | Path | Inventory,
    *,
    allow_multiple_studies: bool,
    progress_callback: ProgressCallback | None,
    skip_unreadable: bool = False,
) -> tuple[Inventory, bool]:
    """The checked inventory of ``source``, and whether this call opened it (and must close it)."""
    own = not isinstance(source, Inventory)
    if isinstance(source, Inventory):
        inventory = source
    else:
        inventory = build_inventory(
            source, progress=scan_reporter(progress_callback), skip_unreadable=skip_unreadable
        )
    try:
        return check_inventory(inventory, allow_multiple_studies=allow_multiple_studies), own
    except BaseException:
        if own:
            inventory.close()
        raise


@contextlib.contextmanager
def open_journal(
    journal: str | Path | bool,
    *,
    server: str,
    target: Target,
    files: Sequence[DicomFile],
    transport: str,
) -> Iterator[Journal | None]:
    """The upload's journal (None when ``journal`` is False), closed on the way out."""
    if journal is False:
        yield None
        return
    from xnatio.result.journal import Journal, JournalKey

    key = JournalKey.create(
        server=server,
        **target.labels(),
        files=files,
        transport=transport,
    )
    log = Journal.for_upload(key, None if journal is True else journal)
    try:
        yield log
    finally:
        log.close()


def verify(
    xnat: XnatSession,
    files: Sequence[DicomFile],
    target: Target,
    *,
    wait: float,
    poll_interval: float,
    progress_callback: ProgressCallback | None,
    content: ContentCheck | None = None,
) -> VerifyReport:
    """Compare the session with ``files``, waiting up to ``wait`` seconds for XNAT to settle,
    then check the stored files' content as ``content`` says."""
    from xnatio.verify.session import await_session

    return await_session(
        xnat,
        files,
        **target.labels(),
        wait=wait,
        poll_interval=poll_interval,
        progress_callback=progress_callback,
        content=content,
    )


def xnat_session(config: XnatConfig, *, timeout: float, workers: int = 4) -> XnatSession:
    """An XNAT REST session with room for ``workers`` parallel requests plus the checks."""
    from xnatio.xnat.session import XnatSession

    return XnatSession(config, timeout=timeout, max_connections=workers + 4)


@contextlib.contextmanager
def server_session(
    config: XnatConfig,
    client: XnatSession | None,
    *,
    timeout: float,
    workers: int = 4,
    budget: ConnectionBudget | None = None,
) -> Iterator[XnatSession]:
    """``client`` when the caller shares one session among uploads (left open), else a new
    session for this upload alone, closed (logged out) on the way out."""
    if client is not None:
        yield client
        return
    from xnatio.xnat.session import XnatSession

    with XnatSession(config, timeout=timeout, max_connections=workers + 4, budget=budget) as xnat:
        yield xnat
