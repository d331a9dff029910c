"""The harness refuses to measure an uncommitted tree unless told, and records what it ran."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from bench.runner import DirtyTree, check_tree, run_scenario, tree_state


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for rel in ("src/pkg/mod.py", "bench/run.py", "bench/results/old.json", "docs/x.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x = 1\n")
    _git(root.parent, "init", "-q", str(root))
    _git(root, "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return root


def test_clean_tree_records_the_commit(repo: Path) -> None:
    state = check_tree(repo)
    assert state["commit"] == _git(repo, "rev-parse", "HEAD").strip()
    assert state["dirty"] is False
    assert state["allow_dirty"] is False


def test_changes_outside_src_and_bench_or_in_results_do_not_count(repo: Path) -> None:
    (repo / "docs/x.md").write_text("changed\n")
    (repo / "bench/results/old.json").write_text("{}\n")
    (repo / "bench/results/new.json").write_text("{}\n")
    assert tree_state(repo)["dirty_paths"] == []


@pytest.mark.parametrize("rel", ["src/pkg/mod.py", "bench/run.py", "src/pkg/new.py"])
def test_changes_under_src_or_bench_are_refused_unless_allowed(repo: Path, rel: str) -> None:
    (repo / rel).write_text("x = 2\n")
    with pytest.raises(DirtyTree, match=rf"{rel}.*--allow-dirty"):
        check_tree(repo)
    state = check_tree(repo, allow_dirty=True)
    assert state["dirty"] is True
    assert state["allow_dirty"] is True
    assert any(rel in line for line in state["dirty_paths"])


def test_a_dirty_run_stops_before_anything_runs(repo: Path, tmp_path: Path) -> None:
    (repo / "src/pkg/mod.py").write_text("x = 3\n")
    data, results = tmp_path / "data", tmp_path / "results"
    with pytest.raises(DirtyTree):
        run_scenario("rest-loopback", quick=True, data_dir=data, results_dir=results, repo=repo)
    assert not data.exists()
    assert not results.exists()
