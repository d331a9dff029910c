"""Bad input: one line naming the problem and the fix, the documented exit code, no traceback,
and nothing sent where sending would be wrong. Both transports where the input reaches them.

Exit codes (``xio upload-dicom --help``): 0 all landed, 1 some failed, 2 usage or input error,
3 authentication or connection failure before anything was sent, 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pydicom
import pytest

from tests.cli_run import Run, run_cli
from xnatio.inventory import FolderSource
from xnatio.plan import plan_upload
from xnatio.sandbox import Sandbox
from xnatio.synth import write_session
from xnatio.transport.rest import _make_body

EXIT_INPUT, EXIT_AUTH = 2, 3


@pytest.fixture
def xio(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Run]:
    """Run ``xio ARGS`` in this process (exit code and captured output)."""
    monkeypatch.chdir(tmp_path)
    for key in ("XNAT_SERVER", "XNAT_USERNAME", "XNAT_PASSWORD", "XNAT_VERIFY_TLS"):
        monkeypatch.delenv(key, raising=False)

    def run(*args: str, env: dict[str, str] | None = None, progress: bool = True) -> Run:
        with monkeypatch.context() as m:
            for key, value in (env or {}).items():
                m.setenv(key, value)
            return run_cli(capsys, [*args, "--progress", "none"] if progress else list(args))

    return run


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bad") / "session"
    write_session(out, series=2, instances=3, rows=16, columns=16, seed=3)
    return out


def creds(sb: Sandbox) -> dict[str, str]:
    return {"XNAT_SERVER": sb.url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"}


def nothing_sent(sb: Sandbox) -> None:
    assert sb.store.prearchive_rows(None) == []
    assert sb.store.experiments("P1") == []


TRANSPORTS = [[], ["--transport", "dicom-store"]]


def upload_args(
    sb: Sandbox, source: Path | str, transport: list[str], session: str = "E1"
) -> list[str]:
    args = ["upload-dicom", "P1", "S1", session, str(source), *transport]
    if transport:
        args += ["--dicom-port", str(sb.dicom_port), "--wait", "20"]
    return args


@pytest.fixture
def sb(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    box = make_sandbox(dicom_port=0)
    box.store.set_prearchive_code("P1", 4)
    return box


# -- SOURCE problems ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: _mkdir(p / "empty"), "is empty"),
        (lambda p: _files(p / "txt", {"a.txt": b"hello", "b.json": b"{}"}), "no DICOM files"),
        (lambda p: _dicomdir_only(p / "dd"), "no DICOM files"),
        (lambda p: _truncated_only(p / "tr"), "no DICOM files"),
    ],
    ids=["missing", "empty", "no-dicom", "dicomdir-only", "truncated-only"],
)
def test_sources_with_nothing_to_send(
    xio: Callable[..., Run], sb: Sandbox, tmp_path: Path, transport: list[str],
    make: Callable[[Path], Path], expected: str,
) -> None:  # fmt: skip
    source = make(tmp_path)
    run = xio(*upload_args(sb, source, transport), env=creds(sb))
    assert run.code == EXIT_INPUT
    line = run.one_error_line()
    assert expected in line, line
    assert "SOURCE" in line or "folder" in line, line
    nothing_sent(sb)


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _files(p: Path, files: dict[str, bytes]) -> Path:
    p.mkdir()
    for name, data in files.items():
        (p / name).write_bytes(data)
    return p


def _dicomdir_only(p: Path) -> Path:
    write_session(p, series=1, instances=1, rows=8, columns=8, sidecars=True)
    for f in p.rglob("*"):
        if f.is_file() and f.name != "DICOMDIR":
            f.unlink()
    return p


def _truncated_only(p: Path) -> Path:
    write_session(p, series=1, instances=1, rows=8, columns=8)
    (f,) = p.rglob("*.dcm")
    f.write_bytes(f.read_bytes()[:200])
    return p


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
def test_mixed_non_dicom_files_are_skipped_and_listed(
    xio: Callable[..., Run], sb: Sandbox, tmp_path: Path, transport: list[str]
) -> None:
    source = tmp_path / "mixed"
    write_session(source, series=2, instances=3, rows=16, columns=16, sidecars=True, broken=True)
    loop = source / "series_001" / "loop"
    loop.symlink_to("..")  # a folder symlink loop
    (source / "self").symlink_to("self")  # a link to itself
    dry = xio(*upload_args(sb, source, transport), "--dry-run", "--json", env=creds(sb))
    assert dry.code == 0, dry.err
    skipped = {s["path"]: s["reason"] for s in json.loads(dry.out)["skipped"]}
    assert skipped["DICOMDIR"] == "DICOMDIR"
    assert skipped["broken/truncated.dcm"] == "truncated or corrupt DICOM header"
    assert skipped["broken/not_dicom.dcm"] == "not DICOM"
    assert skipped["series_001/loop"] == "symlink loop"
    assert "self" in skipped
    assert json.loads(dry.out)["files"] == 6
    nothing_sent(sb)

    run = xio(*upload_args(sb, source, transport), "--json", env=creds(sb))
    assert run.code == 0, run.err
    summary = json.loads(run.out)
    assert summary["success"] is True
    if not transport:
        assert {s["path"] for s in summary["skipped"]} == set(skipped)
    per_scan = sb.store.scan_file_uids("P1", "S1", "E1")
    assert sum(len(v) for v in per_scan.values()) == 6

    human = xio(*upload_args(sb, source, transport, session="E2"), "--dry-run", env=creds(sb))
    assert "files skipped" in human.out and "broken/truncated.dcm" in human.out


def test_unreadable_file_is_listed(
    xio: Callable[..., Run], sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --skip-unreadable, a file without read permission is skipped with its reason; the
    rest is sent (without it: tests/test_strict_source.py)."""
    source = tmp_path / "perm"
    write_session(source, series=1, instances=3, rows=8, columns=8)
    victim = sorted(source.rglob("*.dcm"))[0]
    victim.chmod(0o000)
    if os.geteuid() == 0:  # root reads anything: refuse this one file as the kernel would
        real_open = FolderSource.open

        def guarded(self: FolderSource, path: str) -> Any:
            if self.root / path == victim:
                raise PermissionError(13, "Permission denied", str(victim))
            return real_open(self, path)

        monkeypatch.setattr(FolderSource, "open", guarded)
    run = xio(*upload_args(sb, source, []), "--json", "--skip-unreadable", env=creds(sb))
    assert run.code == 0, run.err
    summary = json.loads(run.out)
    rel = str(victim.relative_to(source))
    assert {"path": rel, "reason": "unreadable: permission denied"} in summary["skipped"]
    assert summary["total_files"] == 2 and summary["verification"]["matched"] == 2


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
def test_several_studies_are_refused(
    xio: Callable[..., Run], sb: Sandbox, tmp_path: Path, transport: list[str]
) -> None:
    source = tmp_path / "two"
    write_session(source / "a", series=1, instances=2, rows=8, columns=8, seed=1)
    write_session(source / "b", series=1, instances=2, rows=8, columns=8, seed=2)
    run = xio(*upload_args(sb, source, transport), env=creds(sb))
    assert run.code == EXIT_INPUT
    line = run.one_error_line()
    assert "2 studies" in line and "--allow-multiple-studies" in line
    nothing_sent(sb)


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
def test_duplicate_uids_with_different_content_are_refused(
    xio: Callable[..., Run], sb: Sandbox, tmp_path: Path, good: Path, transport: list[str]
) -> None:
    source = tmp_path / "dup"
    shutil.copytree(good, source)
    original, other = sorted(source.rglob("*.dcm"))[:2]
    ds = pydicom.dcmread(original)
    ds.SeriesDescription = "edited copy"
    ds.save_as(source / "copy.dcm")
    same = source / "same.dcm"
    shutil.copy(other, same)
    run = xio(*upload_args(sb, source, transport), env=creds(sb))
    assert run.code == EXIT_INPUT
    line = run.one_error_line()
    assert "copy.dcm" in line and str(original.relative_to(source)) in line
    assert "share SOP Instance UID" in line and "Remove the wrong file" in line
    nothing_sent(sb)

    (source / "copy.dcm").unlink()  # identical duplicates are dropped and listed
    dry = xio(*upload_args(sb, source, transport), "--dry-run", "--json", env=creds(sb))
    assert dry.code == 0
    reasons = {s["path"]: s["reason"] for s in json.loads(dry.out)["skipped"]}
    assert reasons, dry.out
    dupes = {p: r for p, r in reasons.items() if r.startswith("duplicate of ")}
    assert len(dupes) == 1 and "same.dcm" in str(dupes), reasons


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
@pytest.mark.parametrize(
    ("project", "subject", "session", "bad"),
    [
        ("P1", "S1", "bad label", "' '"),
        ("P1", "S 1", "E1", "' '"),
        ("P1", "S1", "E1.v2", "'.'"),
        ("P1", "Sübject", "E1", "'ü'"),
        ("P1", "S1", "E/1", "'/'"),
    ],
)
def test_labels_xnat_will_not_accept(
    xio: Callable[..., Run], sb: Sandbox, good: Path, transport: list[str],
    project: str, subject: str, session: str, bad: str,
) -> None:  # fmt: skip
    args = ["upload-dicom", project, subject, session, str(good), *transport]
    if transport:
        args += ["--dicom-port", str(sb.dicom_port)]
    run = xio(*args, env=creds(sb))
    assert run.code == EXIT_INPUT
    line = run.one_error_line()
    assert bad in line and "use only letters" in line
    nothing_sent(sb)


