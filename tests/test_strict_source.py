"""A damaged or partly unreadable SOURCE stops ``xio upload-dicom`` before anything is sent.

Issue 11, findings 1-3, end to end against the sandbox (REST and its C-STORE receiver):

* a ``.tar.gz`` with 16 bytes overwritten in the middle, a ``.tar`` with a bad checksum in the
  member halfway, a ``.zip`` with a bad CRC halfway: exit 2, one line naming the archive and the
  offset or member, nothing on the server; once the source is fixed, ``--resume`` completes;
* a zip member that goes bad after the inventory checked it fails only its batch, with the
  member named, and ``--resume`` completes after the fix;
* a series folder with mode 000, read by a user without root's right to read everything (a
  real unprivileged child process, :mod:`unprivileged`): exit 2 listing the folder, for the
  upload and for ``xio verify``; ``--skip-unreadable`` sends the rest and counts the folder as
  unreadable, apart from "not DICOM".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import unprivileged
from tests.cli_run import Run, run_cli
from xnatio.plan import plan_upload
from xnatio.sandbox import Sandbox
from xnatio.synth import write_session
from xnatio.upload import upload_dicom_parallel_rest

SERIES, INSTANCES = 4, 100
TOTAL = SERIES * INSTANCES
TRANSPORTS = {"rest": [], "dicom-store": ["--transport", "dicom-store"]}


@pytest.fixture
def xio(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Run]:
    """``xio ARGS`` in this process."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> Run:
        return run_cli(capsys, [*args, "--progress", "none"])

    return run


