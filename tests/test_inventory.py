"""Inventory: sources (folder, zip, tar, tar.gz), skip reasons, header reading, bad input."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests import unprivileged
from xnatio.errors import InputError
from xnatio.inventory import (
    DamagedMemberError,
    DicomFile,
    SkippedFile,
    build_inventory,
    describe_skipped,
    open_source,
    read_header,
)
from xnatio.inventory.tar import TarGzSource
from xnatio.synth import SYNTAXES, write_session

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two series x five images, tiny pixels."""
    out = tmp_path_factory.mktemp("session")
    write_session(out, series=2, instances=5, rows=8, columns=8, seed=11)
    return out


def _tar(folder: Path, dest: Path, mode: str) -> Path:
    with tarfile.open(dest, "w:gz" if mode == "w:gz" else "w:") as tf:
        for path in sorted(folder.rglob("*")):
            tf.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return dest


def _zip(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return dest


# ---------------------------------------------------------------------------------------------
# Header reading


@pytest.mark.parametrize("syntax", [*SYNTAXES, "mixed"])
def test_header_values_match_pydicom_for_every_syntax(tmp_path: Path, syntax: str) -> None:
    write_session(tmp_path, series=2, instances=2, rows=4, columns=4, transfer_syntax=syntax)
    with build_inventory(tmp_path) as inv:
        assert len(inv.files) == 4
        for f in inv.files:
            ds = pydicom.dcmread(tmp_path / f.path, stop_before_pixels=True)
            assert f.sop_instance_uid == ds.SOPInstanceUID
            assert f.sop_class_uid == ds.SOPClassUID
            assert f.study_instance_uid == ds.StudyInstanceUID
            assert f.series_instance_uid == ds.SeriesInstanceUID
            assert f.series_number == str(ds.SeriesNumber)
            assert f.instance_number == str(ds.InstanceNumber)
            assert f.modality == ds.Modality
            assert f.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
            assert f.size == (tmp_path / f.path).stat().st_size


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small_bigendian.dcm",
        "image_dfl.dcm",
        "SC_rgb_jpeg.dcm",  # says explicit VR in the meta, is implicit VR inside
        "rtdose.dcm",
        "waveform_ecg.dcm",
        "JPEG2000-embedded-sequence-delimiter.dcm",
    ],
)
@pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")  # pydicom, on SC_rgb_jpeg
def test_reader_agrees_with_pydicom_on_third_party_files(name: str) -> None:
    path = PYDICOM_FILES / name
    with open(path, "rb") as fh:
        values = read_header(fh)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert isinstance(values, dict)
    assert values["sop_instance"] == ds.SOPInstanceUID
    assert values["study"] == ds.StudyInstanceUID
    assert values["series"] == ds.SeriesInstanceUID


def test_file_without_preamble_is_kept(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.SeriesNumber = 2
    ds.InstanceNumber = 3
    ds.save_as(tmp_path / "raw.dcm", implicit_vr=True, little_endian=True)
    assert (tmp_path / "raw.dcm").read_bytes()[128:132] != b"DICM"
    with build_inventory(tmp_path) as inv:
        (f,) = inv.files
    assert (f.sop_instance_uid, f.series_number, f.instance_number) == ("1.2.3.4.5", "2", "3")
    assert f.transfer_syntax_uid == ""


def test_dicom_without_sop_instance_uid_is_skipped(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.StudyInstanceUID = "1.2.3"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.preamble = b"\x00" * 128
    ds.save_as(tmp_path / "x.dcm", implicit_vr=False)
    assert (tmp_path / "x.dcm").read_bytes()[128:132] == b"DICM"
    write_session(tmp_path / "ok", series=1, instances=1, rows=2, columns=2)
    with build_inventory(tmp_path) as inv:
        assert inv.skipped[0].path == "x.dcm"
        assert "without SOP Instance UID" in inv.skipped[0].reason


def test_dicomdir_files_from_pydicom_are_skipped() -> None:
    for path in (PYDICOM_FILES / "dicomdirtests").glob("DICOMDIR*"):
        with open(path, "rb") as fh:
            assert read_header(fh) == "DICOMDIR", path


def test_big_private_sequence_before_identifiers_is_skipped_over(tmp_path: Path) -> None:
    # Undefined-length sequences with nested undefined-length items, before (0020,000D).
    inner = Dataset()
    inner.add_new(0x00091010, "OB", b"x" * 5000)
    item = Dataset()
    item.add_new(0x00091011, "SQ", pydicom.Sequence([inner, inner]))
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    ds.add_new(0x00090010, "LO", "PRIVATE")
    ds.add_new(0x00091001, "SQ", pydicom.Sequence([item] * 20))
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.InstanceNumber = 7
    for seq in (ds[0x00091001].value, item[0x00091011].value):
        seq.is_undefined_length = True
    for it in (*ds[0x00091001].value, *item[0x00091011].value):
        it.is_undefined_length_sequence_item = True
    for implicit in (True, False):
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian if implicit else pydicom.uid.ExplicitVRLittleEndian
        )
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True, implicit_vr=implicit)
        assert len(buf.getvalue()) > 100_000
        buf.seek(0)
        values = read_header(buf)
        assert isinstance(values, dict)
        assert values["study"] == "1.2.3"
        assert values["instance_number"] == "7"


