"""Benchmark of ``xio upload-many``: many small sessions over a capped WAN link, and a big plan.

Scenarios (each strategy runs ``--repeats`` times against a fresh sandbox; medians are reported):

``wan``
    200 sessions of 60 files (128x128, realistic pixels) through the shaping proxy with a total
    cap (``--profile wan-cap12``: 0.93 MB/s per connection, 12 MB/s in all, 20 ms each way):

    - ``xio-many``: ``xio upload-many MANIFEST --max-connections 12``;
    - ``xio-loop``: a shell loop of ``xio upload-dicom P S E SRC`` with default settings;
    - ``xnatctl-loop``: a shell loop of ``xnatctl session upload SRC -P P -S S -E E`` (its
      defaults: 4 workers, a tar per worker, Direct-Archive), each followed by the
      Direct-Archive trigger (curl) so the session is in the archive when the loop ends;
    - ``xio-dask``: ``xio upload-many --dask`` on a LocalCluster of 2 worker processes (started
      before the clock starts).

    A counting relay between the client and the shaping proxy records the most connections the
    client had open at once; after each run every session is listed on the server and must hold
    exactly its 60 instances.
``plan``
    ``xio upload-many --discover ROOT --dry-run`` over 1,000 studies of 100 files (100,000 files
    in folders), with the sandbox answering the pre-flight: wall time and peak RSS (VmHWM) of the
    xio process.

Usage::

    python -m bench.many                      # both scenarios, 3 repeats
    python -m bench.many --sessions 20 --repeats 1 --allow-dirty   # a quick look

Results go to ``bench/results/many-<time>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.proxy import PROFILES
from bench.relay import CountingProxy
from bench.runner import DEFAULT_DATA, DEFAULT_RESULTS, DirtyTree, check_tree, machine_info
from bench.servers import ProxyProcess, SandboxProcess

__all__ = ["main"]

PROJECT, USER, PASSWORD = "P1", "admin", "admin"
STRATEGIES = ("xio-many", "xio-loop", "xnatctl-loop", "xio-dask")
SERIES, INSTANCES, SIZE = 3, 20, 128
PLAN_STUDIES, PLAN_SERIES, PLAN_INSTANCES, PLAN_SIZE = 1000, 2, 50, 32
_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Session:
    """One session of the dataset."""

    subject: str
    label: str
    source: Path
    study_uid: str


# -- datasets ---------------------------------------------------------------------------------


def sessions_dataset(count: int, root: Path = DEFAULT_DATA) -> list[Session]:
    """``count`` sessions of SERIES x INSTANCES files under ``root/many-<count>``, made once."""
    from xnatio.synth import write_session

    base = root / f"many-{count}x{SERIES * INSTANCES}"
    marker = base / "sessions.json"
    if marker.exists():
        rows = json.loads(marker.read_text())
        return [Session(r["subject"], r["label"], Path(r["source"]), r["uid"]) for r in rows]
    shutil.rmtree(base, ignore_errors=True)
    out: list[Session] = []
    for i in range(count):
        s = write_session(
            base / f"s{i:04d}", series=SERIES, instances=INSTANCES, rows=SIZE, columns=SIZE,
            seed=1000 + i, content="realistic", patient_id=f"PAT{i:04d}",
        )  # fmt: skip
        out.append(Session(f"PAT{i:04d}", f"PAT{i:04d}_S", s.out, s.study_instance_uid))
    rows = [{"subject": s.subject, "label": s.label, "source": str(s.source),
             "uid": s.study_uid} for s in out]  # fmt: skip
    marker.write_text(json.dumps(rows))
    return out


def plan_tree(root: Path = DEFAULT_DATA) -> tuple[Path, int]:
    """1,000 studies of 100 small files (100,000 files) in folders, made once."""
    from xnatio.synth import write_session

    base = root / f"many-plan-{PLAN_STUDIES}x{PLAN_SERIES * PLAN_INSTANCES}"
    marker = base / "done.json"
    if not marker.exists():
        shutil.rmtree(base, ignore_errors=True)
        for i in range(PLAN_STUDIES):
            write_session(
                base / f"site{i % 10}" / f"study{i:04d}", series=PLAN_SERIES,
                instances=PLAN_INSTANCES, rows=PLAN_SIZE, columns=PLAN_SIZE, seed=50_000 + i,
                patient_id=f"PLAN{i:04d}",
            )  # fmt: skip
        marker.write_text(json.dumps({"studies": PLAN_STUDIES}))
    return base, PLAN_STUDIES * PLAN_SERIES * PLAN_INSTANCES


# -- the link ---------------------------------------------------------------------------------


@contextlib.contextmanager
def link(profile: str) -> Iterator[tuple[SandboxProcess, CountingProxy]]:
    """A fresh sandbox behind the shaping proxy behind a counting relay."""
    p = PROFILES[profile]
    with contextlib.ExitStack() as stack:
        sandbox = SandboxProcess(PROJECT)
        stack.callback(sandbox.stop)
        sandbox.start()
        proxy = ProxyProcess(
            sandbox.port,
            delay_ms=p.delay_ms,
            rate=p.rate_bytes_per_s,
            total_rate=p.total_rate_bytes_per_s or 0.0,
        )
        stack.callback(proxy.stop)
        proxy.start()
        counter = stack.enter_context(CountingProxy(proxy.port))
        yield sandbox, counter


def landed(url: str, sessions: list[Session]) -> int:
    """Sessions the server holds with exactly their instances (listed on loopback)."""
    good = 0
    with httpx.Client(base_url=url, auth=(USER, PASSWORD), timeout=60) as c:
        for s in sessions:
            path = f"/data/projects/{PROJECT}/subjects/{s.subject}/experiments/{s.label}"
            r = c.get(f"{path}/scans/ALL/files", params={"format": "json"})
            if r.status_code == 200:
                good += len(r.json()["ResultSet"]["Result"]) == SERIES * INSTANCES
    return good


def _env(url: str, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(XNAT_SERVER=url, XNAT_USERNAME=USER, XNAT_PASSWORD=PASSWORD,
               XNAT_URL=url, XNAT_USER=USER, XNAT_PASS=PASSWORD, NO_COLOR="1",
               XDG_CACHE_HOME=str(work / "cache"), HOME=str(work / "home"),
               NO_UPDATE_NOTIFIER="1", XNAT_NO_UPDATE_CHECK="1")  # fmt: skip
    (work / "home").mkdir(exist_ok=True)
    return env


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-400:]
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {tail}")
    return took


# -- strategies -------------------------------------------------------------------------------


def _manifest(sessions: list[Session], path: Path) -> Path:
    lines = ["project,subject,session,source"]
    lines += [f"{PROJECT},{s.subject},{s.label},{s.source}" for s in sessions]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_strategy(
    name: str, sessions: list[Session], url: str, work: Path, cap: int, max_sessions: int
) -> float:
    """Run one strategy over ``sessions`` against ``url``; return the wall time in seconds."""
    env = _env(url, work)
    if name in ("xio-many", "xio-dask"):
        cmd = [str(_BIN / "xio"), "upload-many", str(_manifest(sessions, work / "m.csv")),
               "--max-connections", str(cap), "--max-sessions", str(max_sessions),
               "--progress", "none", "-q"]  # fmt: skip
        if name == "xio-dask":
            return _with_cluster(cmd, env, work)
        return _timed(cmd, env, work)
    script = work / "loop.sh"
    if name == "xio-loop":
        body = [f'"{_BIN / "xio"}" upload-dicom {PROJECT} {s.subject} {s.label} "{s.source}" '
                "--progress none -q" for s in sessions]  # fmt: skip
    else:
        from bench.peers import ensure

        xnatctl = ensure("xnatctl")
        body = [
            f'"{xnatctl}" session upload "{s.source}" -P {PROJECT} -S {s.subject} -E {s.label} '
            f"-q >/dev/null && curl -sf -o /dev/null -u {USER}:{PASSWORD} -X POST "
            f'"{url}/xapi/direct-archive/{PROJECT}/{s.study_uid}/{s.label}"'
            for s in sessions
        ]
    script.write_text("set -e\n" + "\n".join(body) + "\n")
    return _timed(["bash", str(script)], env, work)


def _with_cluster(cmd: list[str], env: dict[str, str], work: Path) -> float:
    from distributed import LocalCluster

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]  # the workers' journals
    try:
        with LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2, threads_per_worker=4, processes=True, host="127.0.0.1",
            dashboard_address=None, silence_logs=40,
        ) as cluster:  # fmt: skip
            return _timed([*cmd, "--dask", cluster.scheduler_address], env, work)
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


def wan_scenario(
    sessions: list[Session], strategies: list[str], repeats: int, profile: str, cap: int,
    max_sessions: int,
) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """Every strategy ``repeats`` times, round robin, each against a fresh sandbox."""
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in strategies}
    for n in range(repeats):
        for name in strategies:
            with (
                tempfile.TemporaryDirectory(prefix="xio-bench-many-") as tmp,
                link(profile) as (sandbox, counter),
            ):
                url = f"http://127.0.0.1:{counter.port}"
                seconds = run_strategy(name, sessions, url, Path(tmp), cap, max_sessions)
                row = {"seconds": round(seconds, 2), "peak_connections": counter.gauge.peak,
                       "connections": counter.gauge.total,
                       "landed": landed(sandbox.url, sessions)}  # fmt: skip
            runs[name].append(row)
            print(f"[{n + 1}/{repeats}] {name}: {json.dumps(row)}", flush=True)
    return runs


# -- the big plan -----------------------------------------------------------------------------


def _plan_child(argv: list[str]) -> int:
    """In a child process: run the dry run, then print the time and this process's VmHWM."""
    from xnatio.cli.app import main as xio

    start = time.perf_counter()
    code = 0
    try:
        xio(argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0
    took = time.perf_counter() - start
    hwm = next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    print(json.dumps({"seconds": round(took, 2), "peak_rss_mb": round(hwm / 1024, 1),
                      "exit": code}), file=sys.__stdout__)  # fmt: skip
    return 0


def plan_scenario(repeats: int) -> list[dict[str, Any]]:
    """``--dry-run --discover`` over 100,000 files, ``repeats`` times (page cache warm after
    the first read, as on a server that just received the export)."""
    root, files = plan_tree()
    runs = []
    sandbox = SandboxProcess(PROJECT).start()
    with contextlib.ExitStack() as stack:
        stack.callback(sandbox.stop)
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        env = _env(sandbox.url, Path(tmp))
        cmd = [sys.executable, "-m", "bench.many", "_plan", "upload-many", "--discover",
               str(root), "--project", PROJECT, "--dry-run", "--json"]  # fmt: skip
        for n in range(repeats):
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                                 cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
            line = out.stdout.strip().splitlines()[-1]
            row = json.loads(line)
            plan = json.loads(out.stdout[: out.stdout.rindex(line)])
            row["sessions"] = len(plan["sessions"])
            row["files"] = sum(s["files"] for s in plan["sessions"])
            runs.append(row)
            print(f"[{n + 1}/{repeats}] plan: {json.dumps(row)}", flush=True)
            if row["files"] != files:
                raise RuntimeError(f"the plan counted {row['files']} files, not {files}")
    return runs


# -- report -----------------------------------------------------------------------------------


def summarise(wan: dict[str, list[dict[str, Any]]], plan: list[dict[str, Any]]) -> str:
    """A markdown summary: medians, spreads and ratios against xio-many."""
    lines = ["| strategy | median s | min-max s | vs xio-many | peak connections | landed |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    base = statistics.median(r["seconds"] for r in wan["xio-many"]) if wan.get("xio-many") else 0
    for name, runs in wan.items():
        secs = [r["seconds"] for r in runs]
        med = statistics.median(secs)
        ratio = f"{med / base:.2f}x" if base else "-"
        peak = max(r["peak_connections"] for r in runs)
        ok = min(r["landed"] for r in runs)
        lines.append(f"| {name} | {med:.1f} | {min(secs):.1f}-{max(secs):.1f} | {ratio} | "
                     f"{peak} | {ok} |")  # fmt: skip
    if plan:
        med = statistics.median(r["seconds"] for r in plan)
        rss = max(r["peak_rss_mb"] for r in plan)
        lines += ["", f"plan: {plan[0]['sessions']} sessions, {plan[0]['files']} files: median "
                      f"{med:.1f} s, peak RSS {rss:.0f} MB (runs: "
                      f"{', '.join(str(r['seconds']) for r in plan)})"]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_plan"]:
        return _plan_child(args[1:])
    p = argparse.ArgumentParser(prog="python -m bench.many", description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", default="wan-cap12", choices=sorted(PROFILES))
    p.add_argument("--max-connections", type=int, default=12)
    p.add_argument("--max-sessions", type=int, default=8)
    p.add_argument("--only", default=",".join(STRATEGIES), help="strategies, comma separated")
    p.add_argument("--skip-plan", action="store_true")
    p.add_argument("--skip-wan", action="store_true")
    p.add_argument("--allow-dirty", action="store_true")
    a = p.parse_args(args)
    try:
        tree = check_tree(allow_dirty=a.allow_dirty)
    except DirtyTree as exc:
        print(f"bench.many: {exc}", file=sys.stderr)
        return 2
    strategies = [s for s in a.only.split(",") if s]
    wan = {} if a.skip_wan else wan_scenario(
        sessions_dataset(a.sessions), strategies, a.repeats, a.profile, a.max_connections,
        a.max_sessions,
    )  # fmt: skip
    plan = [] if a.skip_plan else plan_scenario(a.repeats)
    summary = summarise(wan, plan)
    print(summary)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    DEFAULT_RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"scenario": "many", "machine": machine_info(tree), "profile": a.profile,
              "sessions": a.sessions, "files_per_session": SERIES * INSTANCES,
              "max_connections": a.max_connections, "max_sessions": a.max_sessions,
              "repeats": a.repeats, "wan": wan, "plan": plan}  # fmt: skip
    (DEFAULT_RESULTS / f"many-{stamp}.json").write_text(json.dumps(report, indent=2))
    (DEFAULT_RESULTS / f"many-{stamp}.md").write_text(summary + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