@pytest.mark.parametrize("journal", [[], ["--no-journal"]], ids=["journal", "no-journal"])
@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
@pytest.mark.parametrize(
    ("kind", "labels"),
    [
        ("session", ("P1", "S1", "E" * 250)),
        ("subject", ("P1", "S" * 256, "E1")),
        ("project", ("P" * 256, "S1", "E1")),
    ],
)
def test_labels_longer_than_xnat_stores(
    xio: Callable[..., Run], sb: Sandbox, good: Path, transport: list[str], journal: list[str],
    kind: str, labels: tuple[str, str, str],
) -> None:  # fmt: skip
    """XNAT stores labels of at most 255 characters, a session label at most 249 (§13)."""
    args = ["upload-dicom", *labels, str(good), *transport, *journal]
    if transport:
        args += ["--dicom-port", str(sb.dicom_port)]
    run = xio(*args, env=creds(sb))
    assert run.code == EXIT_INPUT, run.err
    line = run.one_error_line()
    assert f"{kind} label " in line and "characters long; XNAT can store at most" in line, line
    assert len(line) < 200  # the label is not repeated in full
    nothing_sent(sb)
    assert not list(Path(os.environ["XDG_CACHE_HOME"]).rglob("*.jsonl"))  # no journal either


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
def test_long_labels_within_xnat_limits_upload(
    xio: Callable[..., Run], sb: Sandbox, good: Path, transport: list[str]
) -> None:
    """A 240-character session label is valid in XNAT; its journal name is bounded (hashed)."""
    session = "E" * 240
    run = xio(*upload_args(sb, good, transport, session=session), "--json", env=creds(sb))
    assert run.code == 0, run.err
    journal = Path(json.loads(run.out)["journal"])
    assert journal.is_file() and len(journal.name) <= 100
    per_scan = sb.store.scan_file_uids("P1", "S1", session)
    assert sum(len(v) for v in per_scan.values()) == 6


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_awkward_file_names_upload_exactly_once(
    xio: Callable[..., Run], sb: Sandbox, tmp_path: Path, good: Path, fmt: str
) -> None:
    source = tmp_path / "names"
    names = [
        "ünïcødé – 画像.dcm",
        "name with  spaces .dcm",
        "x" * 200 + ".dcm",
        "deep/" + "/".join(["d" * 60] * 5) + "/file.dcm",
    ]
    files = sorted(good.rglob("*.dcm"))[: len(names)]
    for name, f in zip(names, files, strict=True):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, source / name)
    run = xio(*upload_args(sb, source, []), "--archive-format", fmt, "--json", env=creds(sb))
    assert run.code == 0, run.err
    per_scan = sb.store.scan_file_uids("P1", "S1", "E1")
    counts = Counter(uid for v in per_scan.values() for uid in v)
    assert len(counts) == len(names) and set(counts.values()) == {1}

    # The same names inside an archive SOURCE (zip with UTF-8 names, PAX tar).
    zpath = tmp_path / "names.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for name in names:
            zf.write(source / name, name)
    tpath = tmp_path / "names.tar"
    with tarfile.open(tpath, "w", format=tarfile.PAX_FORMAT) as tf:
        for name in names:
            tf.add(source / name, arcname=name)
    for i, archive in enumerate([zpath, tpath]):
        dry = xio(*upload_args(sb, archive, [], session=f"A{i}"), "--dry-run", "--json")
        assert dry.code == 0, dry.err
        assert json.loads(dry.out)["files"] == len(names)


