"""upload-many end to end against the sandbox: one login, a global connection cap, failure
isolation, exit codes, re-runs, --resume, progress events and reports."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from xnatio.cli.app import main
from xnatio.sandbox import Sandbox

from .helpers import CountingProxy, manifest, write_sessions

SESSIONS = 6


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as stop:
        main(["upload-many", *args])
    code = stop.value.code
    return code if isinstance(code, int) else 0


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def point_at(url: str) -> None:
        monkeypatch.setenv("XNAT_SERVER", url)
        monkeypatch.setenv("XNAT_USERNAME", "admin")
        monkeypatch.setenv("XNAT_PASSWORD", "admin")

    return point_at


def count_logins(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every login the sandbox accepts (a wrapper around its public auth manager)."""
    seen: list[str] = []
    original = sb.auth.new_session

    def new_session(user: str) -> Any:
        seen.append(user)
        return original(user)

    monkeypatch.setattr(sb.auth, "new_session", new_session)
    return seen


def stored(sb: Sandbox, project: str, subject: str, session: str) -> list[str]:
    """Names of the DICOM files the archived session lists (empty when it does not exist)."""
    url = f"{sb.url}/data/projects/{project}/subjects/{subject}/experiments/{session}"
    with httpx.Client(auth=("admin", "admin")) as c:
        r = c.get(f"{url}/scans/ALL/files", params={"format": "json"})
        if r.status_code == 404:
            return []
        r.raise_for_status()
        return [row["Name"] for row in r.json()["ResultSet"]["Result"]]


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for _ in write_sessions(root, SESSIONS):
        pass
    return root


def rows(root: Path, n: int = SESSIONS) -> list[tuple[str, str, str, str]]:
    return [("P1", f"SUB{i}", f"E{i}", str(root / f"s{i:02d}")) for i in range(n)]