# ---------------------------------------------------------------------------------------------
# Folder walking and skip reasons


def test_every_skip_reason_in_a_folder(tmp_path: Path, session: Path) -> None:
    root = tmp_path / "src"
    shutil.copytree(session, root)
    (root / ".hidden.dcm").write_bytes(b"x")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._IM00001.dcm").write_bytes(b"x")
    (root / "desktop.ini").write_text("[x]\n")
    (root / "notes.txt").write_text("hello\n")
    (root / "empty.dcm").write_bytes(b"")
    (root / "loop").symlink_to(".")
    (root / "self").symlink_to("self")
    (root / "dangling.dcm").symlink_to("nowhere.dcm")
    (root / "linked.dcm").symlink_to(root / "series_001" / "IM00001.dcm")
    os.mkfifo(root / "pipe")
    good = sum(1 for _ in session.rglob("*.dcm"))
    with build_inventory(root) as inv:
        reasons = {s.path: s.reason for s in inv.skipped}
        paths = {f.path for f in inv.files}
    assert reasons == {
        ".git/": "hidden folder",
        ".hidden.dcm": "hidden file",
        "__MACOSX/": "OS file",
        "dangling.dcm": "broken symlink",
        "desktop.ini": "OS file",
        "empty.dcm": "not DICOM",
        "loop": "symlink loop",
        "notes.txt": "not DICOM",
        "pipe": "not a regular file",
        "self": "symlink loop",
    }
    # The symlinked file is followed and counted like any other file.
    assert "linked.dcm" in paths
    assert len(paths) == good + 1


