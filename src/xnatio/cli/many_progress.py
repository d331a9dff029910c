"""Progress of ``xio upload-many`` on stderr: one overall bar and a line per active session.

``--progress json`` writes each event as one JSON line tagged with its session instead.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from xnatio.cli.display import LiveDisplay, human_bytes
from xnatio.many.outcome import ManyEvent

__all__ = ["ManyProgress"]


class ManyProgress(LiveDisplay[ManyEvent]):
    """Renders :class:`~xnatio.many.outcome.ManyEvent` objects (:class:`LiveDisplay`).

    Parameters
    ----------
    mode
        ``bar`` (a live display), ``json`` (one line per event), ``none``, or ``auto`` (a bar on
        a terminal, nothing otherwise).
    stream
        Where to write (standard error by default).
    """

    def __init__(self, mode: str = "auto", stream: TextIO | None = None) -> None:
        super().__init__(mode, stream)
        self._overall: TaskID | None = None
        self._lines: dict[str, TaskID] = {}
        self._sent: dict[str, int] = {}
        self._total = 0
        self._done = 0
        self._files = 0
        self._started = time.monotonic()

    def _make_progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}", justify="left"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            transient=False,
        )

    def _record(self, event: ManyEvent) -> dict[str, Any]:
        return _record(event)

    def _overall_detail(self) -> str:
        sent = sum(self._sent.values())
        rate = sent / max(time.monotonic() - self._started, 1e-3)
        return (
            f"{self._done}/{self._total} sessions, {self._files} files, "
            f"{human_bytes(sent)}, {human_bytes(rate)}/s"
        )

    def _draw(self, progress: Progress, event: ManyEvent) -> None:
        if event.kind == "start":
            self._total = event.total
            self._started = time.monotonic()
            self._overall = progress.add_task("all", total=event.total or None, detail="")
        elif event.kind == "session":
            self._lines[event.session] = progress.add_task(
                event.session, total=None, detail="reading headers"
            )
        elif event.kind == "progress" and event.event is not None:
            e = event.event
            task = self._lines.get(event.session)
            if e.phase == "uploading":
                self._sent[event.session] = e.bytes_sent
            if task is not None:
                total = e.bytes_total if e.phase == "uploading" else e.total
                done = e.bytes_sent if e.phase == "uploading" else e.current
                progress.update(task, total=total or None, completed=done, detail=e.phase)
        elif event.kind == "outcome" and event.outcome is not None:
            o = event.outcome
            self._done += 1
            self._files += o.files_sent
            self._sent[o.key] = o.bytes_sent
            task = self._lines.pop(o.key, None)
            if task is not None:
                progress.remove_task(task)
            if o.status not in ("landed", "done-earlier"):
                progress.console.print(f"{o.key}: {o.status}: {'; '.join(o.errors[:1])}")
        if self._overall is not None:
            progress.update(self._overall, completed=self._done, detail=self._overall_detail())


def _record(event: ManyEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"time": round(time.time(), 3), "kind": event.kind}
    if event.session:
        out["session"] = event.session
    if event.kind == "start":
        out.update(total=event.total, files=event.files, bytes=event.bytes)
    if event.event is not None:
        e = event.event
        out.update(
            phase=e.phase,
            current=e.current,
            total=e.total,
            message=e.message,
            bytes_sent=e.bytes_sent,
            bytes_total=e.bytes_total,
            retries=e.retries,
        )
    if event.outcome is not None:
        o = event.outcome
        out.update(status=o.status, files_sent=o.files_sent, bytes_sent=o.bytes_sent)
        out.update(verified=o.verified, errors=o.errors[:3])
    return out
