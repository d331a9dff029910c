"""Progress events and summaries that tell the truth, through ``--progress json`` and the library.

The command runs for real against a sandbox on loopback; its JSON events (stderr) and its JSON
summary (stdout) must tell the same story: one total, one rate, this run's work only, XNAT's own
work in words while the client waits. Orderings are proved by the events themselves.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import xnatio
from xnatio.cli.display import human_bytes
from xnatio.progress import ProgressEvent, Throttle
from xnatio.result.outcome import DicomStoreResult, UploadResult
from xnatio.sandbox import Sandbox
from xnatio.synth import write_session

SERIES, INSTANCES = 2, 15
FILES = SERIES * INSTANCES
SHARED = ["files_sent", "files_failed", "already_present", "bytes_sent", "send_duration",
          "total_duration", "send_rate", "verify_report", "total_files", "present", "errors",
          "skipped", "files", "journal_path", "nothing_to_send", "success"]  # fmt: skip
WAITING_STATES = {"absent", "receiving", "building", "archiving", "moving", "ready", "archived",
                  "conflict", "error", "unreachable", "elsewhere"}  # fmt: skip


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("events") / "session"
    write_session(out, series=SERIES, instances=INSTANCES, rows=32, columns=32, seed=5)
    return out


def xio(sb: Sandbox, *args: str, cwd: Path) -> tuple[int, list[dict[str, Any]], str, str]:
    """Run ``xio ARGS --progress json``: exit code, events, stdout, other stderr lines."""
    env = {
        **os.environ,
        "XNAT_SERVER": sb.url,
        "XNAT_USERNAME": "admin",
        "XNAT_PASSWORD": "admin",
        "XNAT_DICOM_HOST": "127.0.0.1",
        "XNAT_DICOM_PORT": str(sb.dicom_port or ""),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "xnatio", *args, "--progress", "json"],
        capture_output=True, text=True, env=env, cwd=cwd, stdin=subprocess.DEVNULL, timeout=300,
    )  # fmt: skip
    events = [json.loads(ln) for ln in proc.stderr.splitlines() if ln.startswith("{")]
    other = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("{"))
    return proc.returncode, events, proc.stdout, other


def of(events: list[dict[str, Any]], phase: str) -> list[dict[str, Any]]:
    return [e for e in events if e["phase"] == phase]


def first(events: list[dict[str, Any]], phase: str) -> int:
    return next(i for i, e in enumerate(events) if e["phase"] == phase)


def rate_of(n_bytes: int, seconds: float, rate: float) -> bool:
    """``rate`` is ``n_bytes`` over ``seconds``, as JSON rounds seconds (to 1 ms) and rates."""
    return n_bytes / (seconds + 0.0005) - 0.1 <= rate <= n_bytes / (seconds - 0.0005) + 0.1


def source_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.dcm"))


def test_rest_events_and_summary_agree(sandbox: Sandbox, session: Path, tmp_path: Path) -> None:
    code, events, out, err = xio(
        sandbox, "upload-dicom", "P1", "S1", "E1", str(session), "--num-batches", "6",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    order = [first(events, p) for p in ("scanning", "uploading", "committing", "verifying")]
    assert order == sorted(order) and events[-1]["phase"] == "done"
    # Scanning is throttled: about ten events a second, and always the last one.
    scans = of(events, "scanning")
    assert scans[-1]["current"] == scans[-1]["total"] == FILES
    gaps = [b["elapsed"] - a["elapsed"] for a, b in itertools.pairwise(scans[:-1])]
    assert all(g >= 0.09 for g in gaps), gaps
    uploads = of(events, "uploading")
    currents = [e["current"] for e in uploads]
    assert currents == sorted(currents)
    assert all(e["bytes_sent"] <= e["bytes_total"] for e in uploads)
    last = uploads[-1]
    # The phase ends on the summary's numbers: one total, one rate, one send time.
    assert (last["current"], last["total"], last["failed"]) == (6, 6, 0)
    assert last["bytes_sent"] == last["bytes_total"] == summary["bytes_sent"]
    assert summary["bytes_sent"] == source_bytes(session)
    assert round(last["elapsed"], 3) == summary["send_duration"]
    assert rate_of(last["bytes_sent"], last["elapsed"], summary["send_rate"])
    assert summary["throughput_mb_s"] == pytest.approx(summary["send_rate"] / 1e6, abs=1e-3)
    done = events[-1]
    assert (done["current"], done["total"]) == (FILES, FILES)
    assert done["bytes_sent"] == done["bytes_total"] == summary["bytes_sent"] > 0
    assert summary["total_duration"] >= summary["send_duration"] > 0
    assert summary["files_sent"] == FILES and summary["files_failed"] == 0


def test_a_run_counts_only_its_own_work(sandbox: Sandbox, session: Path, tmp_path: Path) -> None:
    half = tmp_path / "half"
    shutil.copytree(session / "series_001", half / "series_001")
    code, _, out, err = xio(sandbox, "upload-dicom", "P1", "S1", "E2", str(half), "--json",
                            cwd=tmp_path)  # fmt: skip
    assert code == 0, err
    code, events, out, err = xio(
        sandbox, "upload-dicom", "P1", "S1", "E2", str(session), "--overwrite", "append",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    missing = source_bytes(session) - source_bytes(half)
    assert summary["already_present"] == INSTANCES and summary["files_sent"] == INSTANCES
    assert summary["bytes_sent"] == missing, (summary["bytes_sent"], missing)
    assert rate_of(missing, summary["send_duration"], summary["send_rate"])
    last = of(events, "uploading")[-1]
    assert last["bytes_sent"] == last["bytes_total"] == missing
    assert events[-1]["bytes_total"] == missing and events[-1]["total"] == INSTANCES
    # A resume with nothing to send sends no bytes and shows no rate.
    code, events, out, err = xio(sandbox, "upload-dicom", "P1", "S1", "E2", str(session),
                                 "--resume", cwd=tmp_path)  # fmt: skip
    assert code == 0, err
    line = out.splitlines()[0]
    assert line == f"OK: 0 of {FILES} files sent (0 B); 0 batches ok, 0 failed, 0 retries", out
    assert "/s" not in out
    assert events[-1]["phase"] == "done" and events[-1]["bytes_total"] == 0


def test_cstore_waits_in_words_and_gives_both_times(
    make_sandbox: Callable[..., Sandbox], session: Path, tmp_path: Path
) -> None:
    sb = make_sandbox(dicom_port=0, idle_interval=3.0)  # receiving for 3 s after the send
    sb.store.set_prearchive_code("P1", 4)
    code, events, out, err = xio(
        sb, "upload-dicom", "P1", "S1", "E3", str(session), "--transport", "dicom-store",
        "--num-batches", "3", "--wait", "120", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    waits = of(events, "waiting")
    assert waits, "no waiting event: the send finished before XNAT built the session"
    order = [first(events, p) for p in ("scanning", "uploading", "waiting", "verifying", "done")]
    assert order == sorted(order), order
    # What XNAT does, in words, and seconds waited so far; never seconds of --wait as instances.
    assert {e["state"] for e in waits} <= WAITING_STATES
    assert "receiving" in {e["state"] for e in waits}
    assert all(e["message"] and e["total"] in (0, FILES) for e in waits)
    elapsed = [e["elapsed"] for e in waits]
    assert elapsed == sorted(elapsed)
    assert all(e["total"] == FILES for e in of(events, "verifying"))
    last = of(events, "uploading")[-1]
    assert (last["current"], last["total"], last["failed"]) == (FILES, FILES, 0)
    assert last["bytes_sent"] == last["bytes_total"] == summary["bytes_sent"]
    assert round(last["elapsed"], 3) == summary["send_duration"]
    waited = summary["verification"]["waited"]
    assert summary["total_duration"] >= summary["send_duration"] + waited
    assert waited >= elapsed[-1]
    assert summary["files_sent"] == summary["sent"] == FILES
    assert events[-1]["bytes_total"] == events[-1]["bytes_sent"] == source_bytes(session)


def test_library_callbacks_one_at_a_time_on_documented_threads(
    sandbox: Sandbox, session: Path
) -> None:
    inside = 0
    most = 0
    lock = threading.Lock()
    seen: list[tuple[str, str]] = []

    def callback(event: ProgressEvent) -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
            seen.append((event.phase, threading.current_thread().name))
        threading.Event().wait(0.002)  # long enough for another worker to arrive meanwhile
        with lock:
            inside -= 1

    result = xnatio.upload_dicom_parallel_rest(
        server=sandbox.url, username="admin", password="admin", source_dir=session,
        project="P1", subject="S1", session="E4", num_batches=10, upload_workers=5,
        progress_callback=callback,
    )  # fmt: skip
    assert result.success, result.errors
    assert most == 1, "two callbacks ran at once"
    main = threading.main_thread().name
    assert {t for p, t in seen if p != "uploading"} == {main}
    workers = {t for p, t in seen if p == "uploading" and t != main}
    assert workers and all(t.startswith("xio-up") for t in workers), workers
    assert xnatio.ProgressEvent is ProgressEvent and "ProgressEvent" in xnatio.__all__


def test_both_results_share_names() -> None:
    rest = UploadResult(success=True, total_files=3, total_size_mb=0.3, duration=5.0,
                        files_sent=2, bytes_sent=200_000, send_duration=2.0,
                        present={"a": "archived"}, already_present=1)  # fmt: skip
    dicom = DicomStoreResult(success=True, total_files=3, sent=2, warned=0, failed=1,
                             duration=2.0, bytes_sent=200_000, present={"a": "journal"},
                             total_duration=5.0)  # fmt: skip
    for name in SHARED:
        assert hasattr(rest, name) and hasattr(dicom, name), name
    for r in (rest, dicom):
        assert (r.files_sent, r.already_present, r.send_duration, r.total_duration) == (2, 1, 2, 5)
        assert r.send_rate == 100_000.0
    assert dicom.files_failed == 1 and dicom.verify_report is dicom.verification
    assert rest.throughput_mb_s == 0.1


def test_throttle_lets_the_last_event_through() -> None:
    throttle = Throttle(interval=3600.0)
    assert throttle.ready()  # the first
    assert not throttle.ready()  # within the interval
    assert throttle.ready(final=True)  # the last always goes out


def test_resume_after_ctrl_c_counts_only_the_rest(
    sandbox: Sandbox, session: Path, tmp_path: Path
) -> None:
    sandbox.faults.file_delay = 0.05
    env = {**os.environ, "XNAT_SERVER": sandbox.url, "XNAT_USERNAME": "admin",
           "XNAT_PASSWORD": "admin"}  # fmt: skip
    args = ["upload-dicom", "P1", "S1", "E5", str(session), "--num-batches", "10",
            "--upload-workers", "2", "--json"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "xnatio", *args, "--progress", "json"], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("phase") == "uploading" and event["current"] >= 1:
            proc.send_signal(signal.SIGINT)  # a batch acknowledged: Ctrl-C now
            break
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    first = json.loads(out)
    assert 0 < first["files_sent"] < FILES, first
    # Slow enough that the send time is not a few hundredths of a second: the rate check below
    # compares two clocks.
    sandbox.faults.file_delay = 0.01
    code, events, out, err = xio(sandbox, *args[:-1], "--resume", cwd=tmp_path)
    assert code == 0, err
    # The summary counts this run's files and bytes, and its rate is theirs.
    rest = source_bytes(session) - first["bytes_sent"]
    todo = FILES - first["files_sent"]
    line = out.splitlines()[0]
    m = re.fullmatch(rf"OK: {todo} of {FILES} files sent \((.+?)\) in \S+ s, (\S+ \S+)/s; .*", line)
    assert m and m.group(1) == human_bytes(rest), (line, human_bytes(rest))
    assert f"{first['files_sent']} instances were already on the server and not re-sent" in out
    last = of(events, "uploading")[-1]
    assert last["bytes_sent"] == last["bytes_total"] == rest == events[-1]["bytes_total"]
    number, unit = m.group(2).split()
    shown = float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    # The line's rate is this run's bytes over its send time. The line shows two or three
    # digits, and its clock stops a few milliseconds from the last event's: allow 7%, no more
    # (all the session's bytes over the same time would be a quarter more).
    low, high = 0.93 * rest / last["elapsed"], 1.07 * rest / last["elapsed"]
    assert low <= shown <= high, (line, last)