_CHILD_SCAN = """
import json, sys
from xnatio.errors import InputError
from xnatio.inventory import build_inventory
try:
    with build_inventory(sys.argv[1], skip_unreadable=sys.argv[2] == "skip") as inv:
        print(json.dumps({"files": len(inv.files),
                          "skipped": {s.path: s.reason for s in inv.skipped}}))
except InputError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def _scan_as_nobody(source: Path, mode: str) -> dict[str, Any]:
    """build_inventory in a child process without root's right to read everything."""
    done = subprocess.run(
        [*unprivileged.prefix(), sys.executable, "-c", _CHILD_SCAN, str(source), mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_unreadable_folder_and_file_are_an_error_unless_skipped(session: Path) -> None:
    with unprivileged.shared_folder() as shared:
        root = shared / "s"
        shutil.copytree(session, root)
        for folder in [root, *root.rglob("*")]:
            folder.chmod(0o755 if folder.is_dir() else 0o644)
        (root / "series_002").chmod(0)
        (root / "series_001" / "IM00002.dcm").chmod(0)
        refused = _scan_as_nobody(root, "strict")
        skipped = _scan_as_nobody(root, "skip")
    error = refused["error"]
    assert "cannot read 2 files or folders" in error and "\n" not in error
    assert "series_002/ (permission denied)" in error
    assert "series_001/IM00002.dcm (permission denied)" in error
    assert "--skip-unreadable" in error
    assert skipped["files"] == 4
    assert skipped["skipped"] == {
        "series_001/IM00002.dcm": "unreadable: permission denied",
        "series_002/": "unreadable: permission denied",
    }


def test_skipped_summary_counts_unreadable_apart() -> None:
    skipped = [
        SkippedFile("a/", "unreadable: permission denied"),
        SkippedFile("b.txt", "not DICOM"),
        SkippedFile("c.dcm", "unreadable: Input/output error"),
    ]
    assert [s.unreadable for s in skipped] == [True, False, True]
    assert describe_skipped(skipped) == "3 files skipped: 2 unreadable, 1 not DICOM or not wanted"


def test_files_are_sorted_numerically_by_series_and_instance(tmp_path: Path) -> None:
    summary = write_session(tmp_path, series=11, instances=12, rows=2, columns=2)
    with build_inventory(tmp_path) as inv:
        order = [(int(f.series_number), int(f.instance_number)) for f in inv.files]
    assert order == [(s, i) for s in range(1, 12) for i in range(1, 13)]
    assert len(order) == summary.file_count


def test_progress_reports_done_and_total(tmp_path: Path) -> None:
    write_session(tmp_path, series=1, instances=300, rows=2, columns=2)
    calls: list[tuple[int, int]] = []
    with build_inventory(tmp_path, workers=3, progress=lambda d, t: calls.append((d, t))):
        pass
    assert calls[-1] == (300, 300)
    assert all(t == 300 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) > 10


def test_dicom_file_has_slots_and_no_dict(session: Path) -> None:
    with build_inventory(session) as inv:
        f = inv.files[0]
    assert isinstance(f, DicomFile)
    assert not hasattr(f, "__dict__")
    # Study and series strings are shared between files, not copied per file.
    assert inv.files[0].study_instance_uid is inv.files[-1].study_instance_uid


# ---------------------------------------------------------------------------------------------
# Bad input


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        build_inventory(tmp_path / "nope")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is empty"):
        build_inventory(tmp_path)


def test_no_dicom_files_says_what_was_skipped(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"n{i}.txt").write_text("x")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    with pytest.raises(InputError) as exc:
        build_inventory(tmp_path)
    message = exc.value.message
    assert "no DICOM files found" in message
    assert "4 files skipped" in message
    assert "3 not DICOM" in message
    assert "\n" not in message


def test_unsupported_file_source(tmp_path: Path) -> None:
    (tmp_path / "a.rar").write_bytes(b"Rar!\x1a\x07\x00" + b"\x00" * 600)
    with pytest.raises(InputError, match=r"not a folder, \.zip"):
        build_inventory(tmp_path / "a.rar")


# ---------------------------------------------------------------------------------------------
# Archive sources


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "tgz"])
def test_archive_sources_match_the_folder(tmp_path: Path, session: Path, kind: str) -> None:
    if kind == "zip":
        archive = _zip(session, tmp_path / "s.zip")
    else:
        archive = _tar(session, tmp_path / f"s.{kind}", "w:" if kind == "tar" else "w:gz")
    with build_inventory(session) as folder_inv:
        expected = [(f.path, f.size, f.sop_instance_uid) for f in folder_inv.files]
    inv = build_inventory(archive, workers=2)
    with inv:
        assert [(f.path, f.size, f.sop_instance_uid) for f in inv.files] == expected
        for f in inv.files:
            with inv.source.open(f.path) as fh:
                assert fh.read() == (session / f.path).read_bytes()
        # Random access: open again and seek around.
        with inv.source.open(inv.files[3].path) as fh:
            fh.seek(128)
            assert fh.read(4) == b"DICM"
    if isinstance(inv.source, TarGzSource):
        assert not inv.source._dir.exists()


def test_archive_members_are_filtered_like_files(tmp_path: Path, session: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(session / "series_001" / "IM00001.dcm", "./x/IM1.dcm")
        zf.writestr("__MACOSX/x/._IM1.dcm", b"junk")
        zf.writestr("x/.DS_Store", b"junk")
        zf.writestr("x/DICOMDIR", b"junk")
        zf.writestr("x/readme.md", b"junk")
        zf.writestr("x/", b"")
    with build_inventory(archive) as inv:
        assert [f.path for f in inv.files] == ["x/IM1.dcm"]
        assert {s.path: s.reason for s in inv.skipped} == {
            "__MACOSX/x/._IM1.dcm": "OS file",
            "x/.DS_Store": "OS file",
            "x/DICOMDIR": "DICOMDIR",
            "x/readme.md": "not DICOM",
        }


@pytest.mark.parametrize(
    "name", ["../evil.dcm", "a/../../evil.dcm", "/etc/evil.dcm", "C:/evil.dcm"]
)
def test_zip_path_traversal_is_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(name, b"x")
    with pytest.raises(InputError, match="refusing archive"):
        build_inventory(archive)


def test_zip_symlink_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("etc-passwd.dcm")
    info.external_attr = (0o120777 << 16) | 0
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InputError, match="link member"):
        build_inventory(archive)


