"""Run a named scenario: strategies side by side, repeated, each in its own client process.

For every repeat, every strategy runs once (the order rotates between repeats so that a slow
moment on a shared machine does not always hit the same strategy). Each run gets fresh servers
(an empty sandbox, storescp or Orthanc in their own processes, plus the shaping proxy for WAN
scenarios), a new session label, and a fresh ``python -m bench.client`` process that measures
time, CPU and peak RSS of the upload alone. After each run the server is asked how many files
it holds; a run counts only if every file arrived.

Numbers are only worth something if one can tell what produced them: the runner refuses to start
when ``git status`` shows changes under ``src/`` or ``bench/`` (results files aside), unless
``allow_dirty`` is given, which the results then say in every table. The commit is recorded
before the first run.

The summary per strategy (median, min, max, MB/s, files/s, CPU, peak RSS and the ratio to the
scenario's reference strategy) goes to ``<results>/<scenario>-<size>.csv``, the summary plus every
run, the machine and the git commit to ``.json``, and a bar chart to ``.png``.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.proxy import PROFILES, LinkProfile
from bench.servers import (
    ORTHANC,
    STORESCP,
    STORESCU,
    OrthancProcess,
    ProxyProcess,
    SandboxProcess,
    StorescpProcess,
    find_tool,
    tool_available,
)
from bench.strategies import LOCAL_STRATEGIES, is_known

__all__ = [
    "QUICK_SIZES",
    "SCENARIOS",
    "SIZES",
    "DirtyTree",
    "Scenario",
    "check_tree",
    "checked_tree",
    "ensure_dataset",
    "format_phases",
    "format_table",
    "machine_info",
    "results_stem",
    "row_name",
    "run_scenario",
    "split_row",
    "tree_state",
]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "bench" / "data"
DEFAULT_RESULTS = REPO / "bench" / "results"

#: Dataset sizes: (series, instances per series, rows, columns). small/medium/large follow
#: ``xio synth --size``; ``quick`` is the smoke-test size (90 files, 3 MB). ``xl`` is the scale
#: session of issue 8 (100,000 small files, 64x64, ~10 KB each); ``xl-15k`` has xl's files at
#: large's file count, so that time per 1,000 files compares like with like; ``quick-xl``
#: (180 files) pairs with ``quick`` in the smoke test of the scale scenarios.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "quick": (3, 30, 128, 128),
    "small": (3, 100, 256, 256),
    "medium": (10, 300, 256, 256),
    "large": (30, 500, 320, 256),
    "xl-15k": (15, 1000, 64, 64),
    "xl": (100, 1000, 64, 64),
    "quick-xl": (6, 30, 64, 64),
}

#: The default WAN profile: one-way delay (ms) and bytes per second per connection.
WAN_DELAY_MS = PROFILES["wan"].delay_ms
WAN_RATE = PROFILES["wan"].rate_bytes_per_s

#: Pixel data of the benchmark datasets (``xio synth --content``): realistic, so that bytes on
#: the wire compress as real images do.
DEFAULT_CONTENT = "realistic"

_CLIENT_TIMEOUT = 4 * 3600.0


@dataclass(frozen=True)
class Scenario:
    """A named comparison.

    Attributes
    ----------
    name
        What ``python -m bench`` takes.
    kind
        ``rest`` or ``dicom``.
    server
        ``sandbox``, ``storescp`` or ``orthanc``.
    wan
        Put the shaping proxy in front of the server, with the ``wan`` profile unless the run
        names another (:data:`bench.proxy.PROFILES`).
    strategies
        The strategies run by default (see :mod:`bench.strategies`).
    reference
        Ratios are each strategy's median divided by this strategy's median.
    default_size
        The dataset used without ``--size``.
    summary
        One line for the docs and ``--help``.
    sizes
        A scale scenario: every strategy runs on each of these datasets, side by side; rows are
        named ``strategy@size``, and the ratio column compares time per 1,000 files with the
        same strategy on the first size. ``default_size`` then names the results files.
    """

    name: str
    kind: str
    server: str
    wan: bool
    strategies: tuple[str, ...]
    reference: str
    default_size: str
    summary: str
    sizes: tuple[str, ...] = ()


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "rest-wan",
            "rest",
            "sandbox",
            True,
            ("xio", "sequential", "archive-first", "gradual"),
            "xio",
            "small",
            "REST import through the WAN proxy: xio vs one request, archive-first, gradual-DICOM",
        ),
        Scenario(
            "rest-loopback",
            "rest",
            "sandbox",
            False,
            ("xio", "floor"),
            "floor",
            "medium",
            "REST import on loopback: xio vs one pre-built tar in one request (server floor)",
        ),
        Scenario(
            "rest-sweep",
            "rest",
            "sandbox",
            True,
            ("xio-w1", "xio-w2", "xio-w4", "xio-w8", "xio-w16", "xio-w42"),
            "xio-w42",
            "small",
            "REST import through the WAN proxy: upload workers 1..42 (42 batches)",
        ),
        Scenario(
            "dicom-loopback",
            "dicom",
            "storescp",
            False,
            ("xio", "storescu", "pynetdicom"),
            "xio",
            "medium",
            "C-STORE to DCMTK storescp (TCP_NODELAY=1): xio vs storescu vs pynetdicom's storescu",
        ),
        Scenario(
            "dicom-orthanc",
            "dicom",
            "orthanc",
            False,
            ("xio", "storescu", "storescu-x10"),
            "xio",
            "medium",
            "C-STORE to Orthanc (default settings): xio vs one and ten storescu processes",
        ),
        Scenario(
            "dicom-wan",
            "dicom",
            "storescp",
            True,
            ("xio", "storescu"),
            "xio",
            "small",
            "C-STORE to storescp through the WAN proxy: xio vs one storescu",
        ),
        Scenario(
            "rest-scale",
            "rest",
            "sandbox",
            False,
            ("xio", "inventory"),
            "xio",
            "xl",
            "REST import on loopback, 15,000 vs 100,000 files: s per 1,000 files, RSS, scan rate",
            sizes=("large", "xl-15k", "xl"),
        ),
        Scenario(
            "dicom-scale",
            "dicom",
            "storescp",
            False,
            ("xio", "inventory"),
            "xio",
            "xl",
            "C-STORE to storescp on loopback, 15,000 vs 100,000 files: time per 1,000 files, RSS",
            sizes=("large", "xl-15k", "xl"),
        ),
    )
}

#: The dataset pair a scale scenario uses with ``--quick``.
QUICK_SIZES = ("quick", "quick-xl")


def row_name(strategy: str, size: str | None) -> str:
    """The row a strategy's runs are summarised under (``xio@xl`` in scale scenarios).

    Parameters
    ----------
    strategy
        The strategy.
    size
        The dataset, for scale scenarios; None otherwise.

    Returns
    -------
    str
        The row name.
    """
    return f"{strategy}@{size}" if size else strategy


def split_row(row: str) -> tuple[str, str | None]:
    """Inverse of :func:`row_name`.

    Parameters
    ----------
    row
        A row name.

    Returns
    -------
    tuple
        ``(strategy, size or None)``.
    """
    strategy, sep, size = row.partition("@")
    return strategy, (size if sep else None)


# -- datasets -------------------------------------------------------------------------------------


def ensure_dataset(
    size: str, root: Path = DEFAULT_DATA, content: str = DEFAULT_CONTENT
) -> tuple[Path, int, int]:
    """Generate a synthetic session of a named size, or reuse it when already there.

    Parameters
    ----------
    size
        A key of :data:`SIZES`.
    root
        Where datasets live (``<root>/<size>``, or ``<root>/<size>-simple`` for simple content).
    content
        ``realistic`` or ``simple`` pixel data (:func:`xnatio.synth.write_session`).

    Returns
    -------
    tuple
        ``(folder, file count, total bytes)``.
    """
    from xnatio.synth import write_session

    series, instances, rows, columns = SIZES[size]
    name = size if content == DEFAULT_CONTENT else f"{size}-{content}"
    out = root / name
    marker = root / f"{name}.json"
    want = {
        "series": series,
        "instances": instances,
        "rows": rows,
        "columns": columns,
        "seed": 0,
        "content": content,
    }
    if marker.exists() and out.is_dir():
        info = json.loads(marker.read_text())
        if info.get("spec") == want:
            return out, int(info["files"]), int(info["bytes"])
    shutil.rmtree(out, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    s = write_session(
        out,
        series=series,
        instances=instances,
        rows=rows,
        columns=columns,
        seed=0,
        content=content,
    )
    marker.write_text(json.dumps({"spec": want, "files": s.file_count, "bytes": s.total_bytes}))
    return out, s.file_count, s.total_bytes


# -- what is measured -----------------------------------------------------------------------------


class DirtyTree(ValueError):
    """The working tree has uncommitted changes under ``src/`` or ``bench/``."""


def tree_state(repo: Path = REPO) -> dict[str, Any]:
    """The commit checked out and the uncommitted changes that would colour a measurement.

    Parameters
    ----------
    repo
        The git working tree.

    Returns
    -------
    dict
        ``commit`` (hash, or None outside git) and ``dirty_paths``: ``git status --porcelain``
        lines under ``src/`` and ``bench/``, leaving out ``bench/results/`` (results written
        by earlier runs change nothing that is measured).
    """
    commit = _first_line(["git", "-C", str(repo), "rev-parse", "HEAD"])
    try:
        out = subprocess.run(
            [
                *("git", "-C", str(repo), "status", "--porcelain"),
                *("--", "src", "bench", ":(exclude)bench/results"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    return {"commit": commit, "dirty_paths": [ln for ln in out.splitlines() if ln.strip()]}


def check_tree(repo: Path = REPO, *, allow_dirty: bool = False) -> dict[str, Any]:
    """Refuse a dirty tree unless allowed; return what to record with the results.

    Parameters
    ----------
    repo
        The git working tree.
    allow_dirty
        Run anyway (the results say so).

    Returns
    -------
    dict
        :func:`tree_state` plus ``dirty`` and ``allow_dirty``.

    Raises
    ------
    DirtyTree
        When ``src/`` or ``bench/`` has uncommitted changes and ``allow_dirty`` is false.
    """
    state = tree_state(repo)
    dirty = bool(state["dirty_paths"])
    if dirty and not allow_dirty:
        shown = ", ".join(ln[3:] for ln in state["dirty_paths"][:5])
        more = len(state["dirty_paths"]) - 5
        shown += f" and {more} more" if more > 0 else ""
        raise DirtyTree(
            f"uncommitted changes under src/ or bench/ ({shown}): commit them first, or give "
            "--allow-dirty (the results will say so)"
        )
    return {**state, "dirty": dirty, "allow_dirty": allow_dirty}


def checked_tree(allow_dirty: bool) -> dict[str, Any] | None:
    """:func:`check_tree` for a command: None, after saying why on stderr, for a dirty tree."""
    try:
        return check_tree(allow_dirty=allow_dirty)
    except DirtyTree as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


# -- machine --------------------------------------------------------------------------------------


def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info(tree: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe this machine, the software versions and the git commit.

    Parameters
    ----------
    tree
        What :func:`check_tree` found before the first run (default: ask git now).

    Returns
    -------
    dict
        ``cores``, ``cpu``, ``ram_gb``, ``os``, ``python``, ``packages``, ``tools``, ``commit``
        and ``dirty`` (uncommitted changes under ``src/`` or ``bench/``).
    """
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    packages = {}
    for name in ("xnatio", "httpx", "pydicom", "pynetdicom", "numpy", "matplotlib", "psutil"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name)
    if tree is None:
        tree = tree_state()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": ram_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": packages,
        "tools": {
            "dcmtk": _first_line([find_tool(STORESCU) or STORESCU, "--version"])
            if tool_available(STORESCU)
            else None,
            "orthanc": _first_line(
                [shutil.which(ORTHANC, path="/usr/sbin:/usr/bin") or ORTHANC, "--version"]
            )
            if tool_available(ORTHANC)
            else None,
        },
        "commit": tree["commit"],
        "dirty": bool(tree["dirty_paths"]),
        "dirty_paths": tree["dirty_paths"],
        "allow_dirty": bool(tree.get("allow_dirty", False)),
    }