@pytest.fixture
def sb(make_sandbox: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    box = make_sandbox(dicom_port=0)
    box.store.set_prearchive_code("P1", 4)  # auto-archive, so C-STORE sessions end archived
    monkeypatch.setenv("XNAT_SERVER", box.url)
    monkeypatch.setenv("XNAT_USERNAME", "admin")
    monkeypatch.setenv("XNAT_PASSWORD", "admin")
    return box


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's 400-file session (4 series x 100 images)."""
    out = tmp_path_factory.mktemp("strict") / "session"
    write_session(out, series=SERIES, instances=INSTANCES, rows=32, columns=32, seed=41)
    return out


def _args(sb: Sandbox, source: Path, transport: str, *extra: str) -> list[str]:
    args = ["upload-dicom", "P1", "S1", "E1", str(source), *TRANSPORTS[transport], *extra]
    if transport == "dicom-store":
        args += ["--dicom-port", str(sb.dicom_port), "--wait", "30"]
    return args


def _members(session: Path) -> list[Path]:
    return sorted(session.rglob("*.dcm"))


def _write_tar(session: Path, dest: Path, mode: str) -> Path:
    with tarfile.open(dest, mode) as tf:  # type: ignore[call-overload]
        for path in _members(session):
            tf.add(path, arcname=path.relative_to(session).as_posix())
    return dest


def _write_zip(session: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in _members(session):
            zf.write(path, path.relative_to(session).as_posix())
    return dest


def _nothing_sent(sb: Sandbox) -> None:
    assert sb.store.prearchive_rows(None) == []
    assert sb.store.experiments("P1") == []


def _each_once(sb: Sandbox) -> None:
    stored = [uid for uids in sb.store.scan_file_uids("P1", "S1", "E1").values() for uid in uids]
    assert len(stored) == TOTAL and len(set(stored)) == TOTAL


def _zip_data_offset(archive: Path, info: zipfile.ZipInfo) -> int:
    """Where ``info``'s data starts (after its local header, whose extra field may differ)."""
    with open(archive, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = (
            int.from_bytes(fh.read(2), "little"),
            int.from_bytes(fh.read(2), "little"),
        )
    return info.header_offset + 30 + name_len + extra_len


def _damage_zip_halfway(archive: Path) -> str:
    """Flip a byte in the middle of the compressed data of the member halfway."""
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
    victim = infos[len(infos) // 2]
    at = _zip_data_offset(archive, victim) + victim.compress_size // 2
    with open(archive, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return victim.filename


# -- finding 1: tar and tar.gz ------------------------------------------------------------------


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_tar_gz_with_16_bytes_overwritten_is_refused_before_sending(
    xio: Callable[..., Run], sb: Sandbox, session: Path, tmp_path: Path, transport: str
) -> None:
    archive = _write_tar(session, tmp_path / "session.tar.gz", "w:gz")
    data = bytearray(archive.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = b"\x5a" * 16
    archive.write_bytes(data)
    gz = subprocess.run(["gzip", "-t", str(archive)], capture_output=True, check=False)
    assert gz.returncode != 0  # gzip rejects it too
    run = xio(*_args(sb, archive, transport))
    assert run.code == 2
    line = run.one_error_line()
    assert "session.tar.gz: not a readable tar.gz file: " in line
    assert " at byte " in line or " near byte " in line
    _nothing_sent(sb)


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_tar_with_a_bad_checksum_halfway_is_refused_before_sending(
    xio: Callable[..., Run], sb: Sandbox, session: Path, tmp_path: Path, transport: str
) -> None:
    archive = _write_tar(session, tmp_path / "session.tar", "w")
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
    victim = members[len(members) // 2]
    data = bytearray(archive.read_bytes())
    data[victim.offset + 148 : victim.offset + 156] = b"0000000\x00"
    archive.write_bytes(data)
    gnu = subprocess.run(["tar", "tf", str(archive)], capture_output=True, check=False)
    assert gnu.returncode != 0  # GNU tar rejects it too
    run = xio(*_args(sb, archive, transport))
    assert run.code == 2
    line = run.one_error_line()
    assert "session.tar: not a readable tar file: damaged header (bad checksum) at byte " in line
    assert f"{victim.offset:,}" in line
    _nothing_sent(sb)


# -- finding 3: zip -------------------------------------------------------------------------------


def test_zip_with_a_bad_crc_halfway_is_refused_and_resume_completes_once_fixed(
    xio: Callable[..., Run], sb: Sandbox, session: Path, tmp_path: Path
) -> None:
    archive = _write_zip(session, tmp_path / "session.zip")
    good = archive.read_bytes()
    name = _damage_zip_halfway(archive)
    assert subprocess.run(["unzip", "-tq", str(archive)], capture_output=True).returncode != 0
    run = xio(*_args(sb, archive, "rest"))
    assert run.code == 2
    line = run.one_error_line()
    assert f"session.zip: member {name!r} is damaged (Bad CRC-32" in line
    _nothing_sent(sb)
    resumed = xio(*_args(sb, archive, "rest", "--resume"))  # not fixed yet: the same line
    assert resumed.code == 2 and resumed.one_error_line() == line
    archive.write_bytes(good)  # the user fixes the source
    done = xio(*_args(sb, archive, "rest", "--resume"))
    assert done.code == 0, done.err
    _each_once(sb)


def test_zip_member_that_goes_bad_while_sending_fails_only_its_batch(
    xio: Callable[..., Run], sb: Sandbox, session: Path, tmp_path: Path
) -> None:
    """Checked by the inventory, damaged before its batch is sent: that batch fails with the
    member named (no internal error), the others land, and --resume completes after the fix."""
    archive = _write_zip(session, tmp_path / "session.zip")
    good = archive.read_bytes()
    plan = plan_upload(archive, project="P1", subject="S1", session="E1", num_batches=8)
    name = _damage_zip_halfway(archive)
    result = upload_dicom_parallel_rest(
        server=sb.url,
        username="admin",
        password="admin",
        source_dir=archive,
        project="P1",
        subject="S1",
        session="E1",
        plan=plan,
        num_batches=8,
        upload_workers=4,
        compress="none",
    )
    assert not result.success
    failed = [b for b in result.batches if not b.success]
    assert len(failed) == 1
    assert f"member {name!r} is damaged" in (failed[0].error or "")
    assert result.files_sent == TOTAL - failed[0].files
    archive.write_bytes(good)
    done = xio(*_args(sb, archive, "rest", "--resume"))
    assert done.code == 0, done.err
    _each_once(sb)


# -- finding 2: a folder the user cannot read -----------------------------------------------------


def _as_nobody(sb: Sandbox, shared: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "XNAT_SERVER": sb.url,
        "XNAT_USERNAME": "admin",
        "XNAT_PASSWORD": "admin",
        "XDG_CACHE_HOME": str(shared / "cache"),
        "XDG_CONFIG_HOME": str(shared / "config"),
        "HOME": str(shared),
    }
    return subprocess.run(
        unprivileged.xio_command(*args, "--progress", "none"),
        env=env,
        cwd=shared,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_unreadable_series_folder_is_an_error_unless_skipped(
    sb: Sandbox, session: Path, transport: str
) -> None:
    with unprivileged.shared_folder() as shared:
        source = shared / "session"
        shutil.copytree(session, source)
        for path in [source, *source.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (source / "series_003").chmod(0)

        upload = _as_nobody(sb, shared, *_args(sb, source, transport))
        assert upload.returncode == 2, upload.stdout + upload.stderr
        assert upload.stderr.startswith("xio: error: cannot read 1 file or folder in SOURCE")
        assert "series_003/ (permission denied)" in upload.stderr
        assert len(upload.stderr.strip().splitlines()) == 1
        _nothing_sent(sb)

        verify = _as_nobody(sb, shared, "verify", "P1", "S1", "E1", str(source))
        assert verify.returncode == 2, verify.stdout + verify.stderr
        assert "series_003/ (permission denied)" in verify.stderr

        skipped = _as_nobody(sb, shared, *_args(sb, source, transport, "--skip-unreadable"))
        assert skipped.returncode == 0, skipped.stdout + skipped.stderr
        assert "1 files skipped: 1 unreadable, 0 not DICOM or not wanted" in skipped.stdout
        stored = sb.store.scan_file_uids("P1", "S1", "E1")
        assert sum(len(v) for v in stored.values()) == TOTAL - INSTANCES

        verified = _as_nobody(
            sb, shared, "verify", "P1", "S1", "E1", str(source), "--skip-unreadable"
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
