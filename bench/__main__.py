"""``python -m bench <scenario>``: run a benchmark scenario and print its table.

Examples::

    python -m bench rest-wan --size small --repeat 3
    python -m bench rest-loopback --size medium
    python -m bench rest-wan --quick --results-dir /tmp/r
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.runner import DEFAULT_DATA, DEFAULT_RESULTS, SCENARIOS, SIZES, format_table, run_scenario

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the scenario, print the table.

    Parameters
    ----------
    argv
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when every strategy that ran succeeded every time, 1 otherwise.
    """
    args_in = sys.argv[1:] if argv is None else argv
    scenarios = "\n".join(f"  {s.name:15s} {s.summary}" for s in SCENARIOS.values())
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run upload strategies side by side against servers started here.",
        epilog=f"scenarios:\n{scenarios}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--size", choices=list(SIZES), help="dataset (default: the scenario's)")
    p.add_argument("--repeat", type=int, default=None, help="runs per strategy (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny dataset, one repeat")
    p.add_argument("--strategies", help="comma-separated strategies instead of the defaults")
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="where datasets live")
    a = p.parse_args(args_in)
    repeat = a.repeat if a.repeat is not None else (1 if a.quick else 3)
    if repeat < 1:
        p.error("--repeat must be at least 1")
    names = [s.strip() for s in a.strategies.split(",") if s.strip()] if a.strategies else None
    try:
        report = run_scenario(
            a.scenario,
            size=a.size,
            repeat=repeat,
            strategies=names,
            quick=a.quick,
            results_dir=a.results_dir,
            data_dir=a.data_dir,
            command="python -m bench " + shlex.join(args_in),
        )
    except ValueError as exc:
        p.error(str(exc))
    m = report["machine"]
    ds = report["dataset"]
    print(
        f"{report['scenario']} ({report['size']}: {ds['files']} files, {ds['bytes'] / 1e6:.1f} MB)"
        f", {report['repeat']} repeats; ratio column = median / median of {report['reference']}"
    )
    print(
        f"machine: {m['cores']} cores, {m['cpu']}, {m['ram_gb']} GB RAM, Python {m['python']}; "
        f"commit {(m['commit'] or '?')[:10]}{' (dirty)' if m['dirty'] else ''}"
    )
    print(format_table(report["summary"]))
    stem = Path(a.results_dir) / f"{report['scenario']}-{report['size']}"
    print(f"results: {stem}.csv, {stem}.json, {stem}.png")
    ok = all(r.get("ok") == r.get("runs") for r in report["summary"] if r.get("runs"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