# -- one run --------------------------------------------------------------------------------------


def unavailable(scenario: Scenario, strategy: str) -> str | None:
    """Why a strategy cannot run here, or None when it can.

    Parameters
    ----------
    scenario
        The scenario.
    strategy
        The strategy's name.

    Returns
    -------
    str or None
        A reason such as ``"storescu is not installed"``.
    """
    if strategy.startswith("xnatctl"):
        from bench.peers import ensure

        try:
            ensure("xnatctl")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
    if scenario.server == "storescp" and not tool_available(STORESCP):
        return "storescp (DCMTK) is not installed"
    if scenario.server == "orthanc" and not tool_available(ORTHANC):
        return "Orthanc is not installed"
    if scenario.kind == "dicom":
        if strategy == "xio":
            try:
                from xnatio.uploaders import send_dicom_store  # noqa: F401
            except ImportError as exc:
                return f"xnatio's send_dicom_store is not available ({exc})"
        if strategy.startswith("storescu") and not tool_available(STORESCU):
            return "storescu (DCMTK) is not installed"
        if strategy == "pynetdicom" and importlib.util.find_spec("pynetdicom") is None:
            return "pynetdicom is not installed"
    return None


def _count_rest(url: str, project: str, subject: str, session: str) -> int:
    r = httpx.get(
        f"{url}/data/projects/{project}/subjects/{subject}/experiments/{session}/scans/ALL/files",
        params={"format": "json"},
        auth=("admin", "admin"),
        timeout=120,
    )
    if r.status_code == 404:
        return 0
    r.raise_for_status()
    return len(r.json()["ResultSet"]["Result"])