def test_huge_files_use_pax_sizes_and_zip64(tmp_path: Path, good: Path) -> None:
    """A file over 8 GiB and a session over 4 GiB, as sparse files (no disk filled)."""
    source = tmp_path / "huge"
    source.mkdir()
    files = sorted(good.rglob("*.dcm"))
    sizes = {"big.dcm": (8 << 30) + 12345, "a.dcm": (1 << 30) + 7, "b.dcm": 3 << 29}
    for (name, size), f in zip(sizes.items(), files, strict=False):
        shutil.copy(f, source / name)
        with open(source / name, "r+b") as fh:
            fh.truncate(size)  # sparse: the DICOM header, then holes
    plan = plan_upload(source, project="P1", subject="S1", session="E1", num_batches=1)
    try:
        assert plan.inventory.total_bytes == sum(sizes.values())
        (batch,) = plan.batches
        _, tar_length, tar_body = _make_body(plan.inventory, batch, "tar", "DICOM-zip", _ignore)
        assert tar_length > sum(sizes.values())
        head = next(iter(tar_body))  # type: ignore[call-overload]
        assert f"size={sizes['big.dcm']}\n".encode() in head  # PAX size record past 8 GiB
        _, zip_length, _ = _make_body(plan.inventory, batch, "zip", "DICOM-zip", _ignore)
        assert zip_length > 1 << 32
    finally:
        plan.inventory.source.close()


