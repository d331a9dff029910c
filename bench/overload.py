"""Benchmark against an XNAT that can be overloaded: the sandbox's ingest model, worker sweep.

Every run gets a fresh sandbox with ``ingest_profile="xnat"`` (docs/sandbox.md, "An XNAT that
can be overloaded") in this process, and a fresh ``python -m bench.client rest xio-wN`` process:
xio's public API with its 42 batches and N upload workers, so ``xio-w1`` sends the batches one
after another (the sequential upload) and ``xio-w42`` sends all of them at once. Sandbox and
client talk over loopback, without the shaping proxy: the model is the only bottleneck.

After each run the server's own counts are kept (503s, the proxy's 504s, the most requests at
once, requests still running after their 504), the run waits until the server has finished every
import it started, and the session must hold every file once (xio verifies that itself; a run
that xio reports as failed counts as failed).

Times are sandbox seconds; divide by the time scale for the modelled XNAT's seconds.

Usage::

    python -m bench.overload                               # xl-15k, the sweep, 3 repeats
    python -m bench.overload --workers 1,42 --repeats 1 --allow-dirty   # a quick look
    python -m bench.overload --strategies xio-wauto        # another client strategy

Results go to ``bench/results/overload-<size>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.runner import (
    DEFAULT_DATA,
    DEFAULT_RESULTS,
    REPO,
    SIZES,
    DirtyTree,
    check_tree,
    ensure_dataset,
    machine_info,
)

__all__ = ["main", "run_once"]

DEFAULT_WORKERS = (1, 2, 4, 8, 12, 16, 24, 42)
DEFAULT_SIZE = "xl-15k"  # the seed's 15,000 files
_IDLE_WAIT = 3600.0  # seconds to wait for imports that outlived their 504


def run_once(
    strategy: str,
    source: Path,
    *,
    time_scale: float,
    label: str,
    profile: bool = True,
    proxy: bool = True,
) -> dict[str, Any]:
    """One client run against a fresh sandbox; the client's record plus the server's counts.

    Parameters
    ----------
    strategy
        A REST strategy of :mod:`bench.strategies` (``xio-wN``, ``xio``, ...).
    source
        The dataset.
    time_scale
        The ingest model's time scale.
    label
        The session label.
    profile
        Run the sandbox with the ingest model (False: the sandbox's own speed, for comparison).
    proxy
        Model the proxy and its read timeout (False: the model without a proxy).
    """
    from xnatio.sandbox import Sandbox, SandboxConfig
    from xnatio.sandbox.ingest import ingest_profile

    work = Path(tempfile.mkdtemp(prefix="xio-bench-overload-"))
    model = ingest_profile("xnat", time_scale=time_scale)
    if not proxy:
        model = dataclasses.replace(model, proxy_read_timeout=None)
    config = SandboxConfig(
        data_dir=work / "sandbox",
        ticker_interval=3600.0,  # no background build or archive during the measurement
        idle_interval=3600.0,
        ingest_profile=model if profile else None,
    )
    try:
        with Sandbox(config) as sandbox:
            cmd = [
                *(sys.executable, "-m", "bench.client", "rest", strategy),
                *("--source", str(source), "--session", label, "--workdir", str(work)),
                *("--url", sandbox.url),
            ]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
            env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            record: dict[str, Any] = (
                json.loads(lines[-1])
                if lines
                else {"success": False, "error": (out.stderr or "no output")[-500:]}
            )
            stats = sandbox.stats()
            running = sandbox.ingest
            drained = running.wait_idle(_IDLE_WAIT) if running is not None else True
            record["server"] = dataclasses.asdict(stats)
            record["server_after"] = dataclasses.asdict(sandbox.stats())
            record["drained"] = drained
            return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _row(strategy: str, runs: list[dict[str, Any]], time_scale: float) -> dict[str, Any]:
    durations = [r["duration"] for r in runs if "duration" in r]
    ingest = [r["server"]["ingest"] or {} for r in runs]
    after = [r["server_after"]["ingest"] or {} for r in runs]
    median = statistics.median(durations) if durations else float("nan")
    sends = [r["phases"]["send"] for r in runs if "send" in (r.get("phases") or {})]
    return {
        "strategy": strategy,
        "runs": len(runs),
        "ok": sum(1 for r in runs if r.get("success")),
        "median_s": median,
        "min_s": min(durations, default=float("nan")),
        "max_s": max(durations, default=float("nan")),
        "xnat_min": median / time_scale / 60,
        "send_s": statistics.median(sends) if sends else float("nan"),
        "files": max((r.get("files", 0) for r in runs), default=0),
        "retries": [r.get("retries", 0) for r in runs],
        "http_503": [i.get("refused", 0) for i in ingest],
        "http_504": [i.get("gateway_timeouts", 0) for i in ingest],
        "finished_after_504": [a.get("finished_after_timeout", 0) for a in after],
        "peak_requests": max((i.get("threads", {}).get("peak", 0) for i in ingest), default=0),
        "peak_queued": max((i.get("queued", {}).get("peak", 0) for i in ingest), default=0),
        "files_charged": [a.get("files", 0) for a in after],
        "errors": sorted({str(r.get("error")) for r in runs if r.get("error")})[:3],
    }


def markdown(report: dict[str, Any]) -> str:
    """The summary table of a report, with what produced it."""
    m = report["machine"]
    rows = report["rows"]
    base = next((r for r in rows if r["strategy"] == "xio-w1"), None)
    lines = [
        f"`{report['command']}` on commit {m['commit'][:10] if m['commit'] else '?'}"
        + (" + uncommitted changes (--allow-dirty)" if m["dirty"] else ""),
        f"dataset {report['size']}: {report['files']} files, {report['bytes'] / 1e6:.0f} MB; "
        f"ingest profile xnat{'' if report['proxy'] else ' without the proxy'}, time scale "
        f"{report['time_scale']} (XNAT minutes = sandbox s / "
        f"{report['time_scale']} / 60); {report['repeats']} repeats, medians; "
        f"machine: {m['cores']} cores, load average at start {report.get('load')}",
        "",
        "| strategy | ok | median s | min-max s | XNAT min | vs xio-w1 | send s | send vs xio-w1 "
        "| retries | 503 | 504 | done after 504 | peak requests | files imported |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speed = _ratio(base["median_s"] if base else None, r["median_s"])
        send = _ratio(base["send_s"] if base else None, r["send_s"])
        lines.append(
            f"| {r['strategy']} | {r['ok']}/{r['runs']} | {r['median_s']:.1f} "
            f"| {r['min_s']:.1f}-{r['max_s']:.1f} | {r['xnat_min']:.1f} | {speed} "
            f"| {r['send_s']:.1f} | {send} "
            f"| {_list(r['retries'])} | {_list(r['http_503'])} | {_list(r['http_504'])} "
            f"| {_list(r['finished_after_504'])} | {r['peak_requests']} "
            f"| {_list(r['files_charged'])} |"
        )
    errors = {r["strategy"]: r["errors"] for r in rows if r["errors"]}
    if errors:
        lines += ["", "Errors:", *(f"- {k}: {'; '.join(v)}" for k, v in errors.items())]
    return "\n".join(lines) + "\n"


def _ratio(base: float | None, value: float) -> str:
    if base is None or base != base or value != value or value <= 0:
        return "-"
    return f"{base / value:.1f}x"


def _list(values: list[Any]) -> str:
    return "/".join(str(v) for v in values)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and print its table; 0 when every run succeeded."""
    args_in = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--size", default=DEFAULT_SIZE, choices=sorted(SIZES))
    p.add_argument("--workers", default=",".join(map(str, DEFAULT_WORKERS)),
                   help="upload worker counts: strategies xio-wN (42 batches each)")  # fmt: skip
    p.add_argument("--strategies", default="", help="more strategies to run, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--time-scale", type=float, default=None,
                   help="the model's time scale (default: the xnat profile's)")  # fmt: skip
    p.add_argument("--no-proxy", action="store_true",
                   help="no proxy, so no 504 (the calibration run)")  # fmt: skip
    p.add_argument("--floor", action="store_true",
                   help="also run xio-w42 against the sandbox without the model")  # fmt: skip
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--allow-dirty", action="store_true")
    a = p.parse_args(args_in)
    from xnatio.sandbox.ingest import PROFILES

    scale = a.time_scale if a.time_scale is not None else PROFILES["xnat"].time_scale
    strategies = [f"xio-w{int(w)}" for w in a.workers.split(",") if w.strip()]
    strategies += [s.strip() for s in a.strategies.split(",") if s.strip()]
    try:
        tree = check_tree(allow_dirty=a.allow_dirty)
    except DirtyTree as exc:
        p.error(str(exc))
    source, files, size_bytes = ensure_dataset(a.size, a.data_dir)
    load = round(os.getloadavg()[0], 2)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in strategies}
    if a.floor:
        runs["floor:xio-w42"] = []
    for rep in range(a.repeats):
        order = strategies[rep % len(strategies) :] + strategies[: rep % len(strategies)]
        for strategy in order:
            record = run_once(strategy, source, time_scale=scale, label=f"E{rep}_{strategy}",
                              proxy=not a.no_proxy)  # fmt: skip
            runs[strategy].append(record)
            print(f"{strategy} #{rep + 1}: {record.get('duration', float('nan')):.1f} s "
                  f"success={record.get('success')}", file=sys.stderr, flush=True)  # fmt: skip
        if a.floor:
            record = run_once("xio-w42", source, time_scale=scale, label=f"F{rep}", profile=False)
            runs["floor:xio-w42"].append(record)
    report = {
        "scenario": "overload",
        "command": "python -m bench.overload " + shlex.join(args_in),
        "size": a.size,
        "files": files,
        "bytes": size_bytes,
        "time_scale": scale,
        "proxy": not a.no_proxy,
        "repeats": a.repeats,
        "load": load,
        "machine": machine_info(tree),
        "rows": [_row(s, r, scale) for s, r in runs.items()],
        "runs": runs,
    }
    a.results_dir.mkdir(parents=True, exist_ok=True)
    stem = a.results_dir / f"overload-{a.size}{'' if not a.no_proxy else '-no-proxy'}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    table = markdown(report)
    stem.with_suffix(".md").write_text(table)
    print(table)
    return 0 if all(r["ok"] == r["runs"] for r in report["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
