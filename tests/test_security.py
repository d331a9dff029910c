"""Security: secrets never leave the process, TLS is verified, .env permissions are checked, and
the sandbox binds loopback, requires authentication and never writes outside its data folder.

The secret tests search *all* output of a run (stdout, stderr with ``-vv``, ``--json``, the
report, the journal, the process's command line) for the password and for every JSESSIONID the
server handed out.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from xnatio.config import XnatConfig, read_env_file, resolve_config
from xnatio.sandbox import Sandbox, SandboxConfig
from xnatio.synth import write_session
from xnatio.xnat.session import XnatSession

SECRET = "S3cr3t-pa55word-x9"
LOGGED_IN = threading.Event()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sec") / "session"
    write_session(out, series=2, instances=3, rows=16, columns=16, seed=9)
    return out


def tracked_sandbox(
    make_sandbox: Callable[..., Sandbox], **kw: object
) -> tuple[Sandbox, list[str]]:
    """A sandbox whose password is SECRET; the list fills with every session ID it issues."""
    sb = make_sandbox(password=SECRET, **kw)
    issued: list[str] = []
    original = sb.auth.new_session

    def record(user: str) -> object:
        session = original(user)
        issued.append(session.id)
        LOGGED_IN.set()
        return session

    sb.auth.new_session = record  # type: ignore[method-assign,assignment]
    return sb, issued


def assert_clean(text: str, issued: list[str], where: str) -> None:
    assert SECRET not in text, f"password in {where}"
    for sid in issued:
        assert sid not in text, f"JSESSIONID in {where}"


@pytest.mark.parametrize("transport", ["rest", "dicom-store"])
def test_no_secret_in_any_output_of_a_run(
    make_sandbox: Callable[..., Sandbox], source: Path, tmp_path: Path, transport: str
) -> None:
    sb, issued = tracked_sandbox(make_sandbox, dicom_port=0)
    sb.store.set_prearchive_code("P1", 4)
    sb.faults.file_delay = 0.05  # long enough to read the command line while it runs
    report, journal = tmp_path / "r.jsonl", tmp_path / "j.jsonl"
    args = [sys.executable, "-m", "xnatio", "upload-dicom", "P1", "S1", "E1", str(source)]
    args += [
        "--password-stdin",
        "-vv",
        "--json",
        "--report",
        str(report),
        "--journal",
        str(journal),
    ]
    args += ["--num-batches", "3"]
    if transport == "dicom-store":
        args += ["--transport", "dicom-store", "--dicom-port", str(sb.dicom_port), "--wait", "20"]
    env = {**os.environ, "XNAT_SERVER": sb.url, "XNAT_USERNAME": "admin"}
    env.pop("XNAT_PASSWORD", None)
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdin is not None
    LOGGED_IN.clear()
    proc.stdin.write(SECRET + "\n")
    proc.stdin.flush()
    assert LOGGED_IN.wait(60), "the upload never logged in"
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert issued, "the run never logged in"
    assert "xnatio" in cmdline  # it was read from the running upload
    assert_clean(cmdline, issued, "the process's command line")
    assert_clean(out, issued, "stdout (--json)")
    assert_clean(err, issued, "stderr (-vv)")
    assert "DEBUG" in err  # -vv really logged
    assert_clean(report.read_text(), issued, "the report")
    assert_clean(journal.read_text(), issued, "the journal")
    json.loads(out)


def test_no_secret_in_errors_tracebacks_and_reprs(
    make_sandbox: Callable[..., Sandbox], source: Path, tmp_path: Path
) -> None:
    sb, issued = tracked_sandbox(make_sandbox)
    env = {**os.environ, "XNAT_SERVER": sb.url, "XNAT_USERNAME": "admin"}
    # A wrong password that contains the real one, and a traceback forced by XNATIO_DEBUG.
    for extra in ({}, {"XNATIO_DEBUG": "1"}):
        proc = subprocess.run(
            [sys.executable, "-m", "xnatio", "upload-dicom", "P1", "S1", "E1", str(source),
             "-vv", "--json"],
            env={**env, "XNAT_PASSWORD": SECRET + "-wrong", **extra}, capture_output=True,
            text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode in (1, 3)
        assert_clean(proc.stdout + proc.stderr, issued, f"a failed login {extra}")
        if extra:
            assert "Traceback" in proc.stderr
    # An error after login (unknown project), with a traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "xnatio", "upload-dicom", "NOPE", "S1", "E1", str(source), "-vv"],
        env={**env, "XNAT_PASSWORD": SECRET, "XNATIO_DEBUG": "1"}, capture_output=True,
        text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" in proc.stderr  # XNATIO_DEBUG keeps the code
    assert issued
    assert_clean(proc.stdout + proc.stderr, issued, "a traceback after login")

    config = XnatConfig(server=sb.url, username="admin", password=SECRET)
    with XnatSession(config) as xnat:
        xnat.login()
        texts = [
            repr(config),
            str(config),
            repr(xnat),
            repr(xnat.config),
            repr(sb),
            repr(sb.config),
        ]
    for text in texts:
        assert_clean(text, issued, f"repr {text[:40]}")


def test_tls_verification_is_on_by_default(tmp_path: Path) -> None:
    config = resolve_config(
        server="https://xnat.example.org", username="u", password="p", environ={}, cwd=tmp_path
    )
    assert config is not None and config.verify_tls is True
    assert XnatConfig(server="https://x", username="u", password="p").verify_tls is True
    off = resolve_config(
        server="https://xnat.example.org", username="u", password="p",
        environ={"XNAT_VERIFY_TLS": "false"}, cwd=tmp_path,
    )  # fmt: skip
    assert off is not None and off.verify_tls is False  # only when asked


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o640, True), (0o600, False)])
def test_env_file_with_password_readable_by_others_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, warned: bool
) -> None:
    env = tmp_path / ".env"
    env.write_text(f"XNAT_SERVER=http://127.0.0.1:9\nXNAT_USERNAME=u\nXNAT_PASSWORD={SECRET}\n")
    env.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="xnatio"):
        values = read_env_file(env)
    assert values["XNAT_PASSWORD"] == SECRET
    text = caplog.text
    assert ("readable by other users" in text and f"chmod 600 {env}" in text) is warned
    assert SECRET not in text


@pytest.mark.parametrize("quiet", [[], ["-q"]], ids=["default", "quiet"])
def test_env_file_warning_reaches_the_command_line(
    sandbox: Sandbox, source: Path, tmp_path: Path, quiet: list[str]
) -> None:
    """The warning is a security matter, so -q does not hide it."""
    env_file = tmp_path / ".env"
    env_file.write_text(f"XNAT_SERVER={sandbox.url}\nXNAT_USERNAME=admin\nXNAT_PASSWORD=admin\n")
    env_file.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XNAT_")}
    proc = subprocess.run(
        [sys.executable, "-m", "xnatio", "upload-dicom", "P1", "S1", "E1", str(source),
         "--progress", "none", *quiet],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "readable by other users; run: chmod 600" in proc.stderr


def _listening_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            addr, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(addr)
    return found


def test_sandbox_binds_loopback_unless_told(tmp_path: Path) -> None:
    assert SandboxConfig(data_dir=tmp_path).host == "127.0.0.1"
    sb = Sandbox(SandboxConfig(data_dir=tmp_path / "d", port=0, dicom_port=0))
    with sb:
        assert sb.url.startswith("http://127.0.0.1:")
        assert _listening_addresses(sb.port) == {"0100007F"}
        assert sb.dicom_port is not None
        assert _listening_addresses(sb.dicom_port) == {"0100007F"}
    help_text = subprocess.run(
        [sys.executable, "-m", "xnatio", "sandbox", "--help"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert "default: 127.0.0.1" in help_text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/data/projects"),
        ("GET", "/data/projects/P1/subjects/S1/experiments/E1/scans/ALL/files"),
        ("POST", "/data/services/import?PROJECT_ID=P1&SUBJECT_ID=S1&EXPT_LABEL=E1&inbody=true"),
        ("POST", "/data/services/archive?src=/prearchive/projects/P1/x/E1"),
        ("GET", "/data/prearchive/projects"),
        ("PUT", "/sandbox/faults"),
        ("PUT", "/data/projects/P1/prearchive_code/4"),
        ("PUT", "/data/projects/P1/subjects/S1/resources/R/files/a.txt"),
    ],
)
def test_sandbox_always_requires_authentication(sandbox: Sandbox, method: str, path: str) -> None:
    for auth in (None, ("admin", "wrong")):
        r = httpx.request(method, sandbox.url + path, content=b"{}", auth=auth)
        assert r.status_code == 401, (method, path, r.status_code)
        r = httpx.request(
            method, sandbox.url + path, content=b"{}", cookies={"JSESSIONID": "forged" * 4}
        )
        assert r.status_code == 401
    assert sandbox.store.prearchive_rows(None) == []


def _hostile_zip(dcm: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("../../escape-zip.dcm", "/tmp/escape-abs.dcm", "a/../../../escape-mid.dcm",
                     "..\\..\\escape-win.dcm", "C:/escape-drive.dcm", "ok.dcm"):  # fmt: skip
            zf.writestr(name, dcm)
    return buf.getvalue()


def _hostile_tar(dcm: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("evil-link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../.."
        tf.addfile(link)
        hard = tarfile.TarInfo("evil-hard")
        hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
        tf.addfile(hard)
        for name in ("evil-link/escape-through-link.dcm", "../escape-tar.dcm", "ok.dcm"):
            info = tarfile.TarInfo(name)
            info.size = len(dcm)
            tf.addfile(info, io.BytesIO(dcm))
    return buf.getvalue()


def test_sandbox_never_writes_outside_its_data_folder(
    make_sandbox: Callable[..., Sandbox], source: Path, tmp_path: Path
) -> None:
    root = tmp_path / "jail" / "deeper"
    root.mkdir(parents=True)
    sb = make_sandbox(data_dir=root / "data")
    dcm = sorted(source.rglob("*.dcm"))[0].read_bytes()
    before = _tree(tmp_path)
    for i, (ctype, body) in enumerate(
        [("application/zip", _hostile_zip(dcm)), ("application/x-tar", _hostile_tar(dcm))]
    ):
        params = {"PROJECT_ID": "P1", "SUBJECT_ID": "S1", "EXPT_LABEL": f"E{i}", "inbody": "true",
                  "import-handler": "DICOM-zip"}  # fmt: skip
        r = httpx.post(
            f"{sb.url}/data/services/import", params=params, content=body,
            headers={"Content-Type": ctype}, auth=("admin", "admin"),
        )  # fmt: skip
        assert r.status_code < 500, r.text
    for name in ("..%2F..%2Fescape-res.txt", "%2E%2E/%2E%2E/escape-res2.txt"):
        r = httpx.put(
            f"{sb.url}/data/projects/P1/subjects/S1/resources/R/files/{name}",
            content=b"x", auth=("admin", "admin"),
        )  # fmt: skip
        assert r.status_code < 500, r.text
    written = _tree(tmp_path) - before
    outside = {p for p in written if not p.is_relative_to(root / "data")}
    assert not outside, outside
    assert not list(Path("/tmp").glob("escape-*"))


def _tree(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def test_a_running_upload_shows_no_secret_in_the_process_list(
    make_sandbox: Callable[..., Sandbox], source: Path, tmp_path: Path
) -> None:
    """With the password in the environment, nothing in the process list shows it."""
    sb, issued = tracked_sandbox(make_sandbox)
    sb.faults.file_delay = 0.1
    LOGGED_IN.clear()
    env = {**os.environ, "XNAT_SERVER": sb.url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": SECRET}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xnatio", "upload-dicom", "P1", "S1", "E1", str(source), "-q"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert LOGGED_IN.wait(60), "the upload never logged in"
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=30)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        assert proc.poll() is None, "finished before the process list was read"
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert_clean(ps.stdout + cmdline + out + err, issued, "the process list")