def _ignore(n: int) -> None:
    return None


# -- option values ------------------------------------------------------------------------------

# Every option that takes seconds, on every command: Python's float() accepts these, and timers,
# socket timeouts and sleeps then fail with ValueError or OverflowError (for C-STORE's --wait,
# once every instance had been stored).
_ODD_SECONDS = ["nan", "inf", "-inf", "1e400", "-1"]
_SECONDS_OPTIONS = [
    ("upload-dicom", [], "--timeout"),
    ("upload-dicom", [], "--wait"),
    ("upload-dicom", ["--transport", "dicom-store"], "--timeout"),
    ("upload-dicom", ["--transport", "dicom-store"], "--wait"),
    ("upload-resource", [], "--timeout"),
    ("verify", [], "--wait"),
]


def _command_args(command: str, sb: Sandbox, good: Path, extra: list[str]) -> list[str]:
    if command == "upload-dicom":
        return upload_args(sb, good, extra)
    if command == "upload-resource":
        return ["upload-resource", "P1", "S1", "E1", "NOTES", str(good)]
    assert command == "verify"
    return ["verify", "P1", "S1", "E1", str(good)]


@pytest.mark.parametrize("value", _ODD_SECONDS)
@pytest.mark.parametrize(
    ("command", "extra", "option"),
    _SECONDS_OPTIONS,
    ids=[f"{c}{'-' + e[-1] if e else ''}{o}" for c, e, o in _SECONDS_OPTIONS],
)
def test_seconds_must_be_finite(
    xio: Callable[..., Run], sb: Sandbox, good: Path, command: str, extra: list[str],
    option: str, value: str,
) -> None:  # fmt: skip
    args = [*_command_args(command, sb, good, extra), f"{option}={value}"]
    run = xio(*args, env=creds(sb), progress=command in ("upload-dicom", "verify"))
    assert run.code == EXIT_INPUT, run.err
    line = run.one_error_line()
    assert f"{option} must be a finite number of seconds" in line, line
    nothing_sent(sb)