def _one_run(
    scenario: Scenario,
    strategy: str,
    source: Path,
    expected: int,
    label: str,
    py_spy: Path | None = None,
    profile: LinkProfile | None = None,
) -> dict[str, Any]:
    """Fresh servers, one client process, then a server-side count.

    With a ``profile``, the shaping proxy (in its own process) sits between client and server.

    With ``py_spy`` (a file path), the client runs under ``py-spy record`` (threads while
    active, 100 samples/s, collapsed-stack format) and the profile is written there.
    """
    with contextlib.ExitStack() as stack:
        server: SandboxProcess | StorescpProcess | OrthancProcess | None
        local = strategy in LOCAL_STRATEGIES
        if local:
            server = None
        elif scenario.server == "sandbox":
            server = SandboxProcess()
        elif scenario.server == "storescp":
            server = StorescpProcess()
        else:
            server = OrthancProcess()
        if server is not None:
            stack.enter_context(server)
        port = server.port if server is not None else 0
        if profile is not None and server is not None:
            proxy = ProxyProcess(
                port,
                delay_ms=profile.delay_ms,
                rate=profile.rate_bytes_per_s,
                total_rate=profile.total_rate_bytes_per_s or 0.0,
            )
            stack.enter_context(proxy)
            port = proxy.port
        work = Path(tempfile.mkdtemp(prefix="xio-bench-run-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        cmd_client = [
            sys.executable,
            "-m",
            "bench.client",
            scenario.kind,
            strategy,
            "--source",
            str(source),
            "--session",
            label,
            "--workdir",
            str(work),
            "--port",
            str(port),
        ]
        if scenario.kind == "rest":
            cmd_client += ["--url", f"http://127.0.0.1:{port}"]
        elif server is not None:
            cmd_client += ["--aet", server.aet]
            if strategy.startswith("xnatctl"):
                # xnatctl logs in to XNAT's REST API even to send C-STORE: give it one to log
                # in to (a REST-only sandbox); the login is part of its run, as it would be.
                rest = SandboxProcess()
                stack.enter_context(rest)
                cmd_client += ["--url", rest.url]
        if py_spy is not None:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            cmd = [spy, "record", "-r", "100", "--full-filenames", "-f", "raw", "-o", str(py_spy)]
            cmd += ["--", *cmd_client]
        else:
            cmd = cmd_client
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
        env = {k: v for k, v in env.items() if "proxy" not in k.lower()}  # all traffic is local
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                cwd=REPO,
                env=env,
                timeout=_CLIENT_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"strategy": strategy, "success": False, "error": "client timed out"}
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            tail = proc.stderr.strip()[-400:]
            return {"strategy": strategy, "success": False, "error": f"client crashed: {tail}"}
        record: dict[str, Any] = json.loads(lines[-1])
        if server is None:  # nothing was sent: the files the strategy saw must all be there
            if record.get("success") and int(record.get("files", 0)) != expected:
                record["success"] = False
                record["error"] = f"saw {record.get('files')} of {expected} files"
            return record
        # The strategy's own word is not enough: ask the server what it holds.
        try:
            if isinstance(server, SandboxProcess):
                got = _count_rest(server.url, "P1", "S1", label)
            else:
                got = _received_when_settled(server, expected)
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            got = -1
            record["error"] = record.get("error") or f"could not count on the server: {exc}"
        record["received"] = got
        if record.get("success") and got != expected:
            record["success"] = False
            record["error"] = f"server holds {got} of {expected} files"
        return record


