"""Kill the upload process at random points, resume until complete: every instance exactly once.

The upload runs as ``python -m xnatio upload-dicom ... --progress json`` in a subprocess against
a sandbox in this process; it is SIGKILLed after a random number of progress events, then
``--resume`` is run until it succeeds. Both transports.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from xnatio.result.journal import read_journal
from xnatio.sandbox import Sandbox
from xnatio.synth import write_session

SERIES, INSTANCES = 3, 6
TOTAL = SERIES * INSTANCES


@pytest.fixture(autouse=True)
def _journal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rsrc") / "session"
    write_session(out, series=SERIES, instances=INSTANCES, rows=16, columns=16, seed=5)
    return out


def env_for(sb: Sandbox) -> dict[str, str]:
    return {
        **os.environ,
        "XNAT_SERVER": sb.url,
        "XNAT_USERNAME": "admin",
        "XNAT_PASSWORD": "admin",
    }


def xio(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xnatio", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def run_and_kill(args: list[str], env: dict[str, str], after_events: int) -> tuple[int, int]:
    """Run xio, SIGKILL it after ``after_events`` uploading events; (returncode, events)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "xnatio", *args, "--progress", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    seen = 0
    for line in proc.stderr:
        if line.startswith("{") and json.loads(line)["phase"] == "uploading":
            seen += 1
            if seen >= after_events:
                proc.send_signal(signal.SIGKILL)
                break
    proc.stderr.close()
    return proc.wait(timeout=60), seen


def uids_once(sb: Sandbox, session: str) -> None:
    per_scan = sb.store.scan_file_uids("P1", "S1", session)
    counts = Counter(uid for uids in per_scan.values() for uid in uids)
    assert sum(counts.values()) == TOTAL, per_scan
    assert set(counts.values()) == {1}
    assert sorted(per_scan) == ["1", "2", "3"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rest_kill_and_resume(sandbox: Sandbox, source: Path, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    sandbox.faults.file_delay = 0.02  # slow enough to be killed mid-run
    env = env_for(sandbox)
    session = f"R{seed}"
    journal = tmp_path / "j.jsonl"
    base = ["upload-dicom", "P1", "S1", session, str(source), "--num-batches", "6"]
    base += ["--upload-workers", "2", "--journal", str(journal)]
    code, seen = run_and_kill(base, env, after_events=rng.randint(1, 8))
    assert code == -signal.SIGKILL, f"finished before the kill ({seen} events)"
    state, _ = read_journal(journal)
    assert state.runs == 1 and not state.complete

    # A plain re-run points at --resume instead of starting over.
    plain = xio(base, env)
    assert plain.returncode == 2 and "--resume" in plain.stderr

    sandbox.faults.file_delay = 0.0
    for _ in range(3):
        resumed = xio([*base, "--resume", "--json"], env)
        if resumed.returncode == 0:
            break
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["already_present"] + summary["files_sent"] == TOTAL
    assert summary["files_sent"] <= TOTAL - len(state.confirmed)
    assert summary["verification"]["matched"] == TOTAL
    uids_once(sandbox, session)
    assert sandbox.store.prearchive_rows(None) == []

    again = xio([*base, "--resume"], env)
    assert again.returncode == 0, again.stderr
    assert f"nothing to send: all {TOTAL} instances" in again.stdout
    uids_once(sandbox, session)


@pytest.mark.parametrize("seed", [4, 5])
def test_dicom_store_kill_and_resume(
    make_sandbox: Callable[..., Sandbox], source: Path, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    sb = make_sandbox(dicom_port=0)
    sb.store.set_prearchive_code("P1", 4)
    sb.faults.file_delay = 0.02
    env = env_for(sb)
    session = f"C{seed}"
    journal = tmp_path / "j.jsonl"
    base = ["upload-dicom", "P1", "S1", session, str(source), "--transport", "dicom-store"]
    base += ["--dicom-port", str(sb.dicom_port), "--num-batches", "2", "--journal-chunk", "4"]
    base += ["--journal", str(journal), "--wait", "30"]
    code, seen = run_and_kill(base, env, after_events=rng.randint(2, 12))
    assert code == -signal.SIGKILL, f"finished before the kill ({seen} events)"
    state, _ = read_journal(journal)
    assert state.runs == 1 and not state.complete

    sb.faults.file_delay = 0.0
    report = tmp_path / "r.jsonl"
    for _ in range(3):
        resumed = xio([*base, "--resume", "--json", "--report", str(report)], env)
        if resumed.returncode == 0:
            break
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["verification"]["ok"] is True
    assert summary["already_present"] + summary["sent"] == TOTAL
    assert summary["already_present"] >= len(state.confirmed)
    uids_once(sb, session)
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(rows) == TOTAL
    assert Counter(r["outcome"] for r in rows).keys() <= {"sent", "already-present"}

    again = xio([*base, "--resume"], env)
    assert again.returncode == 0, again.stderr
    assert "nothing to send" in again.stdout
    uids_once(sb, session)