@pytest.mark.parametrize("value", ["nan", "inf"])
@pytest.mark.parametrize("option", ["--ticker-interval", "--idle-interval"])
def test_sandbox_intervals_must_be_finite(option: str, value: str) -> None:
    # A subprocess: a sandbox that accepted the value would serve until stopped.
    proc = subprocess.run(
        [sys.executable, "-m", "xnatio", "sandbox", "--port", "0", "--dicom-port", "-1",
         f"{option}={value}"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == EXIT_INPUT, proc.stderr
    line = Run(proc.returncode, proc.stdout, proc.stderr).one_error_line()
    assert line.startswith(f"xio: error: {option} must be a finite number of seconds"), line


def test_usage_errors_are_one_line(xio: Callable[..., Run], sb: Sandbox, good: Path) -> None:
    for args, expected in [
        (["upload-dicom", "P1", "S1"], "Missing argument"),
        ([*upload_args(sb, good, []), "--num-batches", "0"], "--num-batches"),
        ([*upload_args(sb, good, []), "--no-such-option"], "--no-such-option"),
        (["no-such-command"], "No such command"),
    ]:
        run = xio(*args, env=creds(sb), progress=False)
        assert run.code == EXIT_INPUT, run.err
        line = run.one_error_line()
        assert expected in line and "--help" in line, line
    nothing_sent(sb)


def test_debug_shows_the_traceback_and_keeps_the_exit_code(
    xio: Callable[..., Run], sb: Sandbox, good: Path
) -> None:
    env = {**creds(sb), "XNAT_PASSWORD": "wrong-password", "XNATIO_DEBUG": "1"}
    run = xio(*upload_args(sb, good, []), env=env)
    assert run.code == EXIT_AUTH, run.err
    assert "Traceback" in run.err and "AuthenticationError" in run.err
    assert run.err.rstrip().splitlines()[-1].startswith("xio: error: login to ")
    bad = xio(*upload_args(sb, good, []), "--report", "r.txt", env={"XNATIO_DEBUG": "1"})
    assert bad.code == EXIT_INPUT and "Traceback" in bad.err, bad.err


# -- more odd input: each was a crash, a hang or a wrong target before ------------------------


def test_fifo_source_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "xnatio", "upload-dicom", "P1", "S1", "E1", str(fifo), "--dry-run"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == EXIT_INPUT, proc.stderr
    line = Run(proc.returncode, proc.stdout, proc.stderr).one_error_line()
    assert "not a folder or a regular file" in line, line


@pytest.mark.parametrize(
    "args",
    [
        ["upload-dicom", "P1", "S1", "E1", ""],
        ["upload-dicom", "P1", "S1", "E1", "", "--transport", "dicom-store"],
        ["verify", "P1", "S1", "E1", " "],
        ["upload-resource", "P1", "S1", "E1", "NOTES", ""],
    ],
    ids=["rest", "dicom-store", "verify", "upload-resource"],
)
def test_an_empty_path_is_not_the_current_folder(
    xio: Callable[..., Run], sb: Sandbox, good: Path, monkeypatch: pytest.MonkeyPatch,
    args: list[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(good)  # the current folder holds a session that must not be sent
    run = xio(*args, env=creds(sb), progress=False)
    assert run.code == EXIT_INPUT, run.err
    assert "is empty; give a folder or a file" in run.one_error_line()
    nothing_sent(sb)


def test_journal_option_never_overwrites_another_file(
    xio: Callable[..., Run], sb: Sandbox, good: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    run = xio(*upload_args(sb, good, []), "--journal", str(notes), env=creds(sb))
    assert run.code == EXIT_INPUT, run.err
    assert "is not an xnatio journal" in run.one_error_line()
    assert notes.read_text() == "my notes\n"
    nothing_sent(sb)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    run = xio(*upload_args(sb, good, []), "--journal", str(fifo), env=creds(sb))
    assert run.code == EXIT_INPUT and "not a regular file" in run.one_error_line()


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999"])
def test_server_urls_that_do_not_parse(
    xio: Callable[..., Run], sb: Sandbox, good: Path, transport: list[str], url: str
) -> None:
    run = xio(*upload_args(sb, good, transport), "--server", url, env=creds(sb))
    assert run.code == EXIT_INPUT, run.err
    assert "is not valid; give it as https://host" in run.one_error_line()


@pytest.mark.parametrize("bundle", ["folder", "missing", "not-pem"])
def test_a_ca_bundle_that_cannot_be_loaded(
    xio: Callable[..., Run], good: Path, tmp_path: Path, bundle: str
) -> None:
    path = {"folder": tmp_path, "missing": tmp_path / "nope.pem", "not-pem": good / "x"}[bundle]
    if bundle == "not-pem":
        path.write_text("not a certificate")
    env = {"XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin", "XNAT_VERIFY_TLS": str(path)}
    run = xio("upload-dicom", "P1", "S1", "E1", str(good), "--server", "https://127.0.0.1:1",
              env=env)  # fmt: skip
    assert run.code == EXIT_INPUT, run.err
    assert "cannot use the CA bundle" in run.one_error_line()
    if bundle == "not-pem":
        path.unlink()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["..", "notes"], "resource label '..' is not valid"),
        (["a/b", "notes"], "resource label 'a/b' is not valid"),
        (["n\udcff", "notes"], "resource label 'n\\udcff' is not valid"),
        (["NOTES", "notes", "--scan", ".."], "scan ID '..' is not valid"),
        (["NOTES", "notes", "--timeout", "inf"], "--timeout must be a finite number"),
    ],
)
def test_resource_targets_that_are_not_one_path_segment(
    xio: Callable[..., Run], sb: Sandbox, good: Path, tmp_path: Path, extra: list[str],
    expected: str,
) -> None:  # fmt: skip
    (tmp_path / "notes").write_text("hello")
    run = xio("upload-resource", "P1", "S1", "E1", *extra, env=creds(sb), progress=False)
    assert run.code == EXIT_INPUT, run.err
    assert expected in run.one_error_line()


@pytest.mark.parametrize("session", ["E/../E1", "E 1", "E" * 250])
def test_verify_checks_labels(
    xio: Callable[..., Run], sb: Sandbox, good: Path, session: str
) -> None:
    run = xio("verify", "P1", "S1", session, str(good), env=creds(sb))
    assert run.code == EXIT_INPUT, run.err
    assert "session label" in run.one_error_line()


def test_synth_and_demo_targets_that_cannot_be_written(
    xio: Callable[..., Run], tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for args, expected in [
        (["synth", str(a_file / "out"), "--series", "1", "--instances", "1"], "cannot write"),
        (["synth", "/proc/xnatio-test", "--series", "1", "--instances", "1"], "cannot write"),
        (["demo", "--data", str(a_file)], "is a file"),
    ]:
        run = xio(*args, progress=False)
        assert run.code == EXIT_INPUT, run.err
        assert expected in run.one_error_line()


@pytest.mark.parametrize("where", ["environment", "stdin", ".env", "username"])
def test_credentials_that_are_not_utf8(sb: Sandbox, good: Path, tmp_path: Path, where: str) -> None:
    """Bytes that are not UTF-8 in a credential: one line naming it, never the value."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XNAT_")}
    env |= {"XNAT_SERVER": sb.url, "XNAT_USERNAME": "admin"}
    secret = "adm\udcffin"  # the byte 0xff, as Python reads it from the environment
    stdin = b""
    args = ["upload-dicom", "P1", "S1", "E1", str(good), "--progress", "none"]
    if where == "environment":
        env["XNAT_PASSWORD"] = secret
    elif where == "username":
        env |= {"XNAT_USERNAME": "ad\udcffmin", "XNAT_PASSWORD": "admin"}
    elif where == "stdin":
        stdin, args = b"adm\xffin\n", [*args, "--password-stdin"]
    else:
        (tmp_path / ".env").write_bytes(b"XNAT_PASSWORD=adm\xffin\n")
        (tmp_path / ".env").chmod(0o600)
    proc = subprocess.run(
        [sys.executable, "-m", "xnatio", *args], input=stdin, capture_output=True, env=env,
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    err = proc.stderr.decode("utf-8", "backslashreplace")
    assert proc.returncode == EXIT_INPUT, err
    line = Run(proc.returncode, "", err).one_error_line()
    assert "not valid UTF-8 text" in line or "not UTF-8 text" in line, line
    assert "adm" not in line
    nothing_sent(sb)


# -- archive SOURCE problems --------------------------------------------------------------------


def _archives(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    dcm = sorted(good.rglob("*.dcm"))[0]
    out: dict[str, tuple[Path, str]] = {}
    corrupt = folder / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 3)
    out["corrupt zip"] = (corrupt, "not a readable zip file")
    bad_gz = folder / "corrupt.tar.gz"
    bad_gz.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)))
    out["corrupt tar.gz"] = (bad_gz, "corrupt.tar.gz")
    trav = folder / "trav.zip"
    with zipfile.ZipFile(trav, "w") as zf:
        zf.write(dcm, "ok.dcm")
        zf.write(dcm, "../../evil.dcm")
    out["zip path traversal"] = (trav, "path traversal")
    absolute = folder / "abs.tar"
    with tarfile.open(absolute, "w") as tf:
        info = tf.gettarinfo(dcm, arcname="ok.dcm")
        info.name = "/etc/evil.dcm"
        with open(dcm, "rb") as fh:
            tf.addfile(info, fh)
    out["tar absolute path"] = (absolute, "absolute member path")
    link = folder / "link.tar"
    with tarfile.open(link, "w") as tf:
        tf.add(dcm, arcname="a.dcm")
        sym = tarfile.TarInfo("b.dcm")
        sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(sym)
    out["tar symlink"] = (link, "link member")
    hard = folder / "hard.tar"
    with tarfile.open(hard, "w") as tf:
        tf.add(dcm, arcname="a.dcm")
        lnk = tarfile.TarInfo("c.dcm")
        lnk.type, lnk.linkname = tarfile.LNKTYPE, "../../etc/shadow"
        tf.addfile(lnk)
    out["tar hard link"] = (hard, "refusing archive")
    bomb = folder / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.dcm", bytes(80 << 20))
    out["zip bomb"] = (bomb, "decompression bomb")
    tbomb = folder / "bomb.tar.gz"
    with tarfile.open(tbomb, "w:gz") as tf:
        info = tarfile.TarInfo("big.dcm")
        info.size = 80 << 20
        tf.addfile(info, _Zeros(info.size))
    out["tar.gz bomb"] = (tbomb, "decompression bomb")
    return out


class _Zeros:
    def __init__(self, n: int) -> None:
        self.left = n

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory, good: Path) -> dict[str, tuple[Path, str]]:
    return _archives(tmp_path_factory.mktemp("archives"), good)


@pytest.mark.parametrize(
    "case",
    ["corrupt zip", "corrupt tar.gz", "zip path traversal", "tar absolute path", "tar symlink",
     "tar hard link", "zip bomb", "tar.gz bomb"],
)  # fmt: skip
@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
def test_corrupt_or_malicious_archives_are_refused(
    xio: Callable[..., Run], sb: Sandbox, archives: dict[str, tuple[Path, str]],
    case: str, transport: list[str], tmp_path: Path,
) -> None:  # fmt: skip
    path, expected = archives[case]
    run = xio(*upload_args(sb, path, transport), env=creds(sb))
    assert run.code == EXIT_INPUT, run.err
    line = run.one_error_line()
    assert expected in line and path.name in line, line
    nothing_sent(sb)
    assert not list(tmp_path.parent.rglob("evil.dcm"))


# -- server problems ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
def test_wrong_server_url(xio: Callable[..., Run], good: Path, transport: list[str]) -> None:
    with socketserver_port() as closed:
        env = {"XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"}
        extra = ["--dicom-port", str(closed)] if transport else []
        run = xio(
            "upload-dicom", "P1", "S1", "E1", str(good), *transport, *extra,
            "--server", f"http://127.0.0.1:{closed}", env=env,
        )  # fmt: skip
        assert run.code == EXIT_AUTH
        line = run.one_error_line()
        assert f"127.0.0.1:{closed}" in line
        assert "refused" in line.lower() and "check the URL" in line
    bad = xio("upload-dicom", "P1", "S1", "E1", str(good), *transport, "--server", "xnat.example")
    assert bad.code == EXIT_INPUT
    assert "https://host" in bad.one_error_line()


class socketserver_port:  # noqa: N801 - used like a function
    """A loopback port with nothing listening (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command line."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key_path), "-out", str(cert_path), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert_path, key_path


class _Refuse(BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        type(self).requests.append(self.path)
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTPS server with a self-signed certificate that answers 401 to everything."""
    cert, key = _self_signed(tmp_path)
    server = HTTPServer(("127.0.0.1", 0), _Refuse)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Refuse.requests = []
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def test_untrusted_tls_certificate_tells_how_to_trust_it(
    xio: Callable[..., Run], good: Path, https_server: tuple[str, Path]
) -> None:
    url, cert = https_server
    env = {"XNAT_SERVER": url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"}
    run = xio("upload-dicom", "P1", "S1", "E1", str(good), env=env)
    assert run.code == EXIT_AUTH
    line = run.one_error_line()
    assert "certificate" in line and "failed verification" in line
    assert "XNAT_VERIFY_TLS=/path/to/ca.pem" in line and "--insecure" in line
    assert _Refuse.requests == []  # the handshake failed: no request was made

    # Following the advice gets past TLS (to the login, which this server refuses).
    trusted = xio(
        "upload-dicom", "P1", "S1", "E1", str(good), env={**env, "XNAT_VERIFY_TLS": str(cert)}
    )
    assert trusted.code == EXIT_AUTH
    assert "wrong username or password" in trusted.one_error_line()
    assert _Refuse.requests == ["/data/JSESSION"]


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
def test_wrong_password_one_attempt_nothing_sent(
    xio: Callable[..., Run], make_sandbox: Callable[..., Sandbox], good: Path,
    transport: list[str],
) -> None:  # fmt: skip
    box = make_sandbox(dicom_port=0, max_failed_logins=2)
    env = {**creds(box), "XNAT_PASSWORD": "wrong-password"}
    run = xio(*upload_args(box, good, transport), env=env)
    assert run.code == EXIT_AUTH
    line = run.one_error_line()
    assert "wrong username or password" in line and "not retrying" in line
    assert "wrong-password" not in run.out + run.err
    assert not box.auth.is_locked("admin")  # a second attempt would have locked it
    nothing_sent(box)
