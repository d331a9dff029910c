"""Scanning a source: read the header of every candidate file, keep the DICOM instances.

Only the first bytes of each file are parsed, with the shared reader of :mod:`xnatio.dicom.reader`,
up to Instance Number (0020,0013), which is all the upload needs. This is several times faster
than a general parser and keeps no data set in memory, so a 100,000-file session costs one small
:class:`~xnatio.inventory.model.DicomFile` per instance.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from xnatio.dicom.reader import DicomFormatError, HeaderReader, text
from xnatio.dicom.syntax import classify
from xnatio.errors import InputError
from xnatio.inventory.model import UNREADABLE, DicomFile, Inventory, ScanProgress, SkippedFile
from xnatio.inventory.sources import MAX_EXTRACT_BYTES, DamagedMemberError, Lister, open_lister

__all__ = ["DICOMDIR_SOP_CLASS", "build_inventory", "dicom_file", "read_header"]

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_STOP = 0x00200013  # Instance Number: the highest tag the inventory needs
_META = {0x00020002: "meta_class", 0x00020003: "meta_instance", 0x00020010: "ts"}
_WANTED = {
    0x00080016: "sop_class",
    0x00080018: "sop_instance",
    0x00080060: "modality",
    0x0020000D: "study",
    0x0020000E: "series",
    0x00200011: "series_number",
    0x00200013: "instance_number",
}


def read_header(fp: BinaryIO, extra: Mapping[int, str] | None = None) -> dict[str, str] | str:
    """Read the identifying elements of a DICOM file.

    Parameters
    ----------
    fp
        The file, positioned at its first byte.
    extra
        More top-level elements to read, tag -> key in the result (discovery reads the
        attributes its label templates name); absent elements are left out.

    Returns
    -------
    dict or str
        The values found, keyed ``sop_class``, ``sop_instance``, ``study``, ``series``,
        ``series_number``, ``instance_number``, ``modality``, ``ts``, ``meta_class``, and ``vr``
        (``explicit`` or ``implicit``: what the data set's bytes show); or a skip
        reason (``"not DICOM"``, ``"DICOMDIR"``, ``"truncated or corrupt DICOM header"``, ...).
        A file without a preamble counts as DICOM only if it carries both SOP UIDs, so that
        stray binary files are not mistaken for it.
    """
    reader = HeaderReader(fp, first_read=8192)
    try:
        reader.read_meta()
        values = {name: text(reader.meta[tag]) for tag, name in _META.items() if tag in reader.meta}
        values["vr"] = "explicit" if reader.encoding.explicit_vr else "implicit"
        if values.get("meta_class") == DICOMDIR_SOP_CLASS:
            return "DICOMDIR"
        wanted = {**_WANTED, **extra} if extra else _WANTED
        for tag, raw in reader.read_dataset(max(_STOP, *wanted), wanted).items():
            values[wanted[tag]] = text(raw)
    except DicomFormatError:
        return "truncated or corrupt DICOM header" if reader.preamble else "not DICOM"
    if values.get("sop_class") == DICOMDIR_SOP_CLASS:
        return "DICOMDIR"
    if not values.get("sop_class"):
        values["sop_class"] = values.get("meta_class", "")
    if not values.get("sop_instance") or not values.get("sop_class"):
        if not reader.preamble:
            return "not DICOM"
        missing = "SOP Instance UID" if not values.get("sop_instance") else "SOP Class UID"
        return f"DICOM without {missing} (XNAT would reject it)"
    return values


def _num_key(value: str) -> tuple[int, float, str]:
    """Sort numbers numerically and anything else after them, as text."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _sort_key(f: DicomFile) -> tuple[str, tuple[int, float, str], tuple[int, float, str], str]:
    return (f.study_instance_uid, _num_key(f.series_number), _num_key(f.instance_number), f.path)


def _examine(
    source: Lister, rel: str, size: int, intern: dict[str, str]
) -> DicomFile | SkippedFile:
    try:
        with source.open(rel) as fp:
            result = read_header(fp)
            source.check_member(fp)
    except DamagedMemberError as exc:
        # A damaged archive is never a skip: what else it holds cannot be trusted either.
        raise InputError(
            f"{exc}; the archive is damaged (check it with 'unzip -t'), fix or replace it"
        ) from None
    except PermissionError:
        return SkippedFile(rel, f"{UNREADABLE}: permission denied")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return SkippedFile(rel, "symlink loop")
        return SkippedFile(rel, f"{UNREADABLE}: {exc.strerror or exc}")
    except RuntimeError as exc:  # zipfile: an encrypted member
        return SkippedFile(rel, f"{UNREADABLE}: {exc}")
    if isinstance(result, str):
        return SkippedFile(rel, result)
    return dicom_file(rel, size, result, intern)


def dicom_file(rel: str, size: int, result: Mapping[str, str], intern: dict[str, str]) -> DicomFile:
    """The :class:`DicomFile` for the values :func:`read_header` found in the file ``rel``.

    ``intern`` keeps one copy of the values many files share (study, series, class, syntax).
    """

    def shared(key: str) -> str:
        value = result.get(key, "")
        return intern.setdefault(value, value)

    declared = classify(result.get("ts", ""))
    mismatch = (
        declared is not None
        and not declared.deflated  # its VR style shows only once inflated
        and result.get("vr", "") == ("implicit" if declared.explicit_vr else "explicit")
    )

    return DicomFile(
        path=rel,
        size=size,
        sop_instance_uid=result["sop_instance"],
        sop_class_uid=shared("sop_class"),
        study_instance_uid=shared("study"),
        series_instance_uid=shared("series"),
        series_number=shared("series_number"),
        instance_number=result.get("instance_number", ""),
        transfer_syntax_uid=shared("ts"),
        modality=shared("modality"),
        vr_mismatch=mismatch,
    )


def _refuse_unreadable(source: str | Path, skipped: list[SkippedFile]) -> None:
    """One line listing what could not be read (an unknown part of the session)."""
    bad = sorted((s for s in skipped if s.unreadable), key=lambda s: s.path)
    if not bad:
        return
    shown = ", ".join(f"{s.path} ({s.reason.partition(': ')[2] or s.reason})" for s in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    raise InputError(
        f"cannot read {len(bad)} {'file or folder' if len(bad) == 1 else 'files or folders'} "
        f"in SOURCE {str(source)!r}: {shown}{more}; fix their permissions, or pass "
        "--skip-unreadable to upload the rest without them"
    )


def _summarise_reasons(skipped: list[SkippedFile]) -> str:
    counts: dict[str, int] = {}
    for s in skipped:
        counts[s.reason] = counts.get(s.reason, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return ", ".join(f"{n} {reason}" for reason, n in top)


def build_inventory(
    source: str | Path,
    *,
    workers: int = 4,
    progress: ScanProgress | None = None,
    max_extract_bytes: int = MAX_EXTRACT_BYTES,
    skip_unreadable: bool = False,
) -> Inventory:
    """Scan ``source`` (folder, .zip, .tar, .tar.gz/.tgz) and read DICOM headers only.

    Parameters
    ----------
    source
        A folder (searched recursively) or an archive file.
    workers
        Threads reading headers in parallel (helps on cold caches and network file systems).
    progress
        Called as ``progress(files_done, files_total)`` from the calling thread, at most a few
        hundred times per scan and always once at the end.
    max_extract_bytes
        Refuse archives that expand to more than this many bytes.
    skip_unreadable
        Leave out files and folders that cannot be read (no permission, an I/O error) and
        list them in :attr:`Inventory.skipped`, instead of refusing the source.

    Returns
    -------
    Inventory
        DICOM files sorted by study, series number, instance number and path (numbers compare
        numerically), and the skipped files with reasons. Close it (or use ``with``) when done.

    Raises
    ------
    InputError
        Missing source, unsupported, unsafe or damaged archive (a bad header, checksum or CRC,
        a truncated member), empty folder, files or folders that cannot be read (unless
        ``skip_unreadable``), or no DICOM file found.
    """
    src = open_lister(Path(source), max_extract_bytes)
    try:
        candidates, skipped = src.entries()
        if not candidates and not skipped:
            raise InputError(
                f"SOURCE {str(source)!r} is empty; give the folder holding the DICOM files"
            )
        total = len(candidates)
        files: list[DicomFile] = []
        intern: dict[str, str] = {}
        step = max(1, total // 200)
        # Small chunks for small scans keep the progress display moving.
        chunk = max(1, min(64, total // 100))

        def work(start: int) -> list[DicomFile | SkippedFile]:
            return [
                _examine(src, rel, size, intern) for rel, size in candidates[start : start + chunk]
            ]

        done = 0
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for results in pool.map(work, range(0, total, chunk)):
                for r in results:
                    if isinstance(r, DicomFile):
                        files.append(r)
                    else:
                        skipped.append(r)
                before = done
                done += len(results)
                if progress is not None and (done // step != before // step or done == total):
                    progress(done, total)
        if not skip_unreadable:
            _refuse_unreadable(source, skipped)
        if not files:
            raise InputError(
                f"no DICOM files found in {str(source)!r} ({len(skipped)} files skipped: "
                f"{_summarise_reasons(skipped)}); check SOURCE"
            )
        files.sort(key=_sort_key)
        skipped.sort(key=lambda s: s.path)
        return Inventory(source=src, files=files, skipped=skipped)
    except BaseException:
        src.close()
        raise
