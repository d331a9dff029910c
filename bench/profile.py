"""Sum up py-spy profiles of client runs: where the client's time goes, by phase and function.

``python -m bench <scenario> --py-spy DIR`` runs every client under ``py-spy record`` (100
samples/s, every thread that is not idle, collapsed stacks). This module reads those files and
attributes each sample to a part of xio by the xnatio functions on its stack, in this order of
precedence (so a JSON decode inside the verification listing counts as verification, a file
opened for a tar body as sending, not as inventory):

``verification``  ``_verify`` of the REST uploader or anything in ``xnatio/verify.py``
``journal``       ``xnatio/journal.py``
``commit``        ``_commit`` of the REST uploader
``planning``      ``xnatio/plan.py`` or ``_make_body`` (batches, archive plans)
``send: archive`` a batch being sent, inside ``xnatio/archive.py`` (tar/zip bytes, file reads)
``send: http``    a batch being sent, anywhere else (httpx and the socket underneath)
``inventory``     ``xnatio/inventory.py`` otherwise (directory walk, header reads, sorting)
``dicom``         ``xnatio/dimse_*`` and the C-STORE uploader
``other xnatio``  any other stack with an xnatio frame (login, checks, progress, ...)
``outside``       no xnatio frame (imports, the bench harness)

A sample is a thread seen running, or blocked in a call py-spy does not count as idle (a socket
write waiting for the server to read counts), so the seconds are thread-seconds, not CPU.

Usage::

    python -m bench.profile DIR/xio@xl-1.txt [more.txt ...] [--top 25]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

__all__ = ["Profile", "categorise", "main", "read_profile"]

RATE_HZ = 100.0

# A frame as py-spy writes it: "function (path/to/file.py:123)" (the line part is optional).
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")

# (category, file part, function or "" for any): the first rule any frame matches wins.
_RULES: list[tuple[str, str, str]] = [
    ("verification", "xnatio/uploaders/rest.py", "_verify"),
    ("verification", "xnatio/verify.py", ""),
    ("journal", "xnatio/journal.py", ""),
    ("commit", "xnatio/uploaders/rest.py", "_commit"),
    ("planning", "xnatio/plan.py", ""),
    ("planning", "xnatio/uploaders/rest.py", "_make_body"),
    ("send", "xnatio/uploaders/rest.py", "_send_batch"),
    ("inventory", "xnatio/inventory.py", ""),
    ("dicom", "xnatio/dimse_", ""),
    ("dicom", "xnatio/uploaders/dicom_store.py", ""),
]


class Profile:
    """Samples of one or more profiles, attributed.

    Attributes
    ----------
    samples
        Total samples (one thread seen active once).
    categories
        Samples per category (see the module docstring).
    leaves
        Samples per innermost frame (``function (file)``): where the CPU actually is.
    xnatio
        Samples per innermost xnatio frame: which of xio's functions caused them.
    """

    def __init__(self) -> None:
        self.samples = 0
        self.categories: Counter[str] = Counter()
        self.leaves: Counter[str] = Counter()
        self.xnatio: Counter[str] = Counter()


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def categorise(frames: list[tuple[str, str]]) -> tuple[str, str | None]:
    """The category of one stack and its innermost xnatio frame.

    Parameters
    ----------
    frames
        ``(function, file)`` from the outermost to the innermost frame.

    Returns
    -------
    tuple
        ``(category, "function (file)" or None)``.
    """
    norm = [(func, file.replace("\\", "/")) for func, file in frames]
    ours = [(func, file) for func, file in norm if "xnatio/" in file]
    if not ours:
        return "outside", None
    func, file = ours[-1]
    where = f"{func} ({_short(file)})"
    for category, part, fname in _RULES:
        if any(part in f and (not fname or fname == fn) for fn, f in ours):
            if category == "send":
                inner = any("xnatio/archive.py" in f for _, f in ours)
                return ("send: archive" if inner else "send: http"), where
            return category, where
    return "other xnatio", where


def read_profile(path: Path, into: Profile | None = None) -> Profile:
    """Read one collapsed-stack file written by ``py-spy record -f raw``.

    Parameters
    ----------
    path
        The file.
    into
        Add to this profile instead of a new one.

    Returns
    -------
    Profile
        The attributed samples.
    """
    prof = into if into is not None else Profile()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = []
        for part in stack.split(";"):
            m = _FRAME.match(part.strip())
            if m:
                frames.append((m.group("func"), m.group("file")))
        if not frames:
            continue
        category, where = categorise(frames)
        prof.samples += count
        prof.categories[category] += count
        leaf_func, leaf_file = frames[-1]
        prof.leaves[f"{leaf_func} ({_short(leaf_file)})"] += count
        if where is not None:
            prof.xnatio[where] += count
    return prof


def _table(title: str, counter: Counter[str], total: int, top: int) -> list[str]:
    lines = [f"{title}:", f"{'seconds':>9} {'share':>6}  what"]
    for name, n in counter.most_common(top):
        lines.append(f"{n / RATE_HZ:9.2f} {100 * n / max(total, 1):5.1f}%  {name}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print where the sampled time went.

    Parameters
    ----------
    argv
        Profile files and ``--top N`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0, or 1 when no sample was read.
    """
    p = argparse.ArgumentParser(prog="python -m bench.profile")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=20)
    a = p.parse_args(argv)
    prof = Profile()
    for path in a.files:
        read_profile(path, prof)
    if not prof.samples:
        print("no samples", file=sys.stderr)
        return 1
    n = len(a.files)
    print(
        f"{prof.samples} samples at {RATE_HZ:.0f}/s over {n} profile(s) = "
        f"{prof.samples / RATE_HZ:.1f} thread-seconds active (per profile: "
        f"{prof.samples / RATE_HZ / n:.1f})"
    )
    out = _table("by part of xio", prof.categories, prof.samples, a.top)
    out += ["", *_table("by innermost xnatio function", prof.xnatio, prof.samples, a.top)]
    out += ["", *_table("by innermost frame (self time)", prof.leaves, prof.samples, a.top)]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
