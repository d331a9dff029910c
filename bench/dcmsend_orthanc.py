"""Benchmark: pydicom's test files to a default Orthanc, DCMTK ``dcmsend`` against ``xio``.

The folder is pydicom's bundled test files (real-world files, some broken on purpose: truncated,
wrong VRs, implicit VR data under a JPEG transfer syntax, data sets without the UIDs Orthanc
needs), as they are, except that a file whose SOP Instance UID an earlier file (by name) already
has is left out: xio refuses two different files that claim one instance, and a receiver would
keep only one. Orthanc runs with its default settings (:class:`bench.servers.OrthancProcess`).

Each repeat clears Orthanc, times ``dcmsend +sd -nh FOLDER`` (one association), counts what Orthanc
stored, clears it again and times ``xio upload-dicom P S E FOLDER --transport dicom-store
--no-routing-tags --no-verify --no-journal`` (its default 45 associations), as fresh processes
(wall time, process start included). Every instance dcmsend delivered must be delivered by xio
too; tests/test_dicom_store_receivers.py checks that they are also equal element by element.

Usage::

    python -m bench.dcmsend_orthanc                      # 3 repeats, medians
    python -m bench.dcmsend_orthanc --repeats 1 --allow-dirty

Results go to ``bench/results/dcmsend-orthanc.json`` and ``.md``. The target (issue 11): xio at
most twice dcmsend's time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import httpx

from bench.runner import DEFAULT_RESULTS, DirtyTree, check_tree, machine_info
from bench.servers import OrthancProcess, find_tool

__all__ = ["main", "pydicom_folder"]


def pydicom_folder(dest: Path) -> Path:
    """Copy pydicom's bundled test files into ``dest``, each SOP Instance UID once (by name).

    Returns ``dest``. Files pydicom cannot read at all, and files without the UID, are copied
    too: they are part of the test (a sender must skip them or fail them, not hang).
    """
    import pydicom
    from pydicom.data import get_testdata_file

    sample = get_testdata_file("CT_small.dcm", download=False)
    assert sample is not None
    dest.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for path in sorted(Path(str(sample)).parent.iterdir()):
        if not path.is_file():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # several files are odd on purpose
            try:
                ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
                uid = str(ds.get("SOPInstanceUID", "") or "")
            except Exception:  # not DICOM at all (README.txt, JSON, a gzip)
                uid = ""
        if uid and uid in seen:
            continue
        seen.add(uid)
        shutil.copy(path, dest / path.name)
    return dest


def _orthanc_uids(orthanc: OrthancProcess) -> set[str]:
    """SOP Instance UIDs of the instances Orthanc holds."""
    base = f"http://127.0.0.1:{orthanc.http_port}"
    with httpx.Client(base_url=base, timeout=60) as http:
        ids = http.get("/instances").raise_for_status().json()
        return {
            http.get(f"/instances/{i}/simplified-tags").raise_for_status().json()["SOPInstanceUID"]
            for i in ids
        }


def _clear(orthanc: OrthancProcess) -> None:
    base = f"http://127.0.0.1:{orthanc.http_port}"
    with httpx.Client(base_url=base, timeout=60) as http:
        for _ in range(300):  # its REST port may open a moment after its DICOM port
            try:
                ids = http.get("/instances").raise_for_status().json()
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("Orthanc's REST API does not answer")
        for i in ids:
            http.delete(f"/instances/{i}").raise_for_status()


def _timed(command: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.monotonic() - started


def run(folder: Path, repeats: int) -> dict[str, Any]:
    """Time both senders ``repeats`` times against one Orthanc; what each delivered."""
    dcmsend = find_tool("dcmsend")
    if dcmsend is None:
        raise RuntimeError("DCMTK's dcmsend is not installed")
    runs: dict[str, list[float]] = {"dcmsend": [], "xio": []}
    delivered: dict[str, list[int]] = {"dcmsend": [], "xio": []}
    missing: list[str] = []
    with OrthancProcess() as orthanc:
        assert isinstance(orthanc, OrthancProcess)
        port = str(orthanc.port)
        commands = {
            "dcmsend": [dcmsend, "-aec", "ORTHANC", "127.0.0.1", port, "+sd", "-nh", str(folder)],
            "xio": [
                *(sys.executable, "-m", "xnatio", "upload-dicom", "P", "S", "E", str(folder)),
                *("--transport", "dicom-store", "--dicom-host", "127.0.0.1", "--dicom-port"),
                *(port, "--dicom-called-aet", "ORTHANC", "--no-routing-tags", "--no-verify"),
                *("--no-journal", "--allow-multiple-studies", "--progress", "none"),
            ],
        }
        for _ in range(repeats):
            uids: dict[str, set[str]] = {}
            for name, command in commands.items():
                _clear(orthanc)
                runs[name].append(_timed(command))
                uids[name] = _orthanc_uids(orthanc)
                delivered[name].append(len(uids[name]))
            missing += sorted(uids["dcmsend"] - uids["xio"])
    medians = {name: statistics.median(times) for name, times in runs.items()}
    return {
        "files": sum(1 for p in folder.iterdir() if p.is_file()),
        "seconds": runs,
        "median": medians,
        "ratio": medians["xio"] / medians["dcmsend"],
        "delivered": delivered,
        "missing_from_xio": sorted(set(missing)),
    }


def _markdown(result: dict[str, Any]) -> str:
    m = result["median"]
    lines = [
        "# pydicom's test files to a default Orthanc: dcmsend and xio",
        "",
        f"{result['files']} files; medians of {len(result['seconds']['xio'])} runs; "
        f"machine: {result['machine']['cores']} cores, {result['machine']['cpu']}; "
        f"commit {(result['machine']['commit'] or '?')[:10]}.",
        "",
        "| sender | median s | runs (s) | instances Orthanc stored |",
        "|---|---|---|---|",
    ]
    for name in ("dcmsend", "xio"):
        times = ", ".join(f"{t:.2f}" for t in result["seconds"][name])
        lines.append(
            f"| {name} | {m[name]:.2f} | {times} | "
            f"{', '.join(str(n) for n in result['delivered'][name])} |"
        )
    lines += [
        "",
        f"xio / dcmsend: {result['ratio']:.2f} (target: at most 2). Instances dcmsend delivered "
        f"and xio did not: {len(result['missing_from_xio'])}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison, print and write the results; 1 when a target is missed."""
    p = argparse.ArgumentParser(prog="python -m bench.dcmsend_orthanc", description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--allow-dirty", action="store_true")
    a = p.parse_args(argv)
    try:
        tree = check_tree(allow_dirty=a.allow_dirty)
    except DirtyTree as exc:
        p.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="xio-bench-pydicom-") as tmp:
        result = run(pydicom_folder(Path(tmp) / "files"), max(1, a.repeats))
    result["machine"] = machine_info(tree)
    text = _markdown(result)
    print(text)
    a.results_dir.mkdir(parents=True, exist_ok=True)
    stem = a.results_dir / "dcmsend-orthanc"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(text)
    return 0 if result["ratio"] <= 2 and not result["missing_from_xio"] else 1


if __name__ == "__main__":
    sys.exit(main())