def _received_when_settled(server: StorescpProcess | OrthancProcess, expected: int) -> int:
    # storescp may still be renaming the last file when storescu returns.
    got = server.received()
    deadline = time.monotonic() + 5
    while got < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        got = server.received()
    return got


# -- summary --------------------------------------------------------------------------------------


def summarise(
    runs: list[dict[str, Any]],
    strategies: list[str],
    reference: str,
    skipped: dict[str, str],
    scale_reference: str | None = None,
) -> list[dict[str, Any]]:
    """One row per strategy from the individual runs.

    Parameters
    ----------
    runs
        Every run's record (``row`` names its row when present, else ``strategy``).
    strategies
        Row order for the table (strategy names, or ``strategy@size`` in scale scenarios).
    reference
        The strategy the ratio column divides by.
    skipped
        Rows not run, with the reason.
    scale_reference
        For scale scenarios: the size whose time per 1,000 files the ratio column divides by,
        each row against the same strategy on that size (``reference`` is then unused).

    Returns
    -------
    list of dict
        Rows with ``strategy``, ``runs``, ``ok``, ``median_s``, ``min_s``, ``max_s``, ``mb_s``,
        ``files_s``, ``s_per_1k`` (median seconds per 1,000 files), ``cpu_s``, ``cpu_s_per_gb``,
        ``peak_rss_mb``, ``ratio``, ``note`` and, when the strategy reported them, ``phases_s``
        (median seconds per phase) and ``phase_rss_mb`` (largest RSS sample per phase, MB).
    """
    rows: list[dict[str, Any]] = []
    for name in strategies:
        if name in skipped:
            rows.append({"strategy": name, "runs": 0, "ok": 0, "note": f"skipped: {skipped[name]}"})
            continue
        mine = [r for r in runs if r.get("row", r["strategy"]) == name]
        good = [r for r in mine if r.get("success")]
        row: dict[str, Any] = {"strategy": name, "runs": len(mine), "ok": len(good), "note": ""}
        if good:
            times = [float(r["duration"]) for r in good]
            med = statistics.median(times)
            nbytes = max(int(r.get("bytes", 0)) for r in good)
            nfiles = max(int(r.get("files", 0)) for r in good)
            cpu = statistics.median(float(r["cpu"]) for r in good)
            row.update(
                median_s=med,
                min_s=min(times),
                max_s=max(times),
                mb_s=nbytes / med / 1e6 if med else 0.0,
                files_s=nfiles / med if med else 0.0,
                s_per_1k=med / nfiles * 1000 if nfiles else 0.0,
                cpu_s=cpu,
                cpu_s_per_gb=cpu / (nbytes / 1e9) if nbytes else 0.0,
                peak_rss_mb=max(float(r["peak_rss_mb"]) for r in good),
            )
            phased = [r["phases"] for r in good if isinstance(r.get("phases"), dict)]
            if phased:
                keys = [k for k in phased[0] if all(k in ph for ph in phased)]
                row["phases_s"] = {
                    k: statistics.median(float(ph[k]) for ph in phased) for k in keys
                }
            sampled = [r["phase_rss_mb"] for r in good if r.get("phase_rss_mb")]
            if sampled:
                peaks: dict[str, float] = {}
                for ph in sampled:
                    for k, v in ph.items():
                        peaks[k] = max(peaks.get(k, 0.0), float(v))
                row["phase_rss_mb"] = peaks
        failed = [r for r in mine if not r.get("success")]
        if failed:
            row["note"] = f"{len(failed)} failed: {failed[0].get('error')}"[:300]
        rows.append(row)
    if scale_reference is not None:
        per_1k = {r["strategy"]: r["s_per_1k"] for r in rows if r.get("s_per_1k")}
        for row in rows:
            strategy, _ = split_row(row["strategy"])
            base = per_1k.get(row_name(strategy, scale_reference))
            if base and row.get("s_per_1k"):
                row["ratio"] = row["s_per_1k"] / base
        return rows
    ref = next((r for r in rows if r["strategy"] == reference and "median_s" in r), None)
    for row in rows:
        if ref is not None and "median_s" in row:
            row["ratio"] = row["median_s"] / ref["median_s"]
    return rows


