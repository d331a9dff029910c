"""The resume rule, one for both transports: send what neither the server nor the journal confirms.

The server's listings are authoritative: the archived session, and the uncommitted prearchive
session an interrupted upload left behind (docs/xnat-behaviour.md §4.1-§4.3). What they hold is
decided by SOP Instance UID per scan (:func:`xnatio.verify.identify.identify`), whatever names
the files have: an instance another client stored under its own name is not sent again. When the
server
cannot list its prearchive (older XNATs, or a receiver that is not XNAT), an instance the journal
confirmed counts as delivered: re-sending it into the prearchive would only replace it, and the
verification after the upload catches anything lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from xnatio.errors import InputError
from xnatio.inventory import DicomFile
from xnatio.result.journal import JournalState
from xnatio.verify.comparison import held_keys
from xnatio.verify.identify import identify
from xnatio.xnat.listings import (
    PrearchiveSession,
    ServerFile,
    find_prearchive_sessions,
    list_prearchive_files,
)
from xnatio.xnat.naming import scan_id_for
from xnatio.xnat.session import XnatSession

__all__ = [
    "ServerHoldings",
    "archived_holdings",
    "gather_holdings",
    "refuse_rerun",
    "resume_todo",
]

# Prearchive states in which new data starts a new session row (docs/xnat-behaviour.md §3.4
# step 6): such a session is not one an upload can add to.
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


@dataclass
class ServerHoldings:
    """What the server already holds of a session, as ``(scan, SOP Instance UID)`` keys.

    Attributes
    ----------
    archived
        Keys of the archived session's files.
    prearchive
        Keys of the files in :attr:`sessions`, or None when the server does not list them.
    sessions
        The uncommitted prearchive sessions of this upload (same project, label and study):
        new data lands in them anyway, and they must be committed.
    """

    archived: set[tuple[str, str]] = field(default_factory=set)
    prearchive: set[tuple[str, str]] | None = field(default_factory=set)
    sessions: list[PrearchiveSession] = field(default_factory=list)


def archived_holdings(
    xnat: XnatSession, files: Sequence[DicomFile], archived: Sequence[ServerFile] | None
) -> set[tuple[str, str]]:
    """``(scan, SOP Instance UID)`` of the archived session's files (``archived``: its listing),
    reading from the server the headers of files whose names do not tell."""
    if not archived:
        return set()
    return held_keys(identify(xnat, files, archived))


def gather_holdings(
    xnat: XnatSession,
    files: Sequence[DicomFile],
    *,
    project: str,
    session: str,
    archived: Sequence[ServerFile] | None,
) -> ServerHoldings:
    """List what the server holds of the session: ``archived`` plus its prearchive sessions."""
    study_uids = {f.study_instance_uid for f in files}
    sessions = [
        p
        for p in find_prearchive_sessions(xnat, project, session, study_uids)
        if p.project == project
        and p.name == session
        and p.study_uid in study_uids
        and p.status.lstrip("_") not in _NOT_INTERRUPTIBLE
    ]
    held = archived_holdings(xnat, files, archived)
    listed: list[ServerFile] = []
    for p in sessions:
        found = list_prearchive_files(xnat, p.url)
        if found is None:
            return ServerHoldings(held, None, sessions)
        listed += found
    return ServerHoldings(held, held_keys(identify(xnat, files, listed)), sessions)


def resume_todo(
    files: Sequence[DicomFile], holdings: ServerHoldings, confirmed: set[str]
) -> tuple[list[DicomFile], dict[str, str]]:
    """Split ``files`` into those to send and those already delivered.

    Parameters
    ----------
    files
        The inventory.
    holdings
        What the server holds (:func:`gather_holdings`; an empty one for a receiver that is not
        XNAT, with ``prearchive=None`` so that the journal decides).
    confirmed
        SOP Instance UIDs the journal recorded as confirmed by the server.

    Returns
    -------
    tuple
        The files to send, and ``path -> why`` for those not sent.
    """
    todo: list[DicomFile] = []
    present: dict[str, str] = {}
    for f in files:
        key = (scan_id_for(f), f.sop_instance_uid)
        if key in holdings.archived:
            present[f.path] = "already in the archived session"
        elif holdings.prearchive is not None and key in holdings.prearchive:
            present[f.path] = "already in the uncommitted prearchive session"
        elif holdings.prearchive is None and f.sop_instance_uid in confirmed:
            present[f.path] = "confirmed by the journal (the server does not list that session)"
        else:
            todo.append(f)
    return todo, present


def refuse_rerun(
    state: JournalState,
    *,
    transport: str,
    target: str,
    files: int,
    journal_path: str,
) -> None:
    """Refuse to send a source again that an earlier run (per the journal) sent, without --resume.

    REST refuses only an unfinished earlier upload (a finished one is caught by the session
    existing); C-STORE has no "session exists" check, so it refuses any earlier run.

    Raises
    ------
    InputError
        With the way forward: ``--resume``, or for C-STORE ``--no-journal``.
    """
    if transport == "rest":
        if state.unfinished:
            raise InputError(
                f"an earlier upload of this source to {target} did not finish (journal "
                f"{journal_path}), {len(state.confirmed)} of {files} instances confirmed; run the "
                "same command with --resume to send only what is missing"
            )
        return
    if state.runs:
        what = "did not finish" if state.unfinished else "completed earlier"
        raise InputError(
            f"an earlier C-STORE send of this source to {target} {what} (journal {journal_path}, "
            f"{len(state.confirmed)} of {files} instances confirmed); add --resume to send only "
            "what is missing, or --no-journal to send everything again"
        )
