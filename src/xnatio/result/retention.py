"""How long journals are kept: list them, and delete those not written to for a while.

Journals (:mod:`xnatio.result.journal`) and run journals (:mod:`xnatio.many.journal`) hold file
paths, labels and SOP Instance UIDs: data about patients' studies. They stay in the user's cache
folder until deleted; :func:`prune_journals` is what ``xio journal prune --older-than 30d`` runs.
A journal's age is the time since it was last written, so the journal of an upload that is still
running (or was interrupted yesterday and may be resumed) is young.
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from xnatio.errors import InputError
from xnatio.result.journal import default_journal_dir

__all__ = ["JournalFile", "PruneResult", "journal_files", "parse_age", "prune_journals"]

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """Seconds in an age such as ``30d``, ``12h``, ``90m``, ``2w`` or ``45s``.

    Raises
    ------
    InputError
        Not a number followed by one of s, m, h, d, w.
    """
    match = _AGE.match(text)
    if match is None:
        raise InputError(f"age {text!r}: give a number and a unit: 30d, 12h, 90m, 2w or 45s")
    return float(match.group(1)) * _UNIT[match.group(2).lower()]


def journal_folders() -> list[Path]:
    """The folders that hold journals: per-upload journals and upload-many run journals."""
    journals = default_journal_dir()
    return [journals, journals.parent / "runs"]


@dataclass(frozen=True)
class JournalFile:
    """One journal file: its path, size in bytes and last write (seconds since the epoch)."""

    path: Path
    size: int
    mtime: float


def journal_files() -> list[JournalFile]:
    """Every journal (``*.jsonl`` regular files, symlinks ignored), oldest first."""
    found: list[JournalFile] = []
    for folder in journal_folders():
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise InputError(f"cannot list {folder}: {exc.strerror or exc}") from None
        for entry in entries:
            if not entry.name.endswith(".jsonl"):
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                found.append(JournalFile(Path(entry.path), st.st_size, st.st_mtime))
    return sorted(found, key=lambda j: j.mtime)


@dataclass
class PruneResult:
    """What :func:`prune_journals` did (or, with ``dry_run``, would do).

    Attributes
    ----------
    removed
        Journals deleted (or to delete), oldest first.
    kept
        Journals younger than the limit.
    errors
        ``path: reason`` for journals that could not be deleted.
    """

    removed: list[JournalFile] = field(default_factory=list)
    kept: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Bytes of the removed journals."""
        return sum(j.size for j in self.removed)


def prune_journals(
    older_than: float, *, dry_run: bool = False, now: float | None = None
) -> PruneResult:
    """Delete journals not written to for ``older_than`` seconds.

    Parameters
    ----------
    older_than
        Age limit in seconds (see :func:`parse_age`); must be positive.
    dry_run
        Only report what would be deleted.
    now
        The current time (seconds since the epoch); tests pass their own.
    """
    if not older_than > 0:
        raise InputError("--older-than must be more than 0")
    cutoff = (time.time() if now is None else now) - older_than
    result = PruneResult()
    for journal in journal_files():
        if journal.mtime >= cutoff:
            result.kept += 1
            continue
        if not dry_run:
            try:
                journal.path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                result.errors.append(f"{journal.path}: {exc.strerror or exc}")
                continue
        result.removed.append(journal)
    return result