@pytest.mark.parametrize("mode", ["w:", "w:gz"])
@pytest.mark.parametrize("kind", ["symlink", "hardlink", "device", "traversal", "absolute"])
def test_malicious_tar_members_are_refused(tmp_path: Path, mode: str, kind: str) -> None:
    archive = tmp_path / ("evil.tar" if mode == "w:" else "evil.tar.gz")
    info = tarfile.TarInfo("a.dcm")
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
    elif kind == "device":
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    elif kind == "traversal":
        info.name = "../../outside.dcm"
    else:
        info.name = "/tmp/outside.dcm"
    with tarfile.open(archive, "w:gz" if mode == "w:gz" else "w:") as tf:
        tf.addfile(info, io.BytesIO(b"") if info.isfile() else None)
    before = set(Path(tmp_path).parent.iterdir())
    with pytest.raises(InputError, match="refusing archive"):
        build_inventory(archive)
    assert set(Path(tmp_path).parent.iterdir()) == before
    assert not (tmp_path.parent / "outside.dcm").exists()


def test_gzip_bomb_is_refused_without_filling_the_disk(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    size = 80 << 20  # 80 MiB of zeros: gzip ratio about 1000:1
    info = tarfile.TarInfo("zeros.dcm")
    info.size = size

    class Zeros(io.RawIOBase):
        left = size

        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int:  # type: ignore[override]
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

    with tarfile.open(archive, "w:gz", compresslevel=1) as tf:
        tf.addfile(info, Zeros())
    assert archive.stat().st_size < size // 100
    with pytest.raises(InputError, match="decompression bomb"):
        build_inventory(archive)


def test_zip_bomb_is_refused_by_declared_sizes(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.dcm", bytes(70 << 20))
    with pytest.raises(InputError, match="decompression bomb"):
        build_inventory(archive)


def test_extraction_limit_is_configurable(tmp_path: Path, session: Path) -> None:
    archive = _tar(session, tmp_path / "s.tgz", "w:gz")
    with pytest.raises(InputError, match="expands to more than 1,000 bytes"):
        build_inventory(archive, max_extract_bytes=1000)
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("xnatio-src-*/series_001"))


def test_corrupt_archives_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "bad.tgz").write_bytes(gzip.compress(b"not a tar at all" * 100))
    (tmp_path / "bad.tar").write_bytes(b"\x01" * 1024)
    for name in ("bad.zip", "bad.tgz", "bad.tar"):
        with pytest.raises(InputError, match="not a readable"):
            build_inventory(tmp_path / name)


# ---------------------------------------------------------------------------------------------
# Damaged archives: found before anything is sent, one line naming the archive and the place


