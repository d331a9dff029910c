"""Print results files as Markdown, for docs/benchmarks.md.

Usage::

    python -m bench.report bench/results/rest-wan-small.json [...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.runner import format_phases, format_table

__all__ = ["main", "markdown"]


def markdown(report: dict[str, Any]) -> str:
    """One results file as a Markdown section body: set-up line, table, plot link.

    Parameters
    ----------
    report
        The JSON report written by :func:`bench.runner.run_scenario`.

    Returns
    -------
    str
        Markdown text.
    """
    m = report["machine"]
    commit = (m.get("commit") or "?")[:10] + (" + uncommitted changes" if m.get("dirty") else "")
    command = report.get("command") or "python -m bench " + report["scenario"]
    if report.get("sizes"):
        sets = ", ".join(
            f"{k} {v['files']:,} files / {v['bytes'] / 1e6:.0f} MB"
            for k, v in report["datasets"].items()
        )
        what = f"**x ref** = time per 1,000 files / that of {report['reference']}"
    else:
        ds = report["dataset"]
        sets = f"{ds['files']} files, {ds['bytes'] / 1e6:.0f} MB"
        what = f"**x ref** = median / median of `{report['reference']}`"
    lines = [
        f"`{command}` - {sets}, {report['repeat']} repeats, "
        f"run {report['started']} at commit `{commit}`; {what}.",
        "",
        format_table(report["summary"], markdown=True),
    ]
    phases = format_phases(report["summary"], markdown=True)
    if phases:
        lines += ["", "xio's phases, median seconds (scan files/s = files / scan s):", "", phases]
    lines += [
        "",
        f"![{report['scenario']} {report['size']}](../bench/results/"
        f"{report['scenario']}-{report['size']}.png)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print each given results file as Markdown.

    Parameters
    ----------
    argv
        Paths of ``.json`` results (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0.
    """
    for path in sys.argv[1:] if argv is None else argv:
        print(markdown(json.loads(Path(path).read_text())))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
