"""Is the stored file of each instance plausibly, or exactly, the local file?

Identity (:mod:`xnatio.verify.identify`) says that a stored file holds the right instance; these
checks say that it holds all of it. XNAT may rewrite what it stores (docs/xnat-behaviour.md §3.4
step 11: new file meta information, decompression, compression on arrival; step 12:
anonymisation), so sizes and digests are only compared where such a rewrite cannot explain the
difference.

**Listing checks** (the default, from the listing alone wherever it can be):

- *Size.* A stored file smaller than the local file may have lost its file meta information or
  anonymised elements, but not pixel data: a listed ``Size`` below the local file's Pixel Data
  length (or below the bytes of its two SOP UIDs) cannot hold the instance. Before that counts as
  a failure the stored file's header is read: a file XNAT stored in another transfer syntax
  (compressed on arrival) is not held to the local pixel data length.
- *Digest.* When the listed ``Size`` equals the local size, no rewrite happened that changes the
  size, and the bytes should be the local bytes: a listed MD5 ``digest`` is then compared with the
  local file's. A mismatch is settled by downloading the stored file: a file that is not what the
  listing says (another MD5), or whose data elements differ, fails; one whose only change is its
  file meta information (group 0002, rewritten by XNAT with the same length) passes with a note.

**Deep checks** (``deep=True``): every stored file is downloaded and compared element by element
(:mod:`xnatio.verify.deep`), and its length and MD5 with what the listing says.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xnatio.dicom.reader import DicomFormatError, HeaderReader
from xnatio.dicom.syntax import classify
from xnatio.inventory import DicomFile, Source
from xnatio.progress import ProgressCallback, ProgressEvent, emit
from xnatio.verify.bounded import bounded_map
from xnatio.verify.comparison import Comparison
from xnatio.verify.deep import CompareAgain, ExpectedEdits, compare_streams
from xnatio.verify.levels import VERIFY_LEVELS, VerifyLevel, verify_level
from xnatio.verify.remote import RemoteReadError, remote_header, remote_stream
from xnatio.xnat.listings import ServerFile
from xnatio.xnat.session import XnatSession

__all__ = [
    "VERIFY_LEVELS",
    "ContentCheck",
    "VerifyLevel",
    "check_content",
    "local_md5",
    "pixel_data_bytes",
    "verify_level",
]


_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_BEFORE_PIXELS = 0x7FE00007
_UNDEFINED = 0xFFFFFFFF
# read(n) allocates n bytes per call: 64 KiB stays below malloc's mmap threshold, where 1 MiB
# made every call map and unmap memory (most DICOM files are smaller anyway).
_READ = 1 << 16


@dataclass(frozen=True)
class ContentCheck:
    """How far verification looks into the stored files, beyond their identity.

    Attributes
    ----------
    source
        The local files (an inventory's source, open for the whole check).
    deep
        Download every stored file and compare its data elements with the local file.
    expected_edits
        For an instance, the top-level elements the server is expected to change and the values
        it should store (anonymisation); see :data:`xnatio.verify.deep.ExpectedEdits`.
    workers
        Files checked at once (each holds at most a few MiB in memory).
    """

    source: Source
    deep: bool = False
    expected_edits: ExpectedEdits | None = None
    workers: int = 8


@dataclass
class _Outcome:
    path: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def pixel_data_bytes(source: Source, f: DicomFile) -> int:
    """Bytes of the local file's Pixel Data value (0 without one), reading its header only."""
    with source.open(f.path) as fp:
        reader = HeaderReader(fp, strict=False)
        reader.read_meta()
        walker = reader.dataset_walker()
        start = 0 if reader.encoding.deflated else reader.dataset_offset
        pos, _ = walker.walk(start, _BEFORE_PIXELS, ())
        if walker.at_end(pos):
            return 0
        tag, _, value, length = walker.element(pos, walker.explicit)
        if tag not in _PIXEL_TAGS:
            return 0
        if length != _UNDEFINED:
            return length
        return 0 if reader.encoding.deflated else max(0, f.size - value)


def local_md5(source: Source, f: DicomFile) -> str:
    """MD5 (hex) of the local file."""
    md5 = hashlib.md5(usedforsecurity=False)
    with source.open(f.path) as fp:
        while chunk := fp.read(_READ):
            md5.update(chunk)
    return md5.hexdigest()


def _where(sf: ServerFile) -> str:
    return f"{sf.scan}/{sf.name}"


class _Checker:
    """The checks of one comparison: one method per kind, run in worker threads."""

    def __init__(self, xnat: XnatSession, check: ContentCheck, routing: str | None) -> None:
        self.xnat = xnat
        self.check = check
        self.routing = routing

    def needs_work(self, f: DicomFile, sf: ServerFile) -> bool:
        if self.check.deep:
            return True
        return sf.size is not None and (sf.size < f.size or (sf.size == f.size and bool(sf.digest)))

    def listing(self, f: DicomFile, sf: ServerFile) -> _Outcome:
        out = _Outcome(f.path)
        assert sf.size is not None
        if sf.size < f.size:
            self._size(f, sf, out)
        elif sf.digest and local_md5(self.check.source, f) != sf.digest:
            settled = self.deep(f, sf)
            out.notes += settled.notes
            if settled.problems:
                out.problems += [
                    f"the listed MD5 is not the local file's; {p}" for p in settled.problems
                ]
            else:
                out.notes.append(
                    f"{_where(sf)}: stored with other file meta information (group 0002) of the "
                    "same length; every data element is the local file's"
                )
        return out

    def _size(self, f: DicomFile, sf: ServerFile, out: _Outcome) -> None:
        assert sf.size is not None
        floor = 16 + len(f.sop_class_uid) + len(f.sop_instance_uid)
        pixels = pixel_data_bytes(self.check.source, f)
        if sf.size >= max(floor, pixels):
            return
        what = f"its {pixels} bytes of pixel data" if pixels > floor else "the instance"
        try:
            header = remote_header(self.xnat, sf.uri)
        except RemoteReadError as exc:
            out.problems.append(
                f"the server lists {sf.size} bytes for {_where(sf)}, too few for {what}, and {exc}"
            )
            return
        stored_syntax = header.get("ts", "") if isinstance(header, dict) else ""
        mine, theirs = classify(f.transfer_syntax_uid), classify(stored_syntax)
        if (
            pixels
            and theirs is not None
            and theirs.encapsulated
            and not (mine and mine.encapsulated)
        ):
            out.notes.append(
                f"{_where(sf)}: stored compressed (transfer syntax {stored_syntax}); its size "
                "was not held to the local pixel data"
            )
            return
        out.problems.append(
            f"the server lists {sf.size} bytes for {_where(sf)}, too few for {what}"
        )

    def deep(self, f: DicomFile, sf: ServerFile) -> _Outcome:
        out = _Outcome(f.path)
        edits = self.check.expected_edits(f) if self.check.expected_edits is not None else None
        try:
            for fast in (True, False):  # bytes first; elements only where the bytes differ
                with (
                    self.check.source.open(f.path) as local,
                    remote_stream(self.xnat, sf.uri) as body,
                ):
                    try:
                        found = compare_streams(
                            local, body.stream(), expected=edits, routing=self.routing, fast=fast
                        )
                    except CompareAgain:
                        continue
                    except DicomFormatError as exc:
                        out.problems.append(f"{_where(sf)} cannot be compared: {exc}")
                        return out
                    body.drain()
                    break
        except RemoteReadError as exc:
            out.problems.append(str(exc))
            return out
        except OSError as exc:
            out.problems.append(f"cannot read the local file: {exc}")
            return out
        if sf.size is not None and body.size != sf.size:
            out.problems.append(
                f"the server lists {sf.size} bytes for {_where(sf)} but sent {body.size}"
            )
        if sf.digest and body.md5() != sf.digest:
            out.problems.append(
                f"the server lists MD5 {sf.digest} for {_where(sf)}, but the file it sent has "
                f"MD5 {body.md5()}"
            )
        if found.differences:
            out.problems.append(f"{_where(sf)}: {found.summary()}")
        out.notes += [f"{_where(sf)}: {n}" for n in found.notes]
        return out


def check_content(
    xnat: XnatSession,
    files: Sequence[DicomFile],
    comparison: Comparison,
    check: ContentCheck,
    *,
    routing: str | None = None,
    progress_callback: ProgressCallback | None = None,
) -> None:
    """Check the stored file of every instance found exactly once; record what fails.

    Failures go to ``comparison.content`` (which makes it not ``ok``), remarks to
    ``comparison.notes``; ``comparison.checked`` says which checks ran.

    Parameters
    ----------
    xnat
        A logged-in session to read stored files with.
    files
        The local instances compared.
    comparison
        The result of :func:`xnatio.verify.comparison`, updated here.
    check
        The local source and how far to look.
    routing
        The Patient Comments string that routes the session over C-STORE.
    progress_callback
        Receives ``verifying`` events while deep checks run.
    """
    checker = _Checker(xnat, check, routing)
    by_path = {f.path: f for f in files}
    todo = [
        (by_path[path], sf)
        for path, sf in comparison.stored.items()
        if path in by_path and checker.needs_work(by_path[path], sf)
    ]
    comparison.checked = "deep" if check.deep else "listing"
    run: Callable[[DicomFile, ServerFile], _Outcome] = (
        checker.deep if check.deep else checker.listing
    )

    def one(item: tuple[DicomFile, ServerFile]) -> _Outcome:
        try:
            return run(*item)
        except (OSError, DicomFormatError) as exc:
            return _Outcome(item[0].path, [f"cannot check the local file: {exc}"])

    if not todo:
        return
    done = 0
    workers = min(check.workers, len(todo))
    with cf.ThreadPoolExecutor(workers, thread_name_prefix="xio-check") as pool:
        for outcome in bounded_map(pool, one, todo, ahead=4 * workers):
            comparison.content += [(outcome.path, p) for p in outcome.problems]
            comparison.notes += outcome.notes
            done += 1
            if check.deep and (done % 50 == 0 or done == len(todo)):
                emit(
                    progress_callback,
                    ProgressEvent("verifying", done, len(todo), "comparing the stored files"),
                )
