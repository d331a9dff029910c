"""``xio sandbox`` as a subprocess: first line, password from the environment, clean exit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

FIRST_LINE = re.compile(r"sandbox url=(http://127\.0\.0\.1:\d+) dicom-port=(\d+|none) aet=(\S+)")


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "xnatio", "sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _first_line(proc: subprocess.Popen[str]) -> re.Match[str]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = FIRST_LINE.fullmatch(line.rstrip("\n"))
    assert match, f"unexpected first line {line!r}"
    return match


def _stop(proc: subprocess.Popen[str], sig: int) -> tuple[str, str]:
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return out, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sandbox_subprocess_serves_and_exits_cleanly(sig: int) -> None:
    secret = "subprocess-secret"
    proc = _start(
        "--port", "0", "--dicom-port", "0", "--dicom-aet", "MYAET", "--project", "PA",
        "--project", "PB", "-v", env={"XNATIO_SANDBOX_PASSWORD": secret},
    )  # fmt: skip
    try:
        match = _first_line(proc)
        url, dicom_port, aet = match.groups()
        assert aet == "MYAET"
        assert int(dicom_port) > 0
        r = httpx.get(url + "/data/projects", params={"format": "json"}, auth=("admin", secret))
        assert r.status_code == 200
        assert {row["ID"] for row in r.json()["ResultSet"]["Result"]} == {"PA", "PB"}
        assert httpx.get(url + "/data/auth", auth=("admin", "admin")).status_code == 401
    finally:
        out, err = _stop(proc, sig)
    assert proc.returncode == 0, err
    assert secret not in out + err
    data = re.search(r"data in (\S+) \(temporary\)", err)
    assert data, err
    assert not Path(data.group(1)).exists()  # the temporary data folder is removed


def test_sandbox_keeps_given_data_folder_and_no_scp(tmp_path: Path) -> None:
    proc = _start("--port", "0", "--dicom-port", "-1", "--data", str(tmp_path / "d"))
    try:
        url, dicom_port, aet = _first_line(proc).groups()
        assert (dicom_port, aet) == ("none", "XNAT")
        assert httpx.get(url + "/data/auth", auth=("admin", "admin")).status_code == 200
    finally:
        _stop(proc, signal.SIGTERM)
    assert proc.returncode == 0
    assert (tmp_path / "d").is_dir()
    assert any((tmp_path / "d").iterdir())


def test_sandbox_bad_project_is_a_usage_error() -> None:
    proc = _start("--port", "0", "--dicom-port", "-1", "--project", "bad id")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "Traceback" not in err
    assert out == ""
