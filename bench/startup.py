"""What a small upload costs before its first byte: whole processes, xio against DCMTK.

Each round runs these processes one after another, every round in the same order, and the
tables give medians over the rounds:

- ``python -c pass``: the interpreter alone;
- ``xio --version``: the interpreter and xio's command line (click, the lazy package root);
- ``xio 1 file`` and ``storescu 1 file``: one instance to DCMTK's storescp, a whole process each
  (xio with ``--transport dicom-store --verify none --no-journal --progress none``);
- ``xio N files`` and ``storescu N files``: the issue's session of 1,000 instances of 33 kB.

xio's fixed cost is ``xio 1 file`` minus ``python -c pass``: start-up, one association, one
C-STORE and the release (an upper bound of what comes before the first byte). A last
``python -X importtime`` run of the 1-file send lists the modules it imported, so the table can
say whether pydicom or numpy were on the send path. Python may write bytecode, as after
``pip install`` (the warm-up round writes it for an editable install).

Usage::

    python -m bench.startup                 # 1,000 files, 7 rounds
    python -m bench.startup --rounds 3 --allow-dirty

Results go to ``bench/results/startup.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.runner import DEFAULT_RESULTS, checked_tree, machine_info
from bench.servers import StorescpProcess, find_tool

__all__ = ["main"]


def _xio() -> str:
    exe = shutil.which("xio")
    if exe is None:
        raise SystemExit("xio is not on PATH (pip install -e .)")
    return exe


def _dataset(root: Path, files: int) -> Path:
    """``files`` instances of 128x128 (33 kB each), one series, realistic content."""
    from xnatio.synth import write_session

    out = root / f"startup-{files}"
    if not out.is_dir():
        write_session(
            out, series=1, instances=files, rows=128, columns=128, seed=0, content="realistic"
        )
    return out


def _one_file(source: Path, root: Path) -> Path:
    out = root / "startup-1"
    if not out.is_dir():
        out.mkdir(parents=True)
        first = sorted(p for p in source.rglob("*") if p.is_file())[0]
        shutil.copy(first, out / first.name)
    return out


def _commands(scp: StorescpProcess, many: Path, one: Path, files: int) -> dict[str, list[str]]:
    xio = _xio()
    storescu = find_tool("storescu")
    if storescu is None:
        raise SystemExit("storescu is not installed (apt-get install dcmtk)")
    port = str(scp.port)

    def xio_send(src: Path) -> list[str]:
        return [
            xio, "upload-dicom", "P1", "S1", "E1", str(src), "--transport", "dicom-store",
            "--dicom-host", "127.0.0.1", "--dicom-port", port, "--dicom-called-aet", scp.aet,
            "--verify", "none", "--no-journal", "--progress", "none",
        ]  # fmt: skip

    def scu(src: Path) -> list[str]:
        return [storescu, "+sd", "+r", "-aec", scp.aet, "127.0.0.1", port, str(src)]

    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "xio --version": [xio, "--version"],
        "xio 1 file": xio_send(one),
        "storescu 1 file": scu(one),
        f"xio {files} files": xio_send(many),
        f"storescu {files} files": scu(many),
    }


def _time(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:2])} exited {proc.returncode}: {proc.stderr[-400:]!r}")
    return took


def _imported(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Modules imported by one run, from ``-X importtime`` (cumulative microseconds)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "xnatio", *cmd[1:]],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    top: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[1].isdigit():
            name = parts[2]
            if not name.startswith(" ") and "." not in name:
                top[name] = top.get(name, 0) + int(parts[1])
    heavy = sorted(m for m in ("pydicom", "numpy") if m in top)
    return {"heavy_modules": heavy, "import_s": sum(top.values()) / 1e6}


def _table(data: dict[str, Any]) -> str:
    med = data["medians"]
    base = med["python -c pass"]
    tree, machine = data["tree"], data["machine"]
    dirty = " **+ uncommitted changes**" if tree.get("dirty") else ""
    lines = [
        f"`{data['command']}` on commit `{(machine.get('commit') or '?')[:10]}`{dirty}; "
        f"{data['rounds']} rounds, medians; machine: {machine.get('cores')} cores, load average "
        f"at start {data['load_start']}",
        "",
        "| process | median s | min-max s | over python -c pass |",
        "|---|---|---|---|",
    ]
    for name, times in data["runs"].items():
        lines.append(
            f"| {name} | {med[name]:.3f} | {min(times):.3f}-{max(times):.3f} "
            f"| +{med[name] - base:.3f} |"
        )
    files = data["files"]
    xio_n, scu_n = med[f"xio {files} files"], med[f"storescu {files} files"]
    lines += [
        "",
        f"xio's fixed cost (xio 1 file - python -c pass): **{med['xio 1 file'] - base:.3f} s**; "
        f"{files} files: xio {xio_n:.3f} s vs storescu {scu_n:.3f} s = **{xio_n / scu_n:.2f}x**; "
        f"modules of the 1-file send: {data['imports']['import_s']:.3f} s of imports, "
        f"pydicom/numpy imported: {', '.join(data['imports']['heavy_modules']) or 'neither'}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the start-up benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args(argv)
    tree = checked_tree(args.allow_dirty)
    if tree is None:
        return 2
    # Bytecode as after ``pip install`` (which compiles it): without it every run compiles xio's
    # modules again (0.1 s here), which no installed copy does.
    load_start = round(os.getloadavg()[0], 2)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["TCP_NODELAY"] = "1"
    with tempfile.TemporaryDirectory(prefix="xio-startup-") as tmp:
        many = _dataset(Path(tmp), args.files)
        one = _one_file(many, Path(tmp))
        runs: dict[str, list[float]] = {}
        scp = StorescpProcess().start()
        try:
            cmds = _commands(scp, many, one, args.files)
            for cmd in cmds.values():  # one untimed warm-up each (page cache, pyc)
                _time(cmd, env)
            for _ in range(args.rounds):
                for name, cmd in cmds.items():
                    runs.setdefault(name, []).append(_time(cmd, env))
            imports = _imported(cmds["xio 1 file"], env)
        finally:
            scp.stop()
    data = {
        "scenario": "startup",
        "command": "python -m bench.startup " + " ".join(argv or sys.argv[1:]),
        "files": args.files,
        "rounds": args.rounds,
        "tree": tree,
        "machine": machine_info(tree),
        "runs": runs,
        "medians": {k: statistics.median(v) for k, v in runs.items()},
        "load_start": load_start,
        "imports": imports,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "startup.json").write_text(json.dumps(data, indent=2) + "\n")
    table = _table(data)
    (args.results_dir / "startup.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
