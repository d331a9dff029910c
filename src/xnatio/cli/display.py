"""Terminal rendering for the command line: live progress rows and the numbers the summary shares.

Only the CLI uses this module; the library reports through progress callbacks and result objects.

The bar has one row per phase, in fixed-width columns so that nothing moves when a row appears:

* ``scanning``: files whose headers were read;
* ``sending``: file bytes sent, the rate (bytes sent over the seconds since sending began, the
  definition the summary and ``--json`` use) and the time left at that rate;
* ``acknowledged`` (REST: batches XNAT answered for) or ``stored`` (C-STORE: instances the
  receiver answered for), with retries and failures: bytes run ahead of these, since a batch's
  bytes are all sent before XNAT answers;
* ``committing``, then ``waiting`` (what XNAT is doing with a C-STORE session, and for how long;
  no countdown: XNAT decides when it is done) and ``verifying``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Generic, Self, TextIO, TypeVar

from xnatio.progress import ProgressEvent

if TYPE_CHECKING:  # rich is loaded when a bar is drawn (start-up time; see cli/bar.py)
    from rich.progress import Progress, TaskID

E = TypeVar("E")  # the events a display renders

# Column widths (characters); fixed, so rows that appear later line up with the first ones.
LABEL_WIDTH, BAR_WIDTH, AMOUNT_WIDTH, RATE_WIDTH, TIME_WIDTH = 12, 24, 19, 11, 7
# Room kept for the last column (what XNAT is doing, time left): a narrow terminal gets a
# shorter bar first.
NOTE_WIDTH = 40


def bar_width(terminal: int) -> int:
    """The bar's width in a terminal ``terminal`` columns wide (8 to 24)."""
    others = LABEL_WIDTH + AMOUNT_WIDTH + RATE_WIDTH + TIME_WIDTH + 5 + 3  # gaps, and 3 spare
    return max(8, min(BAR_WIDTH, terminal - others - NOTE_WIDTH))


