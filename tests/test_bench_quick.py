"""Smoke test of the benchmark harness: ``python -m bench <scenario> --quick`` end to end.

Runs real servers and client processes on loopback (and through the shaping proxy), so the harness
cannot rot unnoticed. Each scenario finishes in well under a minute.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(scenario: str, tmp_path: Path, *extra: str) -> dict[str, object]:
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
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stem = results / f"{scenario}-quick"
    for suffix in (".csv", ".json", ".png"):
        assert stem.with_suffix(suffix).stat().st_size > 0
    report: dict[str, object] = json.loads(stem.with_suffix(".json").read_text())
    assert scenario in proc.stdout  # the table is printed
    return report


@pytest.mark.parametrize("scenario", ["rest-wan", "rest-loopback"])
def test_quick_rest_scenarios(scenario: str, tmp_path: Path) -> None:
    from bench.runner import SCENARIOS

    report = _run(scenario, tmp_path)
    summary = report["summary"]
    assert isinstance(summary, list)
    names = [row["strategy"] for row in summary]
    assert names == list(SCENARIOS[scenario].strategies)
    for row in summary:
        assert row["ok"] == row["runs"] == 1, row
        assert row["median_s"] > 0 and row["min_s"] > 0 and row["max_s"] > 0
        assert row["mb_s"] > 0 and row["files_s"] > 0 and row["peak_rss_mb"] > 0
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
