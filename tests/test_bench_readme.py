"""The generated performance tables: rows from results files, and README/docs kept in sync."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench.readme import (
    DOCS,
    README,
    Comparison,
    comparison_row,
    render_docs,
    render_readme,
    replace_between,
)
from bench.report import markdown

CMP = Comparison("REST, WAN", "rest-wan-medium-x", "archive-first", "archive-first")


def _report(xio: list[float], other: list[float], *, dirty: bool = False) -> dict[str, Any]:
    runs = [{"strategy": "xio", "row": "xio", "duration": d, "success": True} for d in xio]
    runs += [
        {"strategy": "archive-first", "row": "archive-first", "duration": d, "success": True}
        for d in other
    ]
    # A failed run never counts, however fast.
    runs.append({"strategy": "xio", "row": "xio", "duration": 0.1, "success": False})
    return {
        "scenario": "rest-wan",
        "size": "medium",
        "repeat": max(len(xio), len(other)),
        "reference": "xio",
        "command": "python -m bench rest-wan",
        "started": "2026-11-30T12:00:00+0000",
        "content": "realistic",
        "profile": {"name": "wan-cap12", "summary": "20 ms each way, 12 MB/s in total"},
        "dataset": {"files": 3000, "bytes": 397_033_200},
        "machine": {"commit": "0123456789abcdef", "dirty": dirty, "allow_dirty": dirty},
        "summary": [],
        "runs": runs,
    }


def test_row_is_medians_of_successful_runs() -> None:
    row = comparison_row(CMP, _report([36.0, 34.0, 35.0], [40.0, 41.0, 90.0]))
    assert row == (
        "| REST, WAN (20 ms each way, 12 MB/s in total; 3,000 files, 397 MB) | 35.0 s | "
        "archive-first: 41.0 s | xio 1.17x faster | "
        "`rest-wan-medium-x` @ `0123456`, realistic data |"
    )


@pytest.mark.parametrize(
    ("xio", "other", "verdict"),
    [
        ([50.0, 50.0, 50.0], [40.0, 40.0, 40.0], "**xio 1.25x slower**"),
        ([35.0, 35.0, 35.0], [35.7, 35.7, 35.7], "tie (xio at 0.98x its time)"),
        ([10.0, 10.0, 10.0], [400.0, 400.0, 400.0], "xio 40.0x faster"),
    ],
)
def test_losses_and_ties_are_said(xio: list[float], other: list[float], verdict: str) -> None:
    assert f"| {verdict} |" in comparison_row(CMP, _report(xio, other))


def test_too_few_runs_and_dirty_trees_are_marked() -> None:
    row = comparison_row(CMP, _report([35.0, 36.0], [40.0, 41.0, 42.0], dirty=True))
    assert "**only 2 runs**" in row
    assert "**uncommitted changes**" in row
    text = markdown(_report([35.0], [40.0], dirty=True), "rest-wan-medium-x")
    assert "**1 repeats only (fewer than 3: indicative)**" in text
    assert "+ uncommitted changes (--allow-dirty)" in text


def test_a_side_without_a_complete_run_is_shown_as_failed() -> None:
    report = _report([35.0, 36.0, 37.0], [])
    report["runs"] += [
        {
            "strategy": "archive-first",
            "row": "archive-first",
            "duration": 20.0,  # faster, but the server did not hold every file
            "success": False,
            "error": "RuntimeError: tool exited 1: timeout\nError: 295/3000 files failed\nlogs",
        }
    ]
    row = comparison_row(CMP, report)
    assert (
        "| 36.0 s | archive-first: **failed in 1 of 1 runs** "
        "(first: Error: 295/3000 files failed) |" in row
    )
    assert "| no comparison |" in row
    assert "20.0" not in row


def test_replace_between_markers() -> None:
    text = "a\n<!-- t:start -->\nold\n<!-- t:end -->\nb\n"
    assert replace_between(text, "t", "new") == "a\n<!-- t:start -->\nnew\n<!-- t:end -->\nb\n"
    with pytest.raises(ValueError, match="markers"):
        replace_between("no markers", "t", "new")


@pytest.mark.parametrize(("path", "render"), [(README, render_readme), (DOCS, render_docs)])
def test_committed_tables_match_the_committed_results(path: Path, render: Any) -> None:
    text = path.read_text()
    assert render(text) == text, f"{path.name} is stale: run python -m bench.readme"