def human_bytes(n: float) -> str:
    """``1234567`` -> ``1.2 MB`` (decimal units, as network rates are quoted)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_rate(n_bytes: int, seconds: float) -> str:
    """Bytes over seconds as ``12.3 MB/s``: the one rate of the bar, the summary and ``--json``
    (``-`` when nothing was sent or no time passed)."""
    if n_bytes <= 0 or seconds <= 0:
        return "-"
    return f"{human_bytes(n_bytes / seconds)}/s"


def clock(seconds: float) -> str:
    """``75.2`` -> ``0:01:15``."""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _bytes_pair(done: float, total: float) -> str:
    """``5.2/20.4 MB``: both in the unit the total needs."""
    scale, unit = 1.0, "B"
    for step, name in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if total >= step:
            scale, unit = step, name
            break
    if unit == "B":
        return f"{int(done)}/{int(total)} B"
    return f"{done / scale:.1f}/{total / scale:.1f} {unit}"


# What XNAT is doing, by the ``state`` of a waiting event, short enough for the row.
_WAITING = {
    "absent": "XNAT has nothing of it yet",
    "receiving": "XNAT receiving (builds after 5 min idle)",
    "building": "XNAT building the session",
    "archiving": "XNAT archiving the session",
    "moving": "XNAT moving the session",
    "ready": "XNAT built it; archiving it next",
    "archived": "XNAT archived it; listing it",
    "unreachable": "XNAT not answering; trying again",
    "elsewhere": "XNAT has the study under another label",
}


class LiveDisplay(Generic[E]):
    """What every progress renderer shares: ``auto`` means a bar on a terminal and nothing
    elsewhere, ``json`` one JSON line per event, and events may come from several threads.

    Subclasses build the bar (:meth:`_make_progress`), say how an event is a JSON record
    (:meth:`_record`) and draw an event on the bar (:meth:`_draw`).
    """

    def __init__(self, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "none"
        self.mode = mode
        self._lock = threading.Lock()
        self._progress: Progress | None = None

    def _make_progress(self) -> Progress:
        raise NotImplementedError

    def _record(self, event: E) -> dict[str, Any]:
        raise NotImplementedError

    def _draw(self, progress: Progress, event: E) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if self.mode == "bar":
            self._progress = self._make_progress()
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(self, event: E) -> None:
        """The progress callback."""
        with self._lock:
            if self.mode == "json":
                self.stream.write(json.dumps(self._record(event)) + "\n")
                self.stream.flush()
            elif self._progress is not None:
                self._draw(self._progress, event)


class ProgressDisplay(LiveDisplay[ProgressEvent]):
    """Renders progress events on stderr: one row per phase (see the module docstring).

    Falls back to nothing when stderr is not a terminal (``mode="auto"``) or when ``mode`` is
    ``"none"``. With ``mode="json"`` each event is one JSON line on stderr.

    Parameters
    ----------
    mode
        ``auto``, ``bar``, ``json`` or ``none``.
    stream
        Where to write (stderr by default).
    unit
        What the upload acknowledges: ``batches`` (REST) or ``instances`` (C-STORE).
    """

    def __init__(self, mode: str = "auto", stream: TextIO | None = None, unit: str = "batches"):
        super().__init__(mode, stream)
        self.unit = unit
        self._tasks: dict[str, TaskID] = {}

    def _make_progress(self) -> Progress:
        from xnatio.cli.bar import make_progress

        return make_progress(self.stream)

    def _record(self, event: ProgressEvent) -> dict[str, Any]:
        return event_record(event)

    def _draw(self, progress: Progress, event: ProgressEvent) -> None:
        self._bar(event)

    # -- the bar ----------------------------------------------------------------------------

    def _row(self, key: str, label: str, unit: str, total: int | None, note: str = "") -> TaskID:
        """The row ``key``, added with its first note (never drawn without it)."""
        assert self._progress is not None
        task = self._tasks.get(key)
        if task is None:
            task = self._progress.add_task(
                label, total=total, unit=unit, rate="", note=note, final=None
            )
            self._tasks[key] = task
        return task

    def _finish(self, keys: Iterable[str], elapsed: float | None = None) -> None:
        """Stop the clocks of these rows; ``elapsed`` is the library's figure for them."""
        assert self._progress is not None
        tasks = {t.id: t for t in self._progress.tasks}
        for key in list(keys):
            task = self._tasks.get(key)
            if task is None:
                continue
            final = elapsed
            if tasks[task].stop_time is None:
                self._progress.stop_task(task)
                if final is None:
                    final = tasks[task].elapsed
            if final is not None:
                self._progress.update(task, final=final)

    def _bar(self, event: ProgressEvent) -> None:
        assert self._progress is not None
        phase = event.phase
        if phase == "uploading":
            self._uploading(event)
            return
        if phase == "done":
            self._finish(self._tasks)
            return
        self._finish(k for k in self._tasks if k != phase)
        if phase == "waiting":
            known = event.total > 0
            note = _WAITING.get(event.state, f"XNAT {event.state or event.message}")
            task = self._row(
                "waiting", "waiting", "instances", event.total if known else None, note
            )
            self._progress.update(
                task, completed=event.current, total=event.total if known else None, note=note
            )
            return
        label_unit = {
            "scanning": "files",
            "committing": "sessions",
            "archiving": "batches",
        }.get(phase, "instances")
        task = self._row(phase, phase, label_unit, event.total or None)
        self._progress.update(task, completed=event.current, total=event.total or None)
        if event.total and event.current >= event.total:
            self._finish([phase], event.elapsed or None)

    def _uploading(self, event: ProgressEvent) -> None:
        assert self._progress is not None
        self._finish(["scanning"])
        elapsed = event.elapsed
        if event.bytes_total:  # no bytes row for uploads that count files only (resources)
            sending = self._row("sending", "sending", "bytes", event.bytes_total)
            note = ""
            if event.bytes_sent and elapsed > 0 and event.bytes_sent < event.bytes_total:
                left = (event.bytes_total - event.bytes_sent) * elapsed / event.bytes_sent
                note = f"about {clock(left)} left" if left >= 1 else ""
            self._progress.update(
                sending,
                completed=event.bytes_sent,
                total=event.bytes_total,
                rate=human_rate(event.bytes_sent, elapsed),
                note=note,
            )
        label = "acknowledged" if self.unit == "batches" else "stored"
        acked = self._row("acked", label, self.unit, event.total or None)
        extra = []
        if event.retries:
            extra.append(f"{event.retries} retries")
        if event.failed:
            extra.append(f"{event.failed} failed")
        self._progress.update(
            acked, completed=event.current, total=event.total or None, note=", ".join(extra)
        )
        if event.total and event.current + event.failed >= event.total:
            self._finish(["sending", "acked"], elapsed)


def event_record(event: ProgressEvent) -> dict[str, Any]:
    """One event as the JSON object ``--progress json`` prints (one per line)."""
    return {
        "time": round(time.time(), 3),
        "phase": event.phase,
        "current": event.current,
        "total": event.total,
        "message": event.message,
        "bytes_sent": event.bytes_sent,
        "bytes_total": event.bytes_total,
        "batch": event.batch,
        "retries": event.retries,
        "elapsed": round(event.elapsed, 3),
        "state": event.state,
        "failed": event.failed,
    }