def _stored_zip(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*.dcm")):
            zf.write(path, path.relative_to(folder).as_posix())
    return dest


def _refused(archive: Path) -> str:
    with pytest.raises(InputError) as info:
        build_inventory(archive).close()  # closed when it does not raise (a failing test)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{archive.name}: ")
    return message


def test_tar_with_a_bad_checksum_halfway_is_refused(tmp_path: Path, session: Path) -> None:
    archive = _tar(session, tmp_path / "s.tar", "w:")
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
    victim = members[len(members) // 2]
    data = bytearray(archive.read_bytes())
    data[victim.offset + 148 : victim.offset + 156] = b"0000000\0"  # the checksum field
    archive.write_bytes(data)
    with tarfile.open(archive) as tf:  # what Python's tarfile alone makes of it: a shorter tar
        assert len(tf.getmembers()) < len(members)
    message = _refused(archive)
    assert f"bad checksum) at byte {victim.offset:,}" in message
    assert f"after member {members[len(members) // 2 - 1].name!r}" in message


@pytest.mark.parametrize("cut", ["at-a-header", "inside-a-header", "inside-data"])
def test_truncated_tar_is_refused(tmp_path: Path, session: Path, cut: str) -> None:
    archive = _tar(session, tmp_path / "s.tar", "w:")
    with tarfile.open(archive) as tf:
        victim = tf.getmembers()[5]
    end = {
        "at-a-header": victim.offset,
        "inside-a-header": victim.offset + 100,
        "inside-data": victim.offset_data + 10,
    }[cut]
    archive.write_bytes(archive.read_bytes()[:end])
    message = _refused(archive)
    assert "not a readable tar file" in message
    assert (
        "ends without its end-of-archive marker" in message
        if cut == "at-a-header"
        else "ends inside a header" in message
        if cut == "inside-a-header"
        else "unexpected end of data" in message
    )


def test_data_after_the_end_of_a_tar_is_refused(tmp_path: Path, session: Path) -> None:
    one = _tar(session / "series_001", tmp_path / "one.tar", "w:")
    two = _tar(session / "series_002", tmp_path / "two.tar", "w:")
    joined = tmp_path / "joined.tar"  # `cat a.tar b.tar`: tar -t lists only the first half
    joined.write_bytes(one.read_bytes() + two.read_bytes())
    assert "data after the end-of-archive marker" in _refused(joined)


def test_tar_gz_with_16_bytes_overwritten_in_the_middle_is_refused(
    tmp_path: Path, session: Path
) -> None:
    archive = _tar(session, tmp_path / "s.tar.gz", "w:gz")
    data = bytearray(archive.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = b"\xa5" * 16
    archive.write_bytes(data)
    assert subprocess.run(["gzip", "-t", str(archive)], capture_output=True).returncode != 0
    assert "not a readable tar.gz file" in _refused(archive)


@pytest.mark.parametrize("damage", ["crc", "length", "truncated"])
def test_tar_gz_with_a_bad_trailer_is_refused(tmp_path: Path, session: Path, damage: str) -> None:
    plain = _tar(session, tmp_path / "s.tar", "w:")
    archive = tmp_path / "s.tar.gz"
    # Zeros after the end-of-archive marker, as GNU tar pads to its record size (here a large
    # one): the listing ends long before the gzip trailer, which must still be read.
    archive.write_bytes(gzip.compress(plain.read_bytes() + bytes(16 << 20)))
    with build_inventory(archive) as inv:
        assert len(inv.files) == 10
    data = bytearray(archive.read_bytes())
    if damage == "crc":
        data[-8] ^= 0xFF  # CRC-32 of the uncompressed data (RFC 1952)
    elif damage == "length":
        data[-4] ^= 0xFF  # its length modulo 2**32
    else:
        data = data[:-20]
    archive.write_bytes(data)
    message = _refused(archive)
    assert "not a readable tar.gz file" in message
    assert "damaged gzip data near byte" in message


def test_zip_with_a_bad_crc_halfway_is_refused(tmp_path: Path) -> None:
    session = tmp_path / "session"  # images larger than the part of a file the scan reads
    write_session(session, series=2, instances=4, rows=128, columns=128, seed=5)
    archive = _stored_zip(session, tmp_path / "s.zip")
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
    victim = infos[len(infos) // 2]
    data = bytearray(archive.read_bytes())
    # A byte of pixel data, far past the header the inventory reads.
    data[victim.header_offset + 30 + len(victim.filename) + victim.file_size - 10] ^= 0xFF
    archive.write_bytes(data)
    message = _refused(archive)
    assert f"member {victim.filename!r} is damaged (Bad CRC-32" in message


def test_zip_member_damaged_after_the_inventory_is_an_os_error(
    tmp_path: Path, session: Path
) -> None:
    """What the upload meets if the archive changes after it was checked: an OSError naming
    the member, which the request bodies and the C-STORE sender report as an unreadable file."""
    archive = _stored_zip(session, tmp_path / "s.zip")
    with zipfile.ZipFile(archive) as zf:
        victim = zf.infolist()[3]
    src = open_source(archive)
    try:
        with open(archive, "r+b") as fh:
            fh.seek(victim.header_offset + 30 + len(victim.filename) + victim.file_size - 10)
            fh.write(b"\x00\x01")
        with src.open(victim.filename) as fp, pytest.raises(DamagedMemberError) as info:
            fp.read()
        assert isinstance(info.value, OSError)
        assert f"s.zip: member {victim.filename!r} is damaged" in str(info.value)
    finally:
        src.close()