def test_every_session_lands_with_one_login_and_never_more_than_the_cap(
    sandbox: Sandbox,
    sources: Path,
    tmp_path: Path,
    env: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logins = count_logins(sandbox, monkeypatch)
    m = manifest(tmp_path / "m.csv", rows(sources))
    with CountingProxy(sandbox.port) as proxy:
        env(f"http://127.0.0.1:{proxy.port}")
        code = run_cli([
            str(m), "--max-connections", "3", "--max-sessions", "3", "--num-batches", "4",
            "--report", str(tmp_path / "run.csv"), "--progress", "json",
        ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert proxy.gauge.peak <= 3, f"{proxy.gauge.peak} connections at once with a cap of 3"
    assert proxy.gauge.peak >= 2  # and sessions did overlap
    assert logins == ["admin"]
    for i in range(SESSIONS):
        assert len(stored(sandbox, "P1", f"SUB{i}", f"E{i}")) == 8
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    keys = {f"P1/SUB{i}/E{i}" for i in range(SESSIONS)}
    progress = [e for e in events if e["kind"] == "progress"]
    assert progress and {e["session"] for e in progress} == keys
    assert {e["session"] for e in events if e["kind"] == "outcome"} == keys
    with open(tmp_path / "run.csv", newline="") as fh:
        report = list(csv.DictReader(fh))
    assert [(r["key"], r["status"], r["verified"], r["files_sent"]) for r in report] == [
        (f"P1/SUB{i}/E{i}", "landed", "true", "8") for i in range(SESSIONS)
    ]


def test_a_failing_session_does_not_stop_the_others(
    sandbox: Sandbox,
    sources: Path,
    tmp_path: Path,
    env: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = tmp_path / "not-dicom"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    m = manifest(tmp_path / "m.csv", [*rows(sources, 3)[:1], ("P1", "SX", "EX", str(empty)),
                                      *rows(sources, 3)[1:]])  # fmt: skip
    env(sandbox.url)
    code = run_cli([str(m), "--max-sessions", "2", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 1
    assert "failed: P1/SX/EX (m.csv line 3): no DICOM files found" in err
    for i in range(3):
        assert len(stored(sandbox, "P1", f"SUB{i}", f"E{i}")) == 8


def test_fail_fast_stops_at_the_first_failure(
    sandbox: Sandbox, sources: Path, tmp_path: Path, env: Callable[[str], None]
) -> None:
    empty = tmp_path / "not-dicom"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    m = manifest(tmp_path / "m.csv", [("P1", "SX", "EX", str(empty)), *rows(sources, 3)])
    env(sandbox.url)
    report = tmp_path / "r.jsonl"
    code = run_cli([str(m), "--max-sessions", "1", "--fail-fast", "--report", str(report),
                    "--progress", "none"])  # fmt: skip
    assert code == 1
    statuses = [json.loads(line)["status"] for line in report.read_text().splitlines()]
    assert statuses[0] == "failed"
    # At most the session already being read ahead may have started; nothing after it.
    assert statuses[1:] in (["not-started"] * 3, ["interrupted", "not-started", "not-started"])
    assert all(not stored(sandbox, "P1", f"SUB{i}", f"E{i}") for i in range(1, 3))


def test_rerun_is_safe_and_resume_sends_only_what_is_missing(
    sandbox: Sandbox,
    sources: Path,
    tmp_path: Path,
    env: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    m = manifest(tmp_path / "m.csv", rows(sources, 3))
    env(sandbox.url)
    journal = tmp_path / "run.jsonl"
    # The first batch of the first session is refused (403 is not retried): that session is
    # committed incomplete and fails its verification; the others land.
    sandbox.faults.http_error(403, count=1, path="/data/services/import")
    args = [str(m), "--max-sessions", "1", "--num-batches", "2", "--run-journal", str(journal),
            "--progress", "none"]  # fmt: skip
    assert run_cli([*args, "--report", str(tmp_path / "1.jsonl")]) == 1
    first = [json.loads(x) for x in (tmp_path / "1.jsonl").read_text().splitlines()]
    assert [r["status"] for r in first] == ["failed", "landed", "landed"]
    assert len(stored(sandbox, "P1", "SUB0", "E0")) == 4
    capsys.readouterr()

    # The same command again refuses, before sending anything: E0 exists and is incomplete.
    assert run_cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "1 of 3 sessions cannot be uploaded" in err and "--resume" in err

    # --resume sends E0's missing half and checks the others without sending them.
    assert run_cli([*args, "--resume", "--report", str(tmp_path / "2.jsonl")]) == 0
    second = [json.loads(x) for x in (tmp_path / "2.jsonl").read_text().splitlines()]
    assert [(r["status"], r["files_sent"], r["already_present"]) for r in second] == [
        ("landed", 4, 4), ("landed", 0, 8), ("landed", 0, 8),
    ]  # fmt: skip
    assert len(stored(sandbox, "P1", "SUB0", "E0")) == 8

    # Once everything landed, running the command again sends nothing and succeeds.
    assert run_cli([*args, "--report", str(tmp_path / "3.jsonl")]) == 0
    third = [json.loads(x) for x in (tmp_path / "3.jsonl").read_text().splitlines()]
    assert [(r["status"], r["files_sent"]) for r in third] == [("done-earlier", 0)] * 3


def test_dry_run_prints_the_plan_and_sends_nothing(
    sandbox: Sandbox,
    sources: Path,
    tmp_path: Path,
    env: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    m = manifest(
        tmp_path / "m.csv",
        [*rows(sources, 2), ("NOPE", "S9", "E9", str(sources / "s02")),
         ("P1", "S8", "bad label", str(sources / "s03"))],
    )  # fmt: skip
    env(sandbox.url)
    assert run_cli([str(m), "--dry-run"]) == 2
    out = capsys.readouterr().out
    assert "P1       SUB0     E0         8      " in out
    assert "! project NOPE does not exist or cannot be read" in out
    assert "! session label 'bad label' has characters XNAT does not accept (' ')" in out
    assert "4 sessions, 32 files" in out and "2 blocked" in out
    assert not stored(sandbox, "P1", "SUB0", "E0")
    assert run_cli([str(m), "--dry-run", "--json"]) == 2
    plan = json.loads(capsys.readouterr().out)
    assert [s["action"] for s in plan["sessions"]] == ["upload", "upload", "blocked", "blocked"]


def test_c_store_sessions_share_the_cap_with_the_rest_requests(
    make_sandbox: Callable[..., Sandbox],
    sources: Path,
    tmp_path: Path,
    env: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sb = make_sandbox(dicom_port=0)
    sb.store.set_prearchive_code("P1", 4)  # the project auto-archives what the SCP receives
    assert sb.dicom_port is not None
    m = manifest(tmp_path / "m.csv", rows(sources, 4))
    with CountingProxy(sb.port) as web, CountingProxy(sb.dicom_port, web.gauge) as dicom:
        env(f"http://127.0.0.1:{web.port}")
        code = run_cli([
            str(m), "--transport", "dicom-store", "--dicom-host", "127.0.0.1",
            "--dicom-port", str(dicom.port), "--max-connections", "3", "--max-sessions", "4",
            "--num-batches", "2", "--wait", "60", "--progress", "none",
        ])  # fmt: skip
        # Associations and HTTP connections together, as the server sees them.
        peak, associations = web.gauge.peak, dicom.gauge.total
    assert code == 0, capsys.readouterr().err
    assert peak <= 3, f"{peak} connections at once with a cap of 3"
    assert associations >= 4  # every session sent over its own associations
    for i in range(4):
        assert len(stored(sb, "P1", f"SUB{i}", f"E{i}")) == 8


def test_a_grown_manifest_sends_only_its_new_sessions(
    sandbox: Sandbox,
    sources: Path,
    tmp_path: Path,
    env: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    env(sandbox.url)
    m = tmp_path / "nightly.csv"
    manifest(m, rows(sources, 2))
    assert run_cli([str(m), "--progress", "none"]) == 0
    manifest(m, rows(sources, 3))  # tonight's visit appended
    report = tmp_path / "r.jsonl"
    assert run_cli([str(m), "--progress", "none", "--report", str(report)]) == 0
    statuses = [json.loads(x)["status"] for x in report.read_text().splitlines()]
    assert statuses == ["done-earlier", "done-earlier", "landed"]
    capsys.readouterr()
    # A landed session whose row now names other files is not taken as done: the plan stops.
    changed = rows(sources, 3)
    changed[0] = ("P1", "SUB0", "E0", str(sources / "s05"))
    manifest(m, changed)
    assert run_cli([str(m), "--progress", "none"]) == 2
    assert "session E0 exists in P1" in capsys.readouterr().err
