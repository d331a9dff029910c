"""What each verification level costs: the same REST upload with ``--verify none``, ``listing``
and ``deep``, whole ``xio upload-dicom`` processes against a sandbox on loopback.

Each round uploads the session once per level, in the same order, each to a new session label,
and the table gives medians over the rounds and each level's time over ``none``'s. ``deep``
downloads every stored file once and compares its data elements with the local file.

Usage::

    python -m bench.verify_cost                    # medium, 3 rounds
    python -m bench.verify_cost --size small --rounds 1 --allow-dirty

Results go to ``bench/results/verify-cost-<size>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.runner import (
    DEFAULT_DATA,
    DEFAULT_RESULTS,
    SIZES,
    checked_tree,
    ensure_dataset,
    machine_info,
)
from bench.servers import SandboxProcess

__all__ = ["main"]

LEVELS = ("none", "listing", "deep")


def _upload(url: str, source: Path, label: str, level: str) -> float:
    xio = shutil.which("xio")
    if xio is None:
        raise SystemExit("xio is not on PATH (pip install -e .)")
    env = {**os.environ, "XNAT_SERVER": url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"}
    cmd = [xio, "upload-dicom", "P1", "S1", label, str(source), "--verify", level,
           "--no-journal", "--progress", "none"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"--verify {level} exited {proc.returncode}: {proc.stderr[-400:]}")
    return took


def _table(data: dict[str, Any]) -> str:
    med = data["medians"]
    machine = data["machine"]
    dirty = " **+ uncommitted changes**" if data["tree"].get("dirty") else ""
    lines = [
        f"`{data['command']}` on commit `{(machine.get('commit') or '?')[:10]}`{dirty}; "
        f"{data['dataset']['files']:,} files, {data['dataset']['bytes'] / 1e6:.0f} MB, "
        f"{data['rounds']} rounds, medians; load average at start {data['load_start']}",
        "",
        "| --verify | median s | min-max s | vs none |",
        "|---|---|---|---|",
    ]
    for level in LEVELS:
        times = data["runs"][level]
        lines.append(
            f"| {level} | {med[level]:.2f} | {min(times):.2f}-{max(times):.2f} "
            f"| {med[level] / med['none']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the verification-cost benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.verify_cost", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="medium")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args(argv)
    tree = checked_tree(args.allow_dirty)
    if tree is None:
        return 2
    source, files, size = ensure_dataset(args.size, args.data_dir)
    load_start = round(os.getloadavg()[0], 2)
    runs: dict[str, list[float]] = {level: [] for level in LEVELS}
    sandbox = SandboxProcess().start()
    try:
        for r in range(args.rounds):
            for level in LEVELS:
                runs[level].append(_upload(sandbox.url, source, f"E_{level}_{r}", level))
    finally:
        sandbox.stop()
    data = {
        "scenario": "verify-cost",
        "command": "python -m bench.verify_cost " + " ".join(argv or sys.argv[1:]),
        "dataset": {"size": args.size, "files": files, "bytes": size},
        "rounds": args.rounds,
        "tree": tree,
        "machine": machine_info(tree),
        "load_start": load_start,
        "runs": runs,
        "medians": {k: statistics.median(v) for k, v in runs.items()},
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = f"verify-cost-{args.size}"
    (args.results_dir / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    table = _table(data)
    (args.results_dir / f"{stem}.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
