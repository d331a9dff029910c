"""Smoke test of the benchmark harness: ``python -m bench <scenario> --quick`` end to end.

Runs real servers and client processes on loopback (and through the shaping proxy), so the harness
cannot rot unnoticed: REST into the sandbox, and C-STORE to DCMTK's storescp. Each scenario
finishes in well under a minute.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.servers import STORESCP, tool_available

REPO = Path(__file__).resolve().parent.parent


def _run(scenario: str, tmp_path: Path, *extra: str, stem: str = "") -> dict[str, Any]:
    results = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            scenario,
            "--quick",
            "--results-dir",
            str(results),
            "--data-dir",
            str(tmp_path / "data"),
            "--allow-dirty",  # tests also run in working trees; the flag is recorded
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = results / (stem or f"{scenario}-quick")
    for suffix in (".csv", ".json", ".png"):
        assert path.with_suffix(suffix).stat().st_size > 0
    report: dict[str, Any] = json.loads(path.with_suffix(".json").read_text())
    assert scenario in proc.stdout  # the table is printed
    machine = report["machine"]
    assert len(machine["commit"]) == 40 and machine["allow_dirty"] is True
    assert report["content"] == "realistic"
    return report


def _check_rows(report: dict[str, Any], names: list[str]) -> None:
    summary = report["summary"]
    assert [row["strategy"] for row in summary] == names
    for row in summary:
        assert row["ok"] == row["runs"] == 1, row
        assert row["median_s"] > 0 and row["min_s"] > 0 and row["max_s"] > 0
        assert row["mb_s"] > 0 and row["files_s"] > 0 and row["peak_rss_mb"] > 0
    for run in report["runs"]:
        assert run["received"] == report["dataset"]["files"]  # counted on the server


@pytest.mark.parametrize("scenario", ["rest-wan", "rest-loopback"])
def test_quick_rest_scenarios(scenario: str, tmp_path: Path) -> None:
    from bench.runner import SCENARIOS

    report = _run(scenario, tmp_path)
    names = list(SCENARIOS[scenario].strategies)
    _check_rows(report, names)
    machine = report["machine"]
    assert isinstance(machine, dict)
    assert machine["cores"] and machine["python"] and "xnatio" in machine["packages"]
    with (tmp_path / "results" / f"{scenario}-quick.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["strategy"] for r in rows] == names
    assert all(float(r["median_s"]) > 0 for r in rows)


def test_unknown_strategy_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "rest-loopback",
            "--quick",
            "--strategies",
            "xio,nonsense",
            "--results-dir",
            str(tmp_path / "results"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown rest strategies: nonsense" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_quick_rest_over_a_capped_profile(tmp_path: Path) -> None:
    report = _run(
        "rest-wan",
        tmp_path,
        "--profile",
        "wan-cap12",
        "--strategies",
        "xio,archive-first",
        stem="rest-wan-quick-wan-cap12",
    )
    _check_rows(report, ["xio", "archive-first"])
    assert report["profile"]["name"] == "wan-cap12"
    assert report["profile"]["total_rate_bytes_per_s"] == 12_000_000


@pytest.mark.dcmtk
@pytest.mark.skipif(not tool_available(STORESCP), reason="DCMTK's storescp is not installed")
def test_quick_dicom_scenario(tmp_path: Path) -> None:
    report = _run("dicom-loopback", tmp_path, "--strategies", "xio,storescu")
    _check_rows(report, ["xio", "storescu"])
    assert report["profile"] is None
    xio = report["summary"][0]
    assert {"scan", "send", "total"} <= set(xio["phases_s"])
