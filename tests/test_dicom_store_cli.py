"""``xio upload-dicom --transport dicom-store`` into the sandbox SCP: journal, C-ECHO, verification.

The command runs in this process against a sandbox on loopback, so the SCP's fault switches
apply; the sandbox builds and archives a session one second after its last instance.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.cli_run import Run, run_cli
from xnatio.result.journal import read_journal
from xnatio.sandbox import Sandbox
from xnatio.synth import write_session

FIX_ADDRESS = "check --dicom-host/--dicom-port and that the receiver is running"


@pytest.fixture
def scp(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    sb = make_sandbox(dicom_port=0)
    sb.store.set_prearchive_code("P1", 4)  # built sessions are archived
    return sb


@pytest.fixture
def xio(
    scp: Sandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Callable[..., Run]:
    """``xio upload-dicom P1 S1 <session> <source> --transport dicom-store ...`` in-process."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("XNAT_SERVER", scp.url)
    monkeypatch.setenv("XNAT_USERNAME", "admin")
    monkeypatch.setenv("XNAT_PASSWORD", "admin")

    def run(session: str, source: Path, *args: str) -> Run:
        argv = ["upload-dicom", "P1", "S1", session, str(source), "--transport", "dicom-store"]
        argv += ["--dicom-port", str(scp.dicom_port), "--progress", "none", *args]
        return run_cli(capsys, argv)

    return run


def make_source(root: Path, series: int, instances: int) -> tuple[Path, list[str]]:
    write_session(root, series=series, instances=instances, rows=16, columns=16, seed=3)
    uids = [
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in sorted(root.rglob("*.dcm"))
    ]
    return root, uids


def journal_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_send_journals_each_confirmed_instance(
    xio: Callable[..., Run], scp: Sandbox, tmp_path: Path
) -> None:
    source, uids = make_source(tmp_path / "src", 3, 4)
    journal = tmp_path / "j.jsonl"
    run = xio("J1", source, "--num-batches", "2", "--journal-chunk", "5",
              "--journal", str(journal), "--json")  # fmt: skip
    assert run.code == 0, run.err
    summary = run.json()
    # One send: one association per worker, not a fresh set per journal chunk.
    assert summary["associations"] == 2
    assert summary["sent"] == len(uids) == summary["total_files"]
    records = journal_records(journal)
    kinds = [r["type"] for r in records]
    assert kinds[:2] == ["header", "run"] and kinds[-1] == "done" and records[-1]["ok"]
    sent = [uid for r in records if r["type"] == "sent" for uid in r["sop"]]
    assert sorted(sent) == sorted(uids)  # each confirmed instance once
    assert 1 <= kinds.count("sent") < len(uids)  # written in batches, not one fsync each
    state, _ = read_journal(journal)
    assert state.complete and state.confirmed == set(uids)


def test_a_send_rejected_at_the_echo_leaves_nothing_to_resume(
    xio: Callable[..., Run], scp: Sandbox, tmp_path: Path
) -> None:
    source, uids = make_source(tmp_path / "src", 1, 3)
    journal = tmp_path / "j.jsonl"
    wrong_ae = xio("A1", source, "--dicom-called-aet", "NOTXNAT", "--journal", str(journal))
    assert wrong_ae.code == 3, wrong_ae.err
    assert "called AE title not recognised" in wrong_ae.err
    assert len(wrong_ae.err.strip().splitlines()) == 1
    assert read_journal(journal)[0].runs == 0

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = str(s.getsockname()[1])
    closed = xio("A1", source, "--dicom-host", "127.0.0.1", "--dicom-port", free,
                 "--journal", str(journal))  # fmt: skip
    assert closed.code == 3, closed.err
    assert "connection refused" in closed.err and FIX_ADDRESS in closed.err
    assert read_journal(journal)[0].runs == 0
    assert scp.store.prearchive_rows(None) == []

    # The corrected command just runs: no demand for --resume.
    fixed = xio("A1", source, "--journal", str(journal), "--wait", "30")
    assert fixed.code == 0, fixed.err
    state, _ = read_journal(journal)
    assert state.runs == 1 and state.complete and state.confirmed == set(uids)


def test_instances_the_receiver_refused_do_not_hold_the_verification(
    xio: Callable[..., Run], scp: Sandbox, tmp_path: Path
) -> None:
    wait = 60.0

    # Every instance answered 0xC000 (permanent: one attempt each): nothing to wait for.
    source, uids = make_source(tmp_path / "all", 1, 2)
    scp.faults.scp_status(0xC000, count=len(uids))
    report = tmp_path / "all.jsonl"
    run = xio("C1", source, "--num-batches", "1", "--wait", str(wait), "--json",
              "--report", str(report))  # fmt: skip
    assert run.code == 1, run.err
    assert run.seconds < wait / 2, f"waited {run.seconds:.1f} s"
    summary = run.json()
    assert summary["failed"] == len(uids) and len(summary["errors"]) == len(uids)
    assert all("0xC000" in e for e in summary["errors"])
    assert summary["verification"]["location"] == "absent"
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(r["sop_instance_uid"] for r in rows if r["outcome"] == "failed") == sorted(uids)

    # One instance refused, the others stored: the check waits for those, not for it.
    source, uids = make_source(tmp_path / "some", 1, 3)
    scp.faults.scp_status(0xC000, count=1)  # the first instance's one attempt
    report = tmp_path / "some.jsonl"
    args = ["--num-batches", "1", "--wait", str(wait), "--report", str(report)]
    run = xio("C2", source, *args, "--json")
    assert run.code == 1, run.err
    assert run.seconds < wait / 2, f"waited {run.seconds:.1f} s"
    summary = run.json()
    assert (summary["sent"], summary["failed"]) == (2, 1)
    verification = summary["verification"]
    assert verification["location"] == "archived"
    assert verification["archive"]["matched"] == verification["archive"]["expected"] == 2
    assert verification["problems"] == []
    assert len(summary["errors"]) == 1 and "0xC000" in summary["errors"][0]
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(r["outcome"] for r in rows) == ["failed", "sent", "sent"]

    # --resume sends the refused instance only, and completes the session.
    resumed = xio("C2", source, *args, "--resume")
    assert resumed.code == 0, resumed.err
    assert "1 of 1 instances stored" in resumed.out
    landed = [u for scan in scp.store.scan_file_uids("P1", "S1", "C2").values() for u in scan]
    assert sorted(landed) == sorted(uids)


def test_text_output_names_what_was_checked_and_what_failed(
    xio: Callable[..., Run], scp: Sandbox, tmp_path: Path
) -> None:
    source, _ = make_source(tmp_path / "src", 1, 3)
    scp.faults.scp_status(0xC000, count=1)  # permanent: not sent again
    run = xio("T1", source, "--num-batches", "1", "--wait", "60")
    assert run.code == 1
    assert "INCOMPLETE: 2 of 3 instances stored (0 with warnings, 1 failed)" in run.out
    assert "2 of 2 stored instances present exactly once" in run.out
    errors = [line for line in run.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "0xC000 Error: Cannot understand after 1 attempt(s)" in errors[0]