_COLUMNS = [
    ("strategy", "strategy", "{}"),
    ("ok", "ok", "{}"),
    ("median_s", "median s", "{:.2f}"),
    ("min_s", "min s", "{:.2f}"),
    ("max_s", "max s", "{:.2f}"),
    ("ratio", "x ref", "{:.2f}"),
    ("mb_s", "MB/s", "{:.1f}"),
    ("files_s", "files/s", "{:.0f}"),
    ("s_per_1k", "s/1k files", "{:.3f}"),
    ("cpu_s", "CPU s", "{:.2f}"),
    ("cpu_s_per_gb", "CPU s/GB", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
]


def format_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """Render summary rows as a plain-text or Markdown table.

    Parameters
    ----------
    rows
        From :func:`summarise`.
    markdown
        Markdown pipe table instead of aligned text.

    Returns
    -------
    str
        The table (notes for skipped or failed strategies follow it).
    """
    # Time per 1,000 files only where it was computed (older results files lack it).
    columns = [c for c in _COLUMNS if c[0] != "s_per_1k" or any("s_per_1k" in r for r in rows)]
    head = [h for _, h, _ in columns]
    body = []
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("-" if value is None else fmt.format(value))
        body.append(cells)
    notes = [f"{r['strategy']}: {r['note']}" for r in rows if r.get("note")]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c) + " |" for c in body]
    else:
        widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(head)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
        lines += [
            "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) for cells in body
        ]
    return "\n".join(lines + (["", *notes] if notes else []))


