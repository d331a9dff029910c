"""Throughput against upload workers, from the results of a worker sweep: one line per body
kind (``xio-wN``: ``--compress auto``; ``xio-wN-none``: uncompressed tar), and the adaptive
runs (``xio-auto``/``xio-wauto``, ``-none``) as points at the most connections they used.

Reads the JSON of ``python -m bench rest-sweep`` (``runs`` is a list) or of
``python -m bench.overload`` (``runs`` maps each strategy to its runs)::

    python -m bench.plot_workers bench/results/rest-sweep-small-wan-cap12.json \\
        --out docs/img/workers-wan-cap12.png --title "capped WAN (wan-cap12), small"

Throughput is the session's file bytes over the whole upload (medians of the successful runs).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["main", "series"]

_FIXED = re.compile(r"^xio-w(\d+)(-none|-deflate)?$")
_AUTO = re.compile(r"^xio-w?auto(-none|-deflate)?$")
_PEAK = re.compile(r"at most (\d+)")


def _runs(data: dict[str, Any]) -> list[dict[str, Any]]:
    runs = data["runs"]
    if isinstance(runs, dict):
        return [r for rs in runs.values() for r in rs]
    return list(runs)


def series(
    data: dict[str, Any],
) -> tuple[dict[str, list[tuple[int, float]]], dict[str, tuple[float, float]]]:
    """Median MB/s per worker count per body kind, and (peak workers, MB/s) per adaptive kind.

    Parameters
    ----------
    data
        A results file's content.

    Returns
    -------
    tuple
        ``({kind: [(workers, MB/s), ...]}, {kind: (peak workers, MB/s)})``; kinds are
        ``"auto"``, ``"none"`` or ``"deflate"`` (the ``--compress`` setting).
    """
    fixed: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    auto: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in _runs(data):
        if not r.get("success") or not r.get("duration"):
            continue
        rate = r["bytes"] / r["duration"] / 1e6
        name = r["strategy"]
        if m := _FIXED.match(name):
            fixed[(m.group(2) or "-auto")[1:]][int(m.group(1))].append(rate)
        elif m := _AUTO.match(name):
            found = _PEAK.search(str((r.get("adaptive") or {}).get("workers", "")))
            peak = float(found.group(1)) if found else float("nan")
            auto[(m.group(1) or "-auto")[1:]].append((peak, rate))
    lines = {
        kind: sorted((n, statistics.median(v)) for n, v in by_n.items())
        for kind, by_n in fixed.items()
    }
    points = {
        kind: (statistics.median(p for p, _ in v), statistics.median(r for _, r in v))
        for kind, v in auto.items()
    }
    return lines, points


def plot(data: dict[str, Any], out: Path, title: str) -> None:
    """Draw the sweep of ``data`` into ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines, points = series(data)
    label = {"auto": "--compress auto", "none": "--compress none (tar)", "deflate": "deflate"}
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for kind, pts in sorted(lines.items()):
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o", label=f"{label[kind]}, fixed workers")
    for kind, (peak, rate) in sorted(points.items()):
        ax.plot([peak], [rate], marker="*", markersize=14, linestyle="none",
                label=f"{label[kind]}, --upload-workers auto (at most {peak:.0f})")  # fmt: skip
    ax.set_xscale("log", base=2)
    ticks = sorted({n for pts in lines.values() for n, _ in pts})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("upload workers (connections)")
    ax.set_ylabel("files sent, MB/s (whole upload)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command line: a results JSON in, a PNG out."""
    p = argparse.ArgumentParser(prog="python -m bench.plot_workers", description=__doc__)
    p.add_argument("results", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    data = json.loads(args.results.read_text())
    plot(data, args.out, args.title or args.results.stem)
    lines, points = series(data)
    for kind, pts in sorted(lines.items()):
        print(kind, " ".join(f"w{n}={r:.2f}" for n, r in pts))
    for kind, (peak, rate) in sorted(points.items()):
        print(f"{kind} adaptive: {rate:.2f} MB/s, at most {peak:.0f} connections")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
