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

__all__ = ["link_summary", "main", "markdown"]


def link_summary(report: dict[str, Any]) -> str:
    """The link a results file was measured over, in words.

    Parameters
    ----------
    report
        A results file's content (older files have only a ``wan`` entry, or none).

    Returns
    -------
    str
        For example ``20 ms each way, 1 MB/s per connection``, or ``loopback``.
    """
    if report.get("profile"):
        return str(report["profile"]["summary"])
    wan = report.get("wan")
    if wan:
        rate = wan["rate_bytes_per_s"] / 1e6
        return f"{wan['delay_ms']:.0f} ms each way, {rate:g} MB/s per connection"
    return "loopback"


def _repo_relative(command: str) -> str:
    """The command with paths inside the repository written relative to it (a reader's checkout
    is elsewhere; older results recorded absolute paths)."""
    root = str(Path(__file__).resolve().parent.parent)
    return command.replace(root + "/", "").replace(root, ".")


def markdown(report: dict[str, Any], stem: str | None = None) -> str:
    """One results file as a Markdown section body: set-up line, table, plot link.

    The set-up line says when the tree had uncommitted changes (``--allow-dirty``) and when
    there were fewer than 3 repeats, so no table can hide either.

    Parameters
    ----------
    report
        The JSON report written by :func:`bench.runner.run_scenario`.
    stem
        The results file's name without suffix, for the plot link (default:
        ``<scenario>-<size>``).

    Returns
    -------
    str
        Markdown text.
    """
    m = report["machine"]
    commit = (m.get("commit") or "?")[:10]
    if m.get("dirty"):
        commit += "` **+ uncommitted changes" + (" (--allow-dirty)" if m.get("allow_dirty") else "")
        commit += "** `"
    command = _repo_relative(report.get("command") or "python -m bench " + report["scenario"])
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
    name = (report.get("profile") or {}).get("name")
    setup = f"link `{name}` ({link_summary(report)})" if name else link_summary(report)
    setup += f", {report.get('content') or 'simple'} pixel data"
    repeats = f"{report['repeat']} repeats"
    if report["repeat"] < 3:
        repeats = f"**{repeats} only (fewer than 3: indicative)**"
    load = report.get("load_average") or {}
    if load.get("before") is not None and load.get("after") is not None:
        setup += f", load average {load['before']:.1f} before / {load['after']:.1f} after"
    lines = [
        f"`{command}` - {sets}, {setup}, {repeats}, "
        f"run {report['started']} at commit `{commit}`; {what}.",
        "",
        format_table(report["summary"], markdown=True),
    ]
    phases = format_phases(report["summary"], markdown=True)
    if phases:
        lines += ["", "xio's phases, median seconds (scan files/s = files / scan s):", "", phases]
    stem = stem or f"{report['scenario']}-{report['size']}"
    lines += ["", f"![{stem}](../bench/results/{stem}.png)"]
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
        print(markdown(json.loads(Path(path).read_text()), Path(path).stem))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