_PHASES = [
    ("import", "import s"),
    ("scan", "scan s"),
    ("setup", "setup s"),
    ("send", "send s"),
    ("commit", "commit s"),
    ("verify", "verify s"),
    ("total", "total s"),
]


def format_phases(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """Median seconds per phase for the rows that reported phases (xio's), as a table.

    Parameters
    ----------
    rows
        From :func:`summarise`.
    markdown
        Markdown pipe table instead of aligned text.

    Returns
    -------
    str
        The table, or an empty string when no row has phases.
    """
    mine = [r for r in rows if r.get("phases_s")]
    if not mine:
        return ""
    head = ["strategy"] + [h for _, h in _PHASES] + ["scan files/s", "peak RSS MB in"]
    body = []
    for r in mine:
        ph = r["phases_s"]
        cells = [r["strategy"]] + [f"{ph[k]:.2f}" if k in ph else "-" for k, _ in _PHASES]
        nfiles = round(r["files_s"] * r["median_s"]) if r.get("files_s") else 0
        cells.append(f"{nfiles / ph['scan']:.0f}" if ph.get("scan") and nfiles else "-")
        rss = r.get("phase_rss_mb") or {}
        cells.append(" ".join(f"{k} {v:.0f}" for k, v in rss.items() if k != "after") or "-")
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c) + " |" for c in body]
    else:
        widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(head)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(cs, widths, strict=True)) for cs in body]
    return "\n".join(lines)


def results_stem(
    name: str, size: str, profile: str | None, default_profile: str | None = None
) -> str:
    """The results files' name (without suffix) for a scenario run.

    Parameters
    ----------
    name, size
        The scenario and its dataset (the last one for scale scenarios).
    profile
        The link profile asked for, if any.
    default_profile
        The scenario's own profile (``wan`` or None).

    Returns
    -------
    str
        ``<name>-<size>``, plus ``-<profile>`` when a profile other than the default was used.
    """
    stem = f"{name}-{size}"
    return f"{stem}-{profile}" if profile and profile != default_profile else stem


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["summary"] if "median_s" in r]
    if not rows:
        return
    names = [r["strategy"] for r in rows]
    med = [r["median_s"] for r in rows]
    lo = [r["median_s"] - r["min_s"] for r in rows]
    hi = [r["max_s"] - r["median_s"] for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.6))
    y = list(range(len(rows)))[::-1]
    colors = ["#1f77b4" if n.startswith("xio") else "#999999" for n in names]
    ax.barh(y, med, xerr=[lo, hi], color=colors, capsize=3)
    ax.set_yticks(y, names)
    ax.set_xlabel("seconds (median, whiskers: min-max)")
    if max(med) / max(min(med), 1e-9) > 30:
        ax.set_xscale("log")
    scale = bool(report.get("sizes"))
    for yy, r in zip(y, rows, strict=True):
        label = f" {r['median_s']:.1f} s"
        if scale and r.get("s_per_1k"):
            label += f", {r['s_per_1k']:.3f} s/1k files"
            if "ratio" in r:
                label += f" ({r['ratio']:.2f}x)"
        elif "ratio" in r:
            label += f"  ({r['ratio']:.2f}x {report['reference']})"
        ax.text(r["max_s"], yy, label, va="center", fontsize=8)
    if scale:
        sizes = ", ".join(
            f"{k} {v['files']:,} files" for k, v in report.get("datasets", {}).items()
        )
        title = f"{report['scenario']}: {sizes}; {report['repeat']} repeats"
    else:
        ds = report["dataset"]
        title = (
            f"{report['scenario']} - {report['size']}: {ds['files']} files, "
            f"{ds['bytes'] / 1e6:.0f} MB, {report['repeat']} repeats"
        )
    link = (report.get("profile") or {}).get("name")
    title += f"\n{link or 'loopback'}, {report.get('content', 'simple')} data, commit "
    title += f"{(report['machine'].get('commit') or '?')[:7]}"
    title += " + uncommitted changes" if report["machine"].get("dirty") else ""
    ax.set_title(title, fontsize=10)
    ax.margins(x=0.35)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the scenario ---------------------------------------------------------------------------------


