"""The scale scenarios of the benchmark harness: sizes side by side, time per 1,000 files, phases.

The end-to-end test runs ``python -m bench rest-scale --quick`` (two tiny datasets, a real
sandbox); the rest checks the summary arithmetic and the phase clock without any server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from bench.runner import SCENARIOS, SIZES, format_phases, format_table, row_name, split_row
from bench.runner import summarise as summarise_runs
from bench.strategies import LOCAL_STRATEGIES, PhaseClock, is_known

REPO = Path(__file__).resolve().parent.parent


def test_scale_sizes_and_scenarios() -> None:
    series, instances, rows, columns = SIZES["xl"]
    assert series * instances == 100_000 and (rows, columns) == (64, 64)
    assert SIZES["xl-15k"][0] * SIZES["xl-15k"][1] == 15_000
    assert SIZES["xl-15k"][2:] == SIZES["xl"][2:]
    for name in ("rest-scale", "dicom-scale"):
        sc = SCENARIOS[name]
        assert sc.sizes == ("large", "xl-15k", "xl")
        assert all(is_known(sc.kind, s) for s in sc.strategies)
    assert "inventory" in LOCAL_STRATEGIES
    assert split_row(row_name("xio", "xl")) == ("xio", "xl")
    assert split_row("xio") == ("xio", None)


def _run(row: str, duration: float, files: int, **extra: object) -> dict[str, object]:
    strategy, _ = split_row(row)
    return {
        "strategy": strategy,
        "row": row,
        "success": True,
        "duration": duration,
        "cpu": duration / 2,
        "peak_rss_mb": 100.0,
        "files": files,
        "bytes": files * 10_000,
        **extra,
    }


def test_summary_compares_time_per_1000_files_with_the_same_strategy() -> None:
    runs = [
        _run("xio@a", 15.0, 15_000, phases={"scan": 1.0, "total": 15.0}),
        _run("xio@a", 16.0, 15_000, phases={"scan": 3.0, "total": 16.0}),
        _run("xio@b", 110.0, 100_000, phases={"scan": 8.0, "total": 110.0}),
        _run("inventory@a", 1.5, 15_000),
        _run("inventory@b", 20.0, 100_000),
    ]
    rows = summarise_runs(
        runs, ["xio@a", "inventory@a", "xio@b", "inventory@b"], "xio", {}, scale_reference="a"
    )
    by = {r["strategy"]: r for r in rows}
    assert by["xio@a"]["s_per_1k"] == 15.5 / 15
    assert by["xio@a"]["ratio"] == 1.0
    assert abs(by["xio@b"]["ratio"] - 1.1 / (15.5 / 15)) < 1e-9
    assert abs(by["inventory@b"]["ratio"] - 0.2 / 0.1) < 1e-9
    assert by["xio@a"]["phases_s"] == {"scan": 2.0, "total": 15.5}
    assert "phases_s" not in by["inventory@a"]
    table = format_table(rows)
    assert "s/1k files" in table and "xio@b" in table
    phases = format_phases(rows)
    assert "scan s" in phases and "inventory" not in phases
    # Single-size scenarios keep their table (no time-per-1k column for old results files).
    old = [{k: v for k, v in r.items() if k != "s_per_1k"} for r in rows]
    assert "s/1k files" not in format_table(old)


def test_phase_clock_splits_a_run_into_phases() -> None:
    clock = PhaseClock(interval=0.005)
    clock.mark("import")
    for phase in ("scanning", "scanning", "uploading", "uploading", "committing", "verifying"):
        time.sleep(0.01)
        clock(SimpleNamespace(phase=phase))
    time.sleep(0.01)
    clock(SimpleNamespace(phase="done"))
    phases = clock.phases()
    assert list(phases) == ["import", "scan", "setup", "send", "commit", "verify", "total"]
    assert all(v >= 0 for v in phases.values())
    assert abs(sum(v for k, v in phases.items() if k != "total") - phases["total"]) < 0.01
    rss = clock.rss_by_phase()
    if Path("/proc/self/statm").exists():
        assert rss and all(v > 1 for v in rss.values())


def test_quick_rest_scale(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "rest-scale",
            "--quick",
            "--allow-dirty",  # tests also run in working trees; the flag is recorded
            "--results-dir",
            str(results),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((results / "rest-scale-quick-xl.json").read_text())
    assert report["sizes"] == ["quick", "quick-xl"]
    names = [r["strategy"] for r in report["summary"]]
    assert names == ["xio@quick", "inventory@quick", "xio@quick-xl", "inventory@quick-xl"]
    for row in report["summary"]:
        assert row["ok"] == row["runs"] == 1, row
        assert row["s_per_1k"] > 0 and row["peak_rss_mb"] > 0 and "ratio" in row
    xio = report["summary"][0]
    assert {"scan", "send", "commit", "verify", "total"} <= set(xio["phases_s"])
    assert "xio's phases" in proc.stdout
    assert (results / "rest-scale-quick-xl.png").stat().st_size > 0


def test_size_list_only_for_scale_scenarios(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "rest-loopback", "--size", "quick,small"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and "only the scale scenarios" in proc.stderr


def test_client_peak_rss_is_its_own() -> None:
    from bench.client import _peak_rss_kib

    kib = _peak_rss_kib()
    assert 1_000 < kib < 10_000_000


def test_profile_attributes_samples_to_parts_of_xio(tmp_path: Path) -> None:
    from bench.profile import read_profile

    src = "/w/src/xnatio"
    raw = tmp_path / "p.txt"
    raw.write_text(
        "\n".join(
            [
                f"<module> (runpy.py:1);build_inventory ({src}/inventory.py:9);"
                f"read_header ({src}/inventory.py:5);read (io.py:1) 30",
                f"_run ({src}/uploaders/rest.py:5);_verify ({src}/uploaders/rest.py:9);"
                f"list_session_files ({src}/verify.py:3);decode (json/decoder.py:1) 20",
                f"_run ({src}/uploaders/rest.py:5);_verify ({src}/uploaders/rest.py:9);"
                f"template_name ({src}/naming.py:3) 5",
                f"_send_batch ({src}/uploaders/rest.py:5);send (httpcore/x.py:1);"
                f"__iter__ ({src}/archive.py:7) 10",
                f"_send_batch ({src}/uploaders/rest.py:5);send (httpcore/x.py:1) 15",
                "<module> (runpy.py:1);_find_and_load (<frozen importlib._bootstrap>:1) 4",
                "garbage line",
            ]
        )
    )
    prof = read_profile(raw)
    assert prof.samples == 84
    assert prof.categories == {
        "inventory": 30,
        "verification": 25,
        "send: archive": 10,
        "send: http": 15,
        "outside": 4,
    }
    assert prof.leaves["decode (json/decoder.py)"] == 20
    assert prof.xnatio["list_session_files (xnatio/verify.py)"] == 20
