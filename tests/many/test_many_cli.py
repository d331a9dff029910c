"""upload-many from the command line: discovery end to end, bad input, Ctrl-C and --resume,
shards and merged reports, and the HTML report rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from xnatio.sandbox import Sandbox
from xnatio.synth import write_session

from .helpers import manifest, write_sessions
from .test_many_run import env, rows, run_cli, sources, stored

__all__ = ["env", "sources"]  # fixtures used here

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_discovered_study_split_over_a_folder_and_a_zip_lands_as_one_session(
    sandbox: Sandbox, tmp_path: Path, env: Callable[[str], None]
) -> None:
    raw = write_session(tmp_path / "raw", series=2, instances=3, rows=16, columns=16, seed=5,
                        patient_id="PAT5")  # fmt: skip
    root = tmp_path / "export"
    shutil.copytree(raw.out / "series_001", root / "disk1")
    root.joinpath("disk2").mkdir()
    with zipfile.ZipFile(root / "disk2" / "rest.zip", "w") as z:
        for f in sorted((raw.out / "series_002").iterdir()):
            z.write(f, f.name)
    env(sandbox.url)
    code = run_cli(["--discover", str(root), "--project", "P1", "--subject", "{PatientID}",
                    "--session", "{PatientID}_{StudyDate}", "--progress", "none"])  # fmt: skip
    assert code == 0
    assert len(stored(sandbox, "P1", "PAT5", "PAT5_20240115")) == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["@bad"], "line 1: missing column"),
        (["@row"], "line 3: num_batches must be a whole number"),
        (["--discover", "@root", "--project", "P1", "--session", "{PatientID}_{OperatorsName}"],
         "has no OperatorsName"),
        (["--discover", "@root", "--project", "P1", "--session", "{Nonsense}"],
         "{Nonsense} is not a DICOM attribute keyword"),
        (["@missing"], "source"),
        (["@missing", "--shard", "9/4"], "--shard 9/4"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_nothing_is_sent(
    sandbox: Sandbox,
    sources: Path,
    tmp_path: Path,
    env: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("project,subject,session\nP1,S,E\n")
    row = tmp_path / "row.csv"
    row.write_text(f"project,subject,session,source,num_batches\nP1,S,E,{sources}/s00,1\n"
                   f"P1,S2,E2,{sources}/s01,many\n")  # fmt: skip
    missing = manifest(tmp_path / "missing.csv", [*rows(sources, 2), ("P1", "SX", "EX", "/nope")])
    values = {"@bad": bad, "@row": row, "@root": sources, "@missing": missing}
    env(sandbox.url)
    assert run_cli([str(values.get(a, a)) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xio: error: ") and "\n" not in err, err
    assert message in err
    assert not stored(sandbox, "P1", "SUB0", "E0")  # the good sessions were not sent either


def test_an_unreachable_dask_scheduler_exits_3_before_anything_is_sent(
    sandbox: Sandbox,
    sources: Path,
    tmp_path: Path,
    env: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "1s")
    import dask.config

    dask.config.refresh()
    m = manifest(tmp_path / "m.csv", rows(sources, 2))
    env(sandbox.url)
    logins_before = sandbox.auth.session_count()
    assert run_cli([str(m), "--dask", f"tcp://127.0.0.1:{port}", "--progress", "none"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("xio: error: cannot reach the Dask scheduler") and "\n" not in err
    assert sandbox.auth.session_count() == logins_before  # not even a login
    assert not stored(sandbox, "P1", "SUB0", "E0")


def test_ctrl_c_stops_the_run_and_resume_finishes_it(
    sandbox: Sandbox, sources: Path, tmp_path: Path
) -> None:
    m = manifest(tmp_path / "m.csv", rows(sources, 4))
    sandbox.faults.file_delay = 0.15  # each stored file takes a while: time to interrupt
    journal = tmp_path / "run.jsonl"
    envs = {**os.environ, "XNAT_SERVER": sandbox.url, "XNAT_USERNAME": "admin",
            "XNAT_PASSWORD": "admin"}  # fmt: skip
    args = [sys.executable, "-m", "xnatio", "upload-many", str(m), "--max-sessions", "1",
            "--num-batches", "4", "--run-journal", str(journal), "--progress", "json"]  # fmt: skip
    with subprocess.Popen(args, env=envs, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait for the first confirmed batch, then press Ctrl-C
            if '"phase": "uploading"' in line and '"current": 1' in line:
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.stderr.read()
        assert proc.wait(60) == 130, rest
    assert "xio: interrupted" in rest
    records = [json.loads(x) for x in journal.read_text().splitlines()]
    outcomes = [r for r in records if r["type"] == "session" and r["status"] != "started"]
    assert outcomes and outcomes[0]["status"] == "interrupted"
    assert records[-1]["type"] == "end" and records[-1]["cancelled"] is True

    sandbox.faults.file_delay = 0.0
    done = subprocess.run([*args[:-2], "--progress", "none", "--resume"], env=envs,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for i in range(4):
        assert len(stored(sandbox, "P1", f"SUB{i}", f"E{i}")) == 8  # each instance once


def test_shards_cover_the_manifest_and_merge_into_one_report(
    sandbox: Sandbox,
    tmp_path: Path,
    env: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "src"
    for _ in write_sessions(root, 6, series=1, instances=2):
        pass
    m = manifest(tmp_path / "m.csv", rows(root, 6))
    env(sandbox.url)
    reports = []
    for k in range(3):
        reports.append(tmp_path / f"shard{k}.jsonl")
        code = run_cli([str(m), "--shard", f"{k}/3", "--report", str(reports[-1]),
                        "--progress", "none"])  # fmt: skip
        assert code == 0
    journals = sorted((tmp_path / "cache").rglob("m-*-shard-*-of-3.jsonl")) or sorted(
        Path(os.environ["XDG_CACHE_HOME"]).rglob("m-*-shard-*-of-3.jsonl")
    )
    assert len(journals) == 3  # one run journal per shard
    merged = tmp_path / "all.jsonl"
    assert run_cli(["--merge-reports", *map(str, reports), "--report", str(merged)]) == 0
    keys = [json.loads(x)["key"] for x in merged.read_text().splitlines()]
    assert sorted(keys) == sorted(f"P1/SUB{i}/E{i}" for i in range(6))
    for i in range(6):
        assert len(stored(sandbox, "P1", f"SUB{i}", f"E{i}")) == 2
    assert run_cli(["--merge-reports", str(tmp_path / "m.csv"), "--report", str(merged)]) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_html_report_renders_in_headless_chromium(
    sandbox: Sandbox, sources: Path, tmp_path: Path, env: Callable[[str], None]
) -> None:
    np = pytest.importorskip("numpy")
    image = pytest.importorskip("matplotlib.image")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_text("x")
    m = manifest(tmp_path / "m.csv", [*rows(sources, 4), ("P1", "SX", "EX", str(empty))])
    env(sandbox.url)
    page = tmp_path / "run.html"
    assert run_cli([str(m), "--report", str(page), "--progress", "none"]) == 1
    text = page.read_text()
    assert "<script" not in text and "http" not in text.split("<body>")[1]  # self-contained
    shot = tmp_path / "run.png"
    assert CHROMIUM is not None
    subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1000,800", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = (image.imread(str(shot))[:, :, :3] * 255).round().astype(int)

    def share(rgb: tuple[int, int, int]) -> float:
        return float(np.mean(np.all(np.abs(pixels - np.array(rgb)) <= 12, axis=2)))

    assert share((42, 122, 185)) > 0.0005  # the throughput line
    assert share((202, 222, 238)) > 0.01  # the area under it (the line's colour at 25 %)
    assert share((179, 38, 30)) > 0.00001  # the failed session's status, in red
    assert share((10, 122, 47)) > 0.0001  # the landed ones, in green
