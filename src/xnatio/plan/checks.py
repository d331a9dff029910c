"""Pre-flight checks: is this inventory one XNAT session?

:func:`check_inventory` refuses sources XNAT would not store as one session (several studies,
conflicting duplicates) and drops identical duplicates.
"""

from __future__ import annotations

import dataclasses

from xnatio.errors import InputError
from xnatio.inventory import DicomFile, Inventory, SkippedFile

__all__ = ["check_inventory"]


def _same_bytes(inv: Inventory, a: DicomFile, b: DicomFile) -> bool:
    if a.size != b.size:
        return False
    with inv.source.open(a.path) as fa, inv.source.open(b.path) as fb:
        while True:
            ca = fa.read(1 << 20)
            cb = fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def check_inventory(inv: Inventory, *, allow_multiple_studies: bool = False) -> Inventory:
    """Check that ``inv`` can be sent as one XNAT session.

    Parameters
    ----------
    inv
        The inventory to check.
    allow_multiple_studies
        Accept several StudyInstanceUIDs (XNAT then makes one session per study).

    Returns
    -------
    Inventory
        A new inventory on the same source, without identical duplicates (they are added to
        ``skipped`` as ``"duplicate of <path>"``).

    Raises
    ------
    InputError
        Several studies (unless allowed), or two files with the same SOP Instance UID and
        different bytes.
    """
    studies: dict[str, int] = {}
    for f in inv.files:
        studies[f.study_instance_uid] = studies.get(f.study_instance_uid, 0) + 1
    if len(studies) > 1 and not allow_multiple_studies:
        shown = ", ".join(f"{uid or '<none>'} ({n} files)" for uid, n in list(studies.items())[:3])
        more = f" and {len(studies) - 3} more" if len(studies) > 3 else ""
        raise InputError(
            f"SOURCE holds {len(studies)} studies ({shown}{more}); XNAT would split them into "
            "separate sessions. Upload one study per session, or pass --allow-multiple-studies"
        )

    first: dict[str, DicomFile] = {}
    dupes: list[tuple[DicomFile, DicomFile]] = []
    for f in inv.files:
        seen = first.setdefault(f.sop_instance_uid, f)
        if seen is not f:
            dupes.append((seen, f))
    if not dupes:
        return dataclasses.replace(inv, files=list(inv.files), skipped=list(inv.skipped))

    dropped: set[int] = set()
    skipped = list(inv.skipped)
    for original, dup in dupes:
        if not _same_bytes(inv, original, dup):
            raise InputError(
                f"{original.path} and {dup.path} share SOP Instance UID {dup.sop_instance_uid} "
                "but differ; XNAT would keep only one of them. Remove the wrong file"
            )
        dropped.add(id(dup))
        skipped.append(SkippedFile(dup.path, f"duplicate of {original.path}"))
    files = [f for f in inv.files if id(f) not in dropped]
    skipped.sort(key=lambda s: s.path)
    return dataclasses.replace(inv, files=files, skipped=skipped)
