"""Terminal rendering for the command line: a live progress line and the final summary.

Only the CLI uses this module; the library reports through progress callbacks and result objects.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from xnatio.progress import ProgressEvent


class _AmountColumn(ProgressColumn):
    """Bytes for the sending task, plain counts (files, batches) for the others."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn(binary_units=False)

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "bytes":
            return self._bytes.render(task)
        total = "?" if task.total is None else str(int(task.total))
        return Text(f"{int(task.completed)}/{total} {task.fields.get('unit', '')}".rstrip())


class _RateColumn(ProgressColumn):
    """Transfer rate for the sending task only."""

    def __init__(self) -> None:
        super().__init__()
        self._speed = TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "bytes":
            return self._speed.render(task)
        return Text("")


class ProgressDisplay:
    """Renders progress events on stderr: bytes with rate and ETA, batches done, retries.

    Falls back to occasional plain lines when stderr is not a terminal, and to nothing when
    ``mode`` is ``"none"``. With ``mode="json"`` each event is one JSON line on stderr.
    """

    def __init__(self, mode: str = "auto", stream: TextIO | None = None, unit: str = "batches"):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "none"
        self.mode = mode
        self.unit = unit
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._last_line = 0.0

    def __enter__(self) -> ProgressDisplay:
        if self.mode == "bar":
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                _AmountColumn(),
                _RateColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[extra]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        """The progress callback: thread-safe."""
        with self._lock:
            if self.mode == "json":
                record: dict[str, Any] = {
                    "time": round(time.time(), 3),
                    "phase": event.phase,
                    "current": event.current,
                    "total": event.total,
                    "message": event.message,
                    "bytes_sent": event.bytes_sent,
                    "bytes_total": event.bytes_total,
                    "batch": event.batch,
                    "retries": event.retries,
                }
                self.stream.write(json.dumps(record) + "\n")
                self.stream.flush()
            elif self.mode == "bar" and self._progress is not None:
                self._bar(event)

    def _bar(self, event: ProgressEvent) -> None:
        assert self._progress is not None
        if event.phase == "uploading":
            task = self._tasks.get("uploading")
            extra = f"{event.current}/{event.total} {self.unit}"
            if event.retries:
                extra += f", {event.retries} retries"
            if task is None:
                task = self._progress.add_task(
                    "sending", total=event.bytes_total or None, extra=extra, unit="bytes"
                )
                self._tasks["uploading"] = task
            self._progress.update(task, completed=event.bytes_sent, extra=extra)
        elif event.phase in ("scanning", "committing", "verifying"):
            task = self._tasks.get(event.phase)
            if task is None:
                unit = {"scanning": "files", "committing": "sessions"}.get(event.phase, "instances")
                task = self._progress.add_task(
                    event.phase, total=event.total or None, extra="", unit=unit
                )
                self._tasks[event.phase] = task
            self._progress.update(task, completed=event.current, total=event.total or None)


def human_bytes(n: float) -> str:
    """``1234567`` -> ``1.2 MB`` (decimal units, as network rates are quoted)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
