"""``python -m bench <scenario>``: run a benchmark scenario and print its table.

Examples::

    python -m bench rest-wan --size small --repeat 3
    python -m bench rest-loopback --size medium
    python -m bench rest-wan --quick --results-dir /tmp/r
    python -m bench rest-scale --size large,xl-15k,xl --repeat 3
    python -m bench rest-wan --size medium --profile wan-cap12 --strategies xio,xnatctl

The tree must be committed (no changes under src/ or bench/) unless --allow-dirty is given.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.proxy import PROFILES
from bench.runner import (
    DEFAULT_CONTENT,
    DEFAULT_DATA,
    DEFAULT_RESULTS,
    SCENARIOS,
    SIZES,
    format_phases,
    format_table,
    results_stem,
    run_scenario,
)

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
    scenarios += "\n\nlink profiles (--profile):\n" + "\n".join(
        f"  {p.name:15s} {p.summary}" for p in PROFILES.values()
    )
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run upload strategies side by side against servers started here.",
        epilog=f"scenarios:\n{scenarios}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument(
        "--size",
        help=f"dataset, one of {', '.join(SIZES)} (default: the scenario's); scale scenarios "
        "take a comma-separated list, compared side by side",
    )
    p.add_argument("--repeat", type=int, default=None, help="runs per strategy (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny dataset, one repeat")
    p.add_argument("--strategies", help="comma-separated strategies instead of the defaults")
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="where datasets live")
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="link model for the shaping proxy (default: wan for WAN scenarios, none otherwise)",
    )
    p.add_argument(
        "--content",
        choices=["realistic", "simple"],
        default=DEFAULT_CONTENT,
        help="pixel data of the datasets (default: %(default)s)",
    )
    p.add_argument(
        "--allow-dirty",
        action="store_true",
        help="run with uncommitted changes under src/ or bench/ (recorded, shown in tables)",
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="profile each client run with py-spy into DIR (slower; summarise with "
        "python -m bench.profile DIR/*.txt)",
    )
    a = p.parse_args(args_in)
    repeat = a.repeat if a.repeat is not None else (1 if a.quick else 3)
    if repeat < 1:
        p.error("--repeat must be at least 1")
    names = [s.strip() for s in a.strategies.split(",") if s.strip()] if a.strategies else None
    given = [s.strip() for s in a.size.split(",") if s.strip()] if a.size else []
    unknown = [s for s in given if s not in SIZES]
    if unknown:
        p.error(f"unknown size {', '.join(unknown)} (choose from {', '.join(SIZES)})")
    scale = bool(SCENARIOS[a.scenario].sizes)
    if len(given) > 1 and not scale:
        p.error(f"{a.scenario} runs on one size; only the scale scenarios compare several")
    try:
        report = run_scenario(
            a.scenario,
            size=None if scale else (given[0] if given else None),
            sizes=given or None if scale else None,
            repeat=repeat,
            strategies=names,
            quick=a.quick,
            results_dir=a.results_dir,
            data_dir=a.data_dir,
            command="python -m bench " + shlex.join(args_in),
            py_spy=a.py_spy,
            profile=a.profile,
            content=a.content,
            allow_dirty=a.allow_dirty,
        )
    except ValueError as exc:
        p.error(str(exc))
    m = report["machine"]
    if report.get("sizes"):
        sets = ", ".join(
            f"{k}: {v['files']} files, {v['bytes'] / 1e6:.1f} MB"
            for k, v in report["datasets"].items()
        )
        print(
            f"{report['scenario']} ({sets}), {report['repeat']} repeats; ratio column = time per "
            f"1,000 files / that of {report['reference']}"
        )
    else:
        ds = report["dataset"]
        print(
            f"{report['scenario']} ({report['size']}: {ds['files']} files, "
            f"{ds['bytes'] / 1e6:.1f} MB), {report['repeat']} repeats; ratio column = median / "
            f"median of {report['reference']}"
        )
    link = report.get("profile")
    print(
        f"link: {link['name']} ({link['summary']})" if link else "link: loopback (no proxy)",
        f"; content: {report['content']}",
        sep="",
    )
    dirty = " + uncommitted changes (--allow-dirty)" if m["dirty"] else ""
    print(
        f"machine: {m['cores']} cores, {m['cpu']}, {m['ram_gb']} GB RAM, Python {m['python']}; "
        f"commit {(m['commit'] or '?')[:10]}{dirty}"
    )
    load = report.get("load_average") or {}
    if load.get("before") is not None:
        print(f"load average (1 min): {load['before']} before, {load['after']} after")
    print(format_table(report["summary"]))
    phases = format_phases(report["summary"])
    if phases:
        print("\nxio's phases (median s; scan files/s = files / scan s):")
        print(phases)
    default = "wan" if SCENARIOS[a.scenario].wan else None
    stem = Path(a.results_dir) / results_stem(
        report["scenario"], report["size"], a.profile, default
    )
    print(f"results: {stem}.csv, {stem}.json, {stem}.png")
    ok = all(r.get("ok") == r.get("runs") for r in report["summary"] if r.get("runs"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
