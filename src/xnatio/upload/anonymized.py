"""The de-identified view of an inventory: what the transports send and the checks expect.

Every file is planned once before anything is sent (:func:`anonymize_inventory`): the edit's
exact length and the identity it gives the instance (SOP Instance UID, series, scan folder)
replace the source's in a new :class:`~xnatio.inventory.Inventory` whose source,
:class:`AnonymizedSource`, opens each file *edited*. Everything downstream (tar and zip bodies,
the streaming zip, C-STORE data sets, the journal, the resume, the verification) then works on
the de-identified instances without knowing it. Opening a file plans it again (the file may
have changed since) and streams the edit from the source: pixel data is copied through, never
held; the files on disk are never written.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from xnatio.errors import InputError
from xnatio.inventory import DicomFile, Inventory, SkippedFile, Source
from xnatio.progress import ProgressCallback, ProgressEvent, Throttle, emit
from xnatio.result.journal import Journal
from xnatio.upload.anonymize import Resolved

if TYPE_CHECKING:
    # Imported where used, at run time: a plain upload does not load the engine (start-up).
    from xnatio.anonymize import Anonymizer, Edit
    from xnatio.verify import ContentCheck
    from xnatio.verify.deep import ExpectedEdits, ExpectedValue

__all__ = [
    "AnonymizedSource",
    "Applied",
    "Expectation",
    "SourceChanged",
    "anonymize_inventory",
    "apply_scripts",
    "check_journal",
    "content_check",
    "expectation",
]

logger = logging.getLogger(__name__)

_SOP_CLASS, _SOP_INSTANCE, _MODALITY = 0x00080016, 0x00080018, 0x00080060
_STUDY, _SERIES, _SERIES_NUMBER, _INSTANCE_NUMBER = 0x0020000D, 0x0020000E, 0x00200011, 0x00200013
_RECORD = 0x00120064  # De-identification Method Code Sequence: XNAT records its scripts there
# An edit this small (pieces, new bytes) is kept from the first plan, within a budget for the
# whole upload, and used again when its file is opened unchanged: the common case (scripts that
# set a few elements) then plans each file once. Other files are planned again when opened.
_KEEP_PIECES = 32
_KEEP_NEW_BYTES = 4096
_KEEP_BUDGET = 64 << 20
_PIECE_COST = 120  # bytes of memory a kept piece costs, about (object headers, tuple slots)

#: What identifies a file on disk: device, inode, size, modification time (ns).
Signature = tuple[int, int, int, int]


class SourceChanged(OSError):
    """A file no longer gives the edit it was planned with (it changed after the inventory).

    An :class:`OSError`, so the transports treat it as a file that cannot be read: the batch
    or the instance fails with this message, nothing half-edited is sent.
    """


class AnonymizedSource:
    """A source whose files open de-identified by ``anonymizer``.

    Parameters
    ----------
    source
        The files as they are (left open; :meth:`close` closes it).
    anonymizer
        The scripts to apply.
    sizes
        Each path's size in ``source`` (planning a zip member does not have to seek to its end).
    lengths
        Each path's edited length from the first plan: a file whose new plan differs has
        changed, and raises :class:`SourceChanged`. None: not checked.
    kept
        Edits from the first plan, with the signature of the file they were made from: opened
        again with the same signature, the file is not planned again.
    """

    def __init__(
        self,
        source: Source,
        anonymizer: Anonymizer,
        sizes: Mapping[str, int],
        lengths: Mapping[str, int] | None = None,
        kept: Mapping[str, tuple[Signature, Edit]] | None = None,
    ) -> None:
        self.root: Path = source.root
        self.source = source
        self.anonymizer = anonymizer
        self._sizes = sizes
        self._lengths = lengths
        self._kept = kept or {}

    def plan(self, path: str, *, changes: bool = True) -> Edit:
        """Plan ``path`` (raises :class:`AnonymizeError` or :class:`InstanceRejected`)."""
        return self.plan_signed(path, changes=changes)[0]

    def plan_signed(self, path: str, *, changes: bool = True) -> tuple[Edit, Signature | None]:
        """:meth:`plan`, with the signature of the file planned (None if it has none)."""
        with self.source.open(path) as raw:
            sig = _signature(raw)
            edit = self.anonymizer.plan(raw, key=path, size=self._sizes.get(path), changes=changes)
            return edit, sig

    def open(self, path: str) -> BinaryIO:
        """Open ``path`` edited, from its first byte.

        Raises
        ------
        SourceChanged
            The file changed since it was planned, or the scripts cannot be applied any more.
        """
        from xnatio.anonymize import AnonymizeError, InstanceRejected

        raw = self.source.open(path)
        kept = self._kept.get(path)
        if kept is not None and kept[0] == _signature(raw):  # the same file: its plan holds
            return cast(BinaryIO, _EditedStream(kept[1], raw))
        try:
            edit = self.anonymizer.plan(raw, key=path, size=self._sizes.get(path), changes=False)
            want = self._lengths.get(path) if self._lengths is not None else None
            if want is not None and edit.length != want:
                raise SourceChanged(f"{path}: changed since it was planned for anonymisation")
            if _rewind(raw):
                return cast(BinaryIO, _EditedStream(edit, raw))
            raw.close()
            raw = self.source.open(path)
            return cast(BinaryIO, _EditedStream(edit, raw))
        except (AnonymizeError, InstanceRejected) as exc:
            raw.close()
            raise SourceChanged(f"{path}: {exc.message}") from None
        except BaseException:
            raw.close()
            raise

    def close(self) -> None:
        """Close the underlying source."""
        self.source.close()


def _signature(raw: BinaryIO) -> Signature | None:
    try:
        st = os.fstat(raw.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None  # an archive member: no file of its own to tell a change by
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _cost(edit: Edit) -> int | None:
    """Memory a kept edit costs (about); None when it is too big to keep."""
    new = sum(len(p) for p in edit.pieces if isinstance(p, bytes))
    if len(edit.pieces) > _KEEP_PIECES or new > _KEEP_NEW_BYTES:
        return None
    return new + _PIECE_COST * (len(edit.pieces) + len(edit.identity) + 4)


def _rewind(raw: BinaryIO) -> bool:
    try:
        if raw.seekable():
            raw.seek(0)
            return True
    except (AttributeError, OSError, ValueError):
        pass
    return False


class _EditedStream(io.RawIOBase):
    """The edited bytes of one file; closing it closes the source file."""

    def __init__(self, edit: Edit, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._file = edit.open(raw)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        from xnatio.anonymize import AnonymizeError  # loaded already: this stream has an edit

        try:
            return self._file.readinto(buffer)
        except AnonymizeError as exc:
            raise SourceChanged(exc.message) from None

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def _anonymized_file(f: DicomFile, edit: Edit) -> DicomFile:
    """``f`` as the edit makes it: its new length and, where the scripts changed them, the
    identity XNAT files and names it by."""
    new = edit.identity
    return dataclasses.replace(
        f,
        size=edit.length,
        sop_class_uid=new.get(_SOP_CLASS, f.sop_class_uid),
        sop_instance_uid=new.get(_SOP_INSTANCE, f.sop_instance_uid),
        modality=new.get(_MODALITY, f.modality),
        study_instance_uid=new.get(_STUDY, f.study_instance_uid),
        series_instance_uid=new.get(_SERIES, f.series_instance_uid),
        series_number=new.get(_SERIES_NUMBER, f.series_number),
        instance_number=new.get(_INSTANCE_NUMBER, f.instance_number),
    )


def anonymize_inventory(
    inventory: Inventory,
    anonymizer: Anonymizer,
    *,
    progress_callback: ProgressCallback | None = None,
) -> Inventory:
    """Plan every file of ``inventory``; return the de-identified view.

    Files the scripts reject (``reject[]``) are left out, listed as skipped, as XNAT drops
    them. The view's source is an :class:`AnonymizedSource` over the same source (closing the
    view closes it).

    Raises
    ------
    InputError
        A script cannot be applied to a file (named), or a file cannot be read: nothing is
        sent.
    """
    from xnatio.anonymize import AnonymizeError, InstanceRejected

    files = inventory.files
    sizes = {f.path: f.size for f in files}
    source = AnonymizedSource(inventory.source, anonymizer, sizes)
    throttle = Throttle()

    def plan(f: DicomFile) -> tuple[Edit, Signature | None] | str:
        try:
            return source.plan_signed(f.path, changes=False)
        except InstanceRejected as exc:
            return f"rejected by the anonymisation script ({exc.message})"
        except AnonymizeError as exc:
            raise InputError(f"{f.path}: {exc.message}; nothing was sent") from None
        except OSError as exc:
            raise InputError(f"{f.path}: cannot read it to anonymise it: {exc}") from None

    sent: list[DicomFile] = []
    kept: dict[str, tuple[Signature, Edit]] = {}
    budget = _KEEP_BUDGET
    skipped = list(inventory.skipped)
    # In this thread: the plan is Python, and a pool's hand-overs cost more than they save
    # (3,000 files, page-cached: 0.45 s here, 0.9 s on two threads, 1.3 s on one pool thread).
    for i, f in enumerate(files, 1):
        planned = plan(f)
        if isinstance(planned, str):
            skipped.append(SkippedFile(f.path, planned))
        else:
            edit, sig = planned
            sent.append(_anonymized_file(f, edit))
            cost = _cost(edit)
            if sig is not None and cost is not None and cost <= budget:
                kept[f.path] = (sig, edit)
                budget -= cost
        if progress_callback is not None and (i == len(files) or throttle.ready()):
            emit(progress_callback, ProgressEvent("scanning", i, len(files), "anonymising"))
    lengths = {f.path: f.size for f in sent}
    view = AnonymizedSource(inventory.source, anonymizer, sizes, lengths, kept)
    return Inventory(source=view, files=sent, skipped=skipped)


@dataclass(frozen=True)
class Expectation:
    """What the verification compares stored files with when XNAT edits them after receipt.

    Attributes
    ----------
    source
        The local files with the local scripts and then the server's applied.
    expected_edits
        Per instance, the elements XNAT may still store differently (``...``: any value):
        its record of the scripts it ran, De-identification Method Code Sequence (0012,0064).
    """

    source: Source
    expected_edits: ExpectedEdits | None


def expectation(view: Inventory, resolved: Resolved, salt: str | None) -> Expectation:
    """How the verification sees the de-identified files of ``view``.

    Without server-side scripts the view itself; otherwise the view's files with the server's
    scripts applied after the local ones (sizes and names stay the view's: XNAT names and
    files an instance by what it received).
    """
    assert isinstance(view.source, AnonymizedSource)
    both = resolved.expecting(salt)
    if both is None:
        return Expectation(view.source, None)
    raw = view.source

    def record(_: DicomFile) -> Mapping[int, ExpectedValue]:
        return {_RECORD: ...}

    return Expectation(AnonymizedSource(raw.source, both, raw._sizes), record)


def check_journal(journal: Journal | None, resolved: Resolved | None, *, resume: bool) -> str:
    """Refuse to mix de-identifications in one session; return the run's salt.

    The journal's earlier runs recorded the digest of their scripts. A run with other scripts
    (or none, or scripts after none) would put differently de-identified instances in one
    session, or send identified ones next to de-identified ones: refused while the journal
    holds confirmed instances. The salt of ``newUID``/``mapUID`` is the journal's, so a resume
    makes the same new UIDs as the run it completes.

    Raises
    ------
    InputError
        The journal's instances were sent with other scripts.
    """
    import secrets

    digest = resolved.digest if resolved is not None else ""
    if journal is None:
        return secrets.token_hex(16)
    state = journal.state
    if state.confirmed and state.anonymize != digest:
        before = f"scripts sha256 {state.anonymize[:12]}" if state.anonymize else "no scripts"
        now = f"scripts sha256 {digest[:12]}" if digest else "no scripts"
        what = "--resume" if resume else "sending again"
        raise InputError(
            f"journal {journal.path} records {len(state.confirmed)} instances sent with other "
            f"de-identification ({before}; this run: {now}); {what} would mix them in one "
            "session. Use the same --anonymize settings, or delete the session in XNAT and "
            "send with --no-journal"
        )
    salt = state.salt if state.salt and state.anonymize == digest else secrets.token_hex(16)
    journal.anonymization = (digest, salt) if digest else None
    return salt


@dataclass(frozen=True)
class Applied:
    """An upload's de-identification, planned: its scripts and what the checks expect.

    Attributes
    ----------
    resolved
        The scripts.
    expectation
        The source and expected edits the verification compares stored files with.
    """

    resolved: Resolved
    expectation: Expectation

    @property
    def prevent_anon(self) -> bool:
        """Whether REST imports ask XNAT not to apply its scripts again."""
        return self.resolved.prevent_anon


def apply_scripts(
    inventory: Inventory,
    resolved: Resolved | None,
    journal: Journal | None,
    *,
    resume: bool,
    progress_callback: ProgressCallback | None,
) -> tuple[Inventory, Applied | None]:
    """The inventory an upload sends, de-identified by ``resolved`` (unchanged when None).

    The journal is checked first (:func:`check_journal`): a run never mixes its scripts with
    an earlier run's, nor de-identified data with identified data.

    Raises
    ------
    InputError
        The journal was written with other scripts; a script fails on a file; the scripts
        rejected every file.
    """
    salt = check_journal(journal, resolved, resume=resume)
    if resolved is None:
        return inventory, None
    logger.info("de-identifying %d files with %s", len(inventory.files), resolved.describe())
    view = anonymize_inventory(
        inventory, resolved.anonymizer(salt), progress_callback=progress_callback
    )
    if inventory.files and not view.files:
        raise InputError(
            f"the anonymisation scripts rejected all {len(inventory.files)} files "
            f"({resolved.describe()}); nothing to send"
        )
    return view, Applied(resolved, expectation(view, resolved, salt))


def content_check(source: Source, applied: Applied | None, *, deep: bool) -> ContentCheck:
    """The verification's view of the local files: as sent, and as XNAT edits them after."""
    from xnatio.verify import ContentCheck

    if applied is None:
        return ContentCheck(source, deep=deep)
    e = applied.expectation
    return ContentCheck(e.source, deep=deep, expected_edits=e.expected_edits)