def run_scenario(
    name: str,
    *,
    size: str | None = None,
    sizes: list[str] | None = None,
    repeat: int = 3,
    strategies: list[str] | None = None,
    quick: bool = False,
    results_dir: Path = DEFAULT_RESULTS,
    data_dir: Path = DEFAULT_DATA,
    log: Any = None,
    command: str | None = None,
    py_spy: Path | None = None,
    profile: str | None = None,
    content: str = DEFAULT_CONTENT,
    allow_dirty: bool = False,
    repo: Path = REPO,
) -> dict[str, Any]:
    """Run a scenario and write its results.

    Parameters
    ----------
    name
        A key of :data:`SCENARIOS`.
    size
        Dataset size (default: the scenario's; ``quick`` with ``quick``). Scale scenarios
        take ``sizes`` instead.
    sizes
        For scale scenarios: the datasets to compare (default: the scenario's own, or
        :data:`QUICK_SIZES` with ``quick``); the first is the ratio column's reference and the
        last names the results files.
    repeat
        Runs per strategy (``quick`` makes it 1 unless given otherwise by the caller).
    strategies
        Strategies to run instead of the scenario's defaults.
    quick
        The smoke-test version: the ``quick`` dataset.
    results_dir, data_dir
        Where results and datasets go.
    log
        A callable taking one line of progress text (default: stderr).
    command
        The command line, recorded with the results.
    py_spy
        A folder: profile every client run with ``py-spy record`` into
        ``<folder>/<row>-<repeat>.txt`` (collapsed stacks; ``python -m bench.profile`` sums
        them up). Profiling slows the client: such runs are for finding where time goes, not
        for the results tables.
    profile
        A link model of :data:`bench.proxy.PROFILES` for the shaping proxy (default: ``wan`` for
        WAN scenarios, no proxy for the others). A profile other than the scenario's default is
        added to the results' file names: ``<name>-<size>-<profile>``.
    content
        Pixel data of the datasets: ``realistic`` (default) or ``simple``.
    allow_dirty
        Run even with uncommitted changes under ``src/`` or ``bench/``; recorded and shown.
    repo
        The git working tree whose state is checked and recorded.

    Raises
    ------
    ValueError
        For an unknown strategy, size or profile name.
    DirtyTree
        For uncommitted changes without ``allow_dirty`` (before anything runs).

    Returns
    -------
    dict
        The report also written to ``<results_dir>/<stem>.json``.
    """
    scenario = SCENARIOS[name]
    default_profile = "wan" if scenario.wan else None
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    link = PROFILES.get(profile or default_profile or "")
    if scenario.sizes:
        if size is not None and not sizes:
            raise ValueError(f"{name} compares several sizes: give them as a list (sizes)")
        size_list = list(sizes or (QUICK_SIZES if quick else scenario.sizes))
    else:
        if sizes:
            raise ValueError(f"{name} runs on one size: give one")
        size_list = [size or ("quick" if quick else scenario.default_size)]
    bad = [s for s in size_list if s not in SIZES]
    if bad:
        raise ValueError(f"unknown sizes: {', '.join(bad)} (known: {', '.join(SIZES)})")
    size = size_list[-1]
    names = strategies or list(scenario.strategies)
    unknown = [s for s in names if not is_known(scenario.kind, s)]
    if unknown:
        raise ValueError(f"unknown {scenario.kind} strategies: {', '.join(unknown)}")
    # After the input checks (a typo is a typo, whatever the tree), before anything runs.
    tree = check_tree(repo, allow_dirty=allow_dirty)
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    datasets: dict[str, dict[str, Any]] = {}
    sources: dict[str, Path] = {}
    machine = machine_info(tree)  # the commit before the first run
    load_before = _load_average()
    for sz in size_list:
        source, nfiles, nbytes = ensure_dataset(sz, data_dir, content)
        sources[sz] = source
        datasets[sz] = {"files": nfiles, "bytes": nbytes, "spec": SIZES[sz]}
        say(f"{name}: {sz} dataset, {nfiles} files, {nbytes / 1e6:.1f} MB; {repeat} repeats")
    skipped = {s: why for s in names if (why := unavailable(scenario, s)) is not None}
    for s, why in skipped.items():
        say(f"  {s}: not available - {why}")
    scaled = bool(scenario.sizes)
    # Every (strategy, size) pair is one row; the order of pairs rotates between repeats.
    pairs = [(s, sz) for sz in size_list for s in names if s not in skipped]
    rows = [row_name(s, sz if scaled else None) for sz in size_list for s in names]
    runs: list[dict[str, Any]] = []
    started = time.time()
    for rep in range(repeat):
        order = pairs[rep % len(pairs) :] + pairs[: rep % len(pairs)] if pairs else []
        for strategy, sz in order:
            row = row_name(strategy, sz if scaled else None)
            label = re.sub(r"[^A-Za-z0-9_-]", "_", f"B{rep + 1}_{row}")
            nfiles = datasets[sz]["files"]
            spy = None
            if py_spy is not None:
                py_spy.mkdir(parents=True, exist_ok=True)
                spy = py_spy / f"{row}-{rep + 1}.txt"
            record = _one_run(scenario, strategy, sources[sz], nfiles, label, spy, link)
            record["repeat"] = rep + 1
            record["row"] = row
            record["size"] = sz
            runs.append(record)
            status = "ok" if record.get("success") else f"FAILED ({record.get('error')})"
            say(
                f"  [{rep + 1}/{repeat}] {row:14s} {record.get('duration', 0):8.2f} s  "
                f"rss {record.get('peak_rss_mb', 0):6.0f} MB  {status}"
            )
    reference = scenario.reference if scenario.reference in names else names[0]
    skipped_rows = {
        row_name(s, sz if scaled else None): why for s, why in skipped.items() for sz in size_list
    }
    report: dict[str, Any] = {
        "scenario": name,
        "description": scenario.summary,
        "size": size,
        "sizes": size_list if scaled else None,
        "repeat": repeat,
        "reference": f"the same strategy on {size_list[0]}" if scaled else reference,
        "wan": (
            {"delay_ms": link.delay_ms, "rate_bytes_per_s": link.rate_bytes_per_s}
            if link is not None
            else None
        ),
        "profile": (
            {
                "name": link.name,
                "delay_ms": link.delay_ms,
                "rate_bytes_per_s": link.rate_bytes_per_s,
                "total_rate_bytes_per_s": link.total_rate_bytes_per_s,
                "summary": link.summary,
            }
            if link is not None
            else None
        ),
        "content": content,
        "dataset": datasets[size],
        "datasets": datasets,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_s": time.time() - started,
        # Other work on a shared machine shows here: 1-minute load averages, before and after.
        "load_average": {"before": load_before, "after": _load_average()},
        "command": command,
        "machine": machine,
        "summary": summarise(
            runs,
            rows,
            reference,
            skipped_rows,
            scale_reference=size_list[0] if scaled else None,
        ),
        "runs": runs,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / results_stem(name, size, profile, default_profile)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    with stem.with_suffix(".csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        keys = [k for k, _, _ in _COLUMNS] + ["runs", "note"]
        writer.writerow(keys)
        for row in report["summary"]:
            writer.writerow(
                [
                    f"{v:.4g}" if isinstance(v := row.get(k), float) else ("" if v is None else v)
                    for k in keys
                ]
            )
    _plot(report, stem.with_suffix(".png"))
    return report
