"""Where a session is on the server, and the full check against the local inventory.

One look (:func:`look`) lists the archived session, the prearchive rows of the session or its
study, and other labels holding the study; :func:`await_session` repeats looks until the answer
cannot change any more (XNAT builds a C-STORE session after an idle period and then archives it,
docs/xnat-behaviour.md §4.2 and §6.3). Both transports, ``xio verify`` and the demo use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from xnatio.config import XnatConfig
from xnatio.errors import InputError, ServerResponseError
from xnatio.inventory import DicomFile, Inventory, Source, build_inventory
from xnatio.progress import ProgressCallback, ProgressEvent, emit
from xnatio.verify.comparison import Comparison, compare, comparison_dict
from xnatio.verify.content import ContentCheck, check_content
from xnatio.verify.deep import ExpectedEdits
from xnatio.verify.identify import identify
from xnatio.xnat.listings import (
    PrearchiveSession,
    ServerFile,
    find_prearchive_sessions,
    is_settling,
    list_other_labels,
    list_prearchive_files,
    list_session_files,
)
from xnatio.xnat.naming import routing_comment
from xnatio.xnat.session import XnatSession, describe_connect_error

__all__ = [
    "Location",
    "VerifyReport",
    "await_session",
    "look",
    "server_state",
    "verify_session",
    "wait_until_settled",
    "waiting_event",
]

Location = Literal["archived", "prearchive", "archived+prearchive", "other-label", "absent"]


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_session`.

    Attributes
    ----------
    project, subject, session
        The session checked.
    location
        ``archived``, ``prearchive`` (not archived yet), ``archived+prearchive`` (archived, with
        more data still in the prearchive), ``other-label`` (the study is on the server under
        another session label or project) or ``absent``.
    where
        One sentence saying where the session is.
    comparison
        The archived session's files against the inventory (None when not archived).
    prearchive
        Prearchive rows with this session label (or this study) in the project or Unassigned.
    prearchive_comparison
        The prearchive files against the inventory, when the server lists them.
    other_labels
        ``project/subject/label`` of archived sessions holding the same StudyInstanceUID.
    waited
        Seconds spent waiting for the session to appear or settle.
    """

    project: str
    subject: str
    session: str
    location: Location
    where: str
    comparison: Comparison | None = None
    prearchive: list[PrearchiveSession] = field(default_factory=list)
    prearchive_comparison: Comparison | None = None
    other_labels: list[str] = field(default_factory=list)
    waited: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the session is archived, nothing of it is left in the prearchive, and it
        holds every instance exactly once, in place, with plausible content (extra files, which
        hold no instance of the source, are allowed and reported)."""
        c = self.comparison
        return self.location == "archived" and c is not None and c.ok and c.matched == c.expected

    def problems(self) -> list[str]:
        """One line per failure, for display and for ``result.errors``."""
        out: list[str] = []
        if self.location != "archived":
            out.append(self.where)
        if self.comparison is not None:
            out += self.comparison.problems()
        return out

    def remarks(self) -> list[str]:
        """Lines that are not failures: extra files and notes on what was not compared."""
        c = self.comparison
        if c is None:
            return []
        return [f"extra file on the server (not in the source): {e}" for e in c.extra] + c.notes

    def to_dict(self) -> dict[str, Any]:
        """The full comparison as plain data (for ``--json``)."""
        return {
            "ok": self.ok,
            "project": self.project,
            "subject": self.subject,
            "session": self.session,
            "location": self.location,
            "where": self.where,
            "waited": round(self.waited, 3),
            "archive": comparison_dict(self.comparison),
            "prearchive": [asdict(p) for p in self.prearchive],
            "prearchive_comparison": comparison_dict(self.prearchive_comparison),
            "other_labels": self.other_labels,
            "problems": self.problems(),
        }


def look(
    xnat: XnatSession,
    files: Sequence[DicomFile],
    project: str,
    subject: str,
    session: str,
    *,
    cache: dict[ServerFile, str | None] | None = None,
) -> VerifyReport:
    """One look at the server: archive, prearchive, other labels.

    Stored files are matched to the local instances by SOP Instance UID; the headers of files
    whose names do not tell are read from the server (``cache`` keeps them between looks).
    """
    study_uids = {f.study_instance_uid for f in files}
    listed_files = list_session_files(xnat, project, subject, session)
    comparison = (
        compare(files, listed_files, identify(xnat, files, listed_files, cache=cache))
        if listed_files is not None
        else None
    )
    pre = find_prearchive_sessions(xnat, project, session, study_uids)
    pre_cmp: Comparison | None = None
    counted: list[PrearchiveSession] = []
    pre_files: list[ServerFile] = []
    listable = True
    for p in pre:
        listed = list_prearchive_files(xnat, p.url) if listable else None
        if listed is None:
            listable = False
            counted.append(p)
            continue
        pre_files += listed
        counted.append(dataclasses.replace(p, files=len(listed)))
    if pre and listable:
        pre_cmp = compare(files, pre_files, identify(xnat, files, pre_files, cache=cache))
    others = (
        list_other_labels(xnat, project, subject, session, study_uids)
        if listed_files is None
        else []
    )
    ours = [p for p in counted if p.project == project and p.name == session]
    elsewhere = [p for p in counted if p not in ours]

    def describe(p: PrearchiveSession) -> str:
        n = f", {p.files} files" if p.files is not None else ""
        return f"{p.url} (status {p.status}{n})"

    location: Location
    if listed_files is not None:
        if ours:
            location = "archived+prearchive"
            where = (
                f"archived as {project}/{subject}/{session}, with more data still in the "
                "prearchive: " + "; ".join(describe(p) for p in ours)
            )
        else:
            location = "archived"
            where = f"archived as {project}/{subject}/{session}"
    elif ours:
        location = "prearchive"
        where = "in the prearchive, not archived yet: " + "; ".join(describe(p) for p in ours)
    elif others or elsewhere:
        location = "other-label"
        found = others + [describe(p) + f" labelled {p.name}" for p in elsewhere]
        where = (
            f"{project}/{subject}/{session} is not on the server, but this study is: "
            + "; ".join(found)
        )
    else:
        location = "absent"
        where = f"{project}/{subject}/{session} is neither archived nor in the prearchive"
    return VerifyReport(
        project=project,
        subject=subject,
        session=session,
        location=location,
        where=where,
        comparison=comparison,
        prearchive=counted,
        prearchive_comparison=pre_cmp,
        other_labels=others,
    )


def _settled(report: VerifyReport) -> bool:
    """True when waiting longer cannot change the answer."""
    if report.location == "absent":
        # A C-STORE session may not have been created or archived yet.
        return False
    return not any(is_settling(p) for p in report.prearchive)


def verify_session(
    *,
    # The keywords every public function on a session takes (XnatConfig.keywords, Labels),
    # the same in each: a caller passes **config.keywords() and **labels.
    server: str,
    username: str,
    password: str,
    project: str,
    subject: str,
    session: str,
    verify_tls: bool | str = True,
    source_dir: str | Path | None = None,
    inventory: Inventory | Sequence[DicomFile] | None = None,
    wait: float = 0.0,
    poll_interval: float = 2.0,
    progress_callback: ProgressCallback | None = None,
    xnat: XnatSession | None = None,
    deep: bool = False,
    expected_edits: ExpectedEdits | None = None,
    skip_unreadable: bool = False,
) -> VerifyReport:
    """Check that an XNAT session holds exactly the instances of a local source.

    Matches stored files to local instances by SOP Instance UID, per scan (SeriesNumber),
    whatever names the server uses (reading the headers of files whose names do not tell),
    checks that each stored file can hold its instance (listed size and MD5), and says where the
    session is: archived, still in the prearchive, under another label, or absent.

    Parameters
    ----------
    server, username, password, verify_tls
        The XNAT server and credentials.
    project, subject, session
        The session to check.
    source_dir, inventory
        The local source (a folder or archive, scanned here), or an inventory already built, or
        its list of files (then only identity is checked: there are no local bytes to compare).
        Give exactly one.
    wait
        Seconds to wait for the session to appear and settle (XNAT builds a C-STORE session after
        an idle period and then archives it). 0 looks once.
    poll_interval
        Seconds between looks while waiting.
    progress_callback
        Receives ``waiting`` events while waiting (what XNAT is doing, the seconds waited) and
        ``verifying`` events while the check runs.
    xnat
        An open session to reuse instead of logging in.
    deep
        Download every stored file and compare its data elements with the local file
        (:mod:`xnatio.verify.deep`).
    expected_edits
        Changes the server is expected to make to each instance (anonymisation), allowed by the
        deep comparison.
    skip_unreadable
        Leave out files and folders of ``source_dir`` that cannot be read, instead of refusing
        the source: the comparison is then with the readable part only.

    Returns
    -------
    VerifyReport
        ``report.ok`` is True when everything matches.

    Raises
    ------
    InputError
        Neither or both of ``source_dir`` and ``inventory``; an unreadable source.
    AuthenticationError, ConnectionFailedError
        Login failed or the server was unreachable.
    """
    if (source_dir is None) == (inventory is None):
        raise InputError("give either source_dir or inventory")
    with contextlib.ExitStack() as stack:
        source: Source | None = None
        files: Sequence[DicomFile]
        if source_dir is not None:
            inv = stack.enter_context(build_inventory(source_dir, skip_unreadable=skip_unreadable))
            files, source = list(inv.files), inv.source
        elif isinstance(inventory, Inventory):
            files, source = inventory.files, inventory.source
        else:
            assert inventory is not None
            files = inventory
        if not files:
            raise InputError("the source holds no DICOM files to compare")
        content = (
            ContentCheck(source, deep=deep, expected_edits=expected_edits)
            if source is not None
            else None
        )
        if xnat is None:
            config = XnatConfig.given(server, username, password, verify_tls)
            xnat = stack.enter_context(XnatSession(config, timeout=300.0))
            xnat.login()
        return await_session(
            xnat,
            files,
            project=project,
            subject=subject,
            session=session,
            wait=wait,
            poll_interval=poll_interval,
            progress_callback=progress_callback,
            content=content,
        )
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns or raises


def await_session(
    xnat: XnatSession,
    files: Sequence[DicomFile],
    *,
    project: str,
    subject: str,
    session: str,
    wait: float = 0.0,
    poll_interval: float = 2.0,
    progress_callback: ProgressCallback | None = None,
    content: ContentCheck | None = None,
) -> VerifyReport:
    """Look at the session until it matches, cannot change any more, or ``wait`` seconds pass.

    This is the one rule for "wait for XNAT, then compare": after a REST commit (the session is
    archived at once) and after a C-STORE send (XNAT builds the session after its idle period, and
    archives it when the project auto-archives). The content checks run once, on the last look.

    Parameters
    ----------
    xnat
        A logged-in session.
    files
        The instances expected.
    project, subject, session
        The session to check.
    wait, poll_interval
        Seconds to keep looking at most, and between looks. 0 looks once.
    progress_callback
        Receives ``waiting`` events while waiting, then one ``verifying`` event.
    content
        The local source and how far to check the stored files' content
        (:mod:`xnatio.verify.content`); None checks identity only.

    Returns
    -------
    VerifyReport
        The last look, with ``waited`` set.
    """
    started = time.monotonic()
    cache: dict[ServerFile, str | None] = {}
    while True:
        try:
            report = look(xnat, files, project, subject, session, cache=cache)
        except httpx.TransportError as exc:
            # The server may be restarting: keep looking while there is time, then say so in
            # one line (the data was sent; only the check is missing).
            waited = time.monotonic() - started
            if waited >= wait:
                raise ServerResponseError(
                    f"could not check {project}/{subject}/{session}: "
                    f"{describe_connect_error(xnat.config.server, exc)}; run xio verify when "
                    "it answers again"
                ) from None
            emit(
                progress_callback,
                ProgressEvent(
                    "waiting",
                    0,
                    0,
                    "XNAT does not answer; looking again",
                    elapsed=waited,
                    state="unreachable",
                ),
            )
            time.sleep(max(0.05, min(poll_interval, wait - waited)))
            continue
        waited = time.monotonic() - started
        report.waited = waited
        if report.ok or waited >= wait or _settled(report):
            c = report.comparison
            if content is not None and c is not None:
                check_content(
                    xnat,
                    files,
                    c,
                    content,
                    routing=routing_comment(project, subject, session),
                    progress_callback=progress_callback,
                )
            emit(
                progress_callback,
                ProgressEvent("verifying", c.matched if c else 0, len(files), report.where),
            )
            return report
        emit(progress_callback, waiting_event(report, len(files), waited))
        time.sleep(max(0.05, min(poll_interval, wait - waited)))


# What XNAT is doing, by the state of :func:`server_state`, in words for a waiting user.
_DOING = {
    "absent": "nothing of the session is on XNAT yet",
    "receiving": "XNAT is receiving the session; it builds it once no file has arrived for its "
    "idle time (5 minutes by default)",
    "building": "XNAT is building the session in the prearchive",
    "archiving": "XNAT is archiving the session",
    "moving": "XNAT is moving the session in the prearchive",
    "ready": "XNAT has built the session; it archives it next (the project auto-archives)",
    "archived": "archived",
}


def server_state(status: str) -> str:
    """A prearchive status as a waiting event's ``state``: ``RECEIVING_INTERRUPT`` ->
    ``receiving``, ``QUEUED_BUILDING`` -> ``building``, ``READY`` -> ``ready``, ..."""
    word = status.strip("_").removeprefix("QUEUED_").split("_")[0].lower()
    return word or "unknown"


def waiting_event(report: VerifyReport, expected: int, waited: float) -> ProgressEvent:
    """The ``waiting`` event for one look: XNAT's state in words, the instances it holds of
    ``expected`` (0 of 0 when its listings do not say), and the seconds waited so far."""
    ours = [p for p in report.prearchive if p.project == report.project]
    ours = [p for p in ours if p.name == report.session] or ours
    c = report.comparison
    if report.location == "archived":
        state = "archived"
    elif ours:
        state = server_state(ours[0].status)
    else:
        state = report.location if report.location == "absent" else "elsewhere"
    held = c.matched if c is not None else 0
    if report.prearchive_comparison is not None:
        held += report.prearchive_comparison.matched
    known = c is not None or report.prearchive_comparison is not None
    doing = _DOING.get(state, report.where)
    if state == "archived":
        doing = f"archived as {report.project}/{report.subject}/{report.session}; listing it"
    return ProgressEvent(
        "waiting",
        min(held, expected) if known else 0,
        expected if known else 0,
        doing,
        elapsed=waited,
        state=state,
    )


def wait_until_settled(
    xnat: XnatSession,
    *,
    project: str,
    session: str,
    wait: float,
    poll_interval: float = 2.0,
    progress_callback: ProgressCallback | None = None,
) -> float:
    """Wait while XNAT is still receiving, building or archiving the session's prearchive rows.

    Data sent into a prearchive session that XNAT is archiving would start a second session, and
    listings are only meaningful once it has settled; a resume therefore waits here first.

    Returns
    -------
    float
        Seconds waited (at most about ``wait``).
    """
    started = time.monotonic()
    while True:
        busy = [
            p
            for p in find_prearchive_sessions(xnat, project, session)
            if p.project == project and p.name == session and is_settling(p)
        ]
        waited = time.monotonic() - started
        if not busy or waited >= wait:
            return waited
        state = server_state(busy[0].status)
        emit(
            progress_callback,
            ProgressEvent(
                "waiting",
                0,
                0,
                f"before resuming: {_DOING.get(state, 'XNAT is busy with the session')} "
                f"({busy[0].url}, status {busy[0].status})",
                elapsed=waited,
                state=state,
            ),
        )
        time.sleep(max(0.05, min(poll_interval, wait - waited)))
