"""The rich progress bar behind :class:`xnatio.cli.display.ProgressDisplay`.

Kept apart so that rich (about a tenth of the start-up time of a small upload) is imported only
when a bar is drawn: not for ``--progress none|json``, nor when stderr is not a terminal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Column, Table
from rich.text import Text

from xnatio.cli.display import (
    AMOUNT_WIDTH,
    LABEL_WIDTH,
    RATE_WIDTH,
    TIME_WIDTH,
    _bytes_pair,
    bar_width,
    clock,
)

__all__ = ["make_progress"]


class _AmountColumn(ProgressColumn):
    """``5.2/20.4 MB`` for the bytes row, ``15/42 batches`` for the others."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        if unit == "bytes":
            return Text(_bytes_pair(task.completed, task.total or 0))
        if task.total is None:
            return Text("")
        return Text(f"{int(task.completed)}/{int(task.total)} {unit}".rstrip())


class _ElapsedColumn(ProgressColumn):
    """Seconds the phase has run: the library's own figure once the phase is over."""

    def render(self, task: Task) -> Text:
        final = task.fields.get("final")
        seconds = final if final is not None else task.elapsed
        return Text(clock(seconds or 0.0))


class _Rows(Progress):
    """rich's Progress, its rows a few columns short of the terminal's width: a full-width last
    row leaves the cursor in the last column, and the terminal's echo of Ctrl-C (``^C``) would
    wrap to a new line there, shifting the final redraw down by one row."""

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        table = super().make_tasks_table(tasks)
        live = getattr(self, "live", None)  # None while rich builds the Progress
        if live is not None:
            table.width = max(60, live.console.width - 3)
        return table


def _column(width: int) -> Column:
    return Column(width=width, no_wrap=True, overflow="crop")


def make_progress(stream: TextIO) -> Progress:
    """The rows of a :class:`~xnatio.cli.display.ProgressDisplay`, drawn on ``stream``."""
    console = Console(file=stream)
    bar = bar_width(console.width)
    return _Rows(
        TextColumn("[bold]{task.description}", table_column=_column(LABEL_WIDTH)),
        BarColumn(bar_width=bar, table_column=_column(bar)),
        _AmountColumn(table_column=_column(AMOUNT_WIDTH)),
        TextColumn("{task.fields[rate]}", table_column=_column(RATE_WIDTH)),
        _ElapsedColumn(table_column=_column(TIME_WIDTH)),
        TextColumn(
            "{task.fields[note]}",
            markup=False,
            table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
        ),
        console=console,
        transient=False,
        expand=True,
    )
