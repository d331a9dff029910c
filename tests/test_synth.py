"""Synthetic sessions: valid DICOM in every syntax, deterministic, fast, and the CLI."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from xnatio.cli.synth import command
from xnatio.errors import InputError
from xnatio.inventory import build_inventory
from xnatio.synth import PRESETS, SOP_CLASSES, SYNTAXES, write_session


@pytest.mark.parametrize("syntax", [*SYNTAXES, "mixed"])
def test_every_syntax_reads_back_with_pydicom(tmp_path: Path, syntax: str) -> None:
    summary = write_session(
        tmp_path, series=2, instances=3, rows=16, columns=8, transfer_syntax=syntax, seed=3
    )
    assert summary.file_count == 6
    assert summary.total_bytes == sum(p.stat().st_size for p in summary.files)
    seen: set[str] = set()
    syntaxes: set[str] = set()
    for path in summary.files:
        ds = pydicom.dcmread(path)
        assert ds.preamble == b"\x00" * 128
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.SOPClassUID == SOP_CLASSES["MR"]
        assert ds.StudyInstanceUID == summary.study_instance_uid
        assert ds.Rows == 16
        assert ds.Columns == 8
        pixels = ds.PixelData
        assert len(pixels) >= 16 * 8 * 2 if syntax != "rle" else len(pixels) > 0
        seen.add(ds.SOPInstanceUID)
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
        assert pydicom.uid.UID(ds.SOPInstanceUID).is_valid
    assert len(seen) == 6
    expected = (
        {SYNTAXES["explicit"], SYNTAXES["implicit"]} if syntax == "mixed" else {SYNTAXES[syntax]}
    )
    assert syntaxes == expected


def test_headers_are_realistic_and_vary_per_image(tmp_path: Path) -> None:
    summary = write_session(tmp_path, series=2, instances=12, rows=8, columns=8, modality="CT")
    rows = [pydicom.dcmread(p, stop_before_pixels=True) for p in summary.files]
    assert [(int(d.SeriesNumber), int(d.InstanceNumber)) for d in rows] == [
        (s, i) for s in (1, 2) for i in range(1, 13)
    ]
    first, last = rows[0], rows[11]
    assert first.Modality == "CT"
    assert first.SOPClassUID == SOP_CLASSES["CT"]
    assert float(last.ImagePositionPatient[2]) > float(first.ImagePositionPatient[2])
    assert float(last.SliceLocation) == float(last.ImagePositionPatient[2])
    assert first.SeriesInstanceUID != rows[12].SeriesInstanceUID
    assert first.SeriesDescription
    assert first.PatientID == "SYNTH001"
    assert str(first.PatientName) == "Synthetic^Patient"


def test_same_seed_same_bytes_other_seed_other_uids(tmp_path: Path) -> None:
    a = write_session(tmp_path / "a", series=2, instances=3, rows=8, columns=8, seed=7)
    b = write_session(tmp_path / "b", series=2, instances=3, rows=8, columns=8, seed=7)
    c = write_session(tmp_path / "c", series=2, instances=3, rows=8, columns=8, seed=8)
    for pa, pb in zip(a.files, b.files, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
    assert a.study_instance_uid == b.study_instance_uid != c.study_instance_uid
    assert a.files[0].read_bytes() != c.files[0].read_bytes()


def test_rle_frames_decode_to_the_series_pixels(tmp_path: Path) -> None:
    from pydicom.encaps import generate_frames
    from pydicom.pixels.decoders.rle import _rle_decode_frame

    plain = write_session(tmp_path / "p", series=1, instances=1, rows=8, columns=6, seed=1)
    rle = write_session(
        tmp_path / "r", series=1, instances=1, rows=8, columns=6, seed=1, transfer_syntax="rle"
    )
    ds = pydicom.dcmread(rle.files[0])
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    decoded = _rle_decode_frame(frame, 8, 6, 1, 16, ">")
    assert bytes(decoded) == pydicom.dcmread(plain.files[0]).PixelData


def test_sidecars_and_broken_files_are_skipped_by_the_inventory(tmp_path: Path) -> None:
    summary = write_session(
        tmp_path, series=1, instances=4, rows=8, columns=8, sidecars=True, broken=True
    )
    with build_inventory(tmp_path) as inv:
        assert len(inv.files) == 4
        reasons = {s.path: s.reason for s in inv.skipped}
    assert reasons == {
        ".DS_Store": "OS file",
        "DICOMDIR": "DICOMDIR",
        "README.txt": "not DICOM",
        "Thumbs.db": "OS file",
        "broken/not_dicom.dcm": "not DICOM",
        "broken/truncated.dcm": "truncated or corrupt DICOM header",
        "series_001/protocol.json": "not DICOM",
        "session.json": "not DICOM",
    }
    assert len(summary.extra_files) == len(reasons)


def test_dicomdir_is_recognised_by_content_too(tmp_path: Path) -> None:
    write_session(tmp_path, series=1, instances=1, rows=4, columns=4, sidecars=True)
    (tmp_path / "DICOMDIR").rename(tmp_path / "index.dcm")
    with build_inventory(tmp_path) as inv:
        assert {s.path: s.reason for s in inv.skipped}["index.dcm"] == "DICOMDIR"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"series": 0, "instances": 1}, "at least 1"),
        ({"series": 1, "instances": 1, "modality": "US"}, "MR or CT"),
        ({"series": 1, "instances": 1, "transfer_syntax": "jpeg"}, "not supported"),
        ({"series": 1, "instances": 1, "patient_id": "a\\b"}, "printable ASCII"),
        ({"series": 1, "instances": 1, "rows": 0}, "rows and columns"),
    ],
)
def test_bad_arguments_raise_input_error(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        write_session(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_small_preset_is_fast_and_sized_as_documented(tmp_path: Path) -> None:
    preset = PRESETS["small"]
    started = time.perf_counter()
    summary = write_session(
        tmp_path,
        series=preset.series,
        instances=preset.instances,
        rows=preset.rows,
        columns=preset.columns,
    )
    elapsed = time.perf_counter() - started
    assert summary.file_count == 300
    assert 35e6 < summary.total_bytes < 45e6
    # 300 files of 131 KB: the medium preset (10x) is measured at about 1.2 s on this machine.
    assert elapsed < 5.0


def test_cli_prints_one_line_summary(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        command,
        [str(tmp_path / "s"), "--series", "2", "--instances", "3", "--rows", "8", "--columns", "8",
         "--modality", "CT", "--syntax", "implicit", "--sidecars", "--broken", "--seed", "5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("synth out=")
    assert "files=6 " in lines[0]
    assert "syntax=implicit" in lines[0]
    assert "+8 extra files" in lines[0]
    assert len(list((tmp_path / "s").rglob("IM*.dcm"))) == 6


def test_cli_rejects_unknown_size(tmp_path: Path) -> None:
    result = CliRunner().invoke(command, [str(tmp_path), "--size", "huge"])
    assert result.exit_code == 2
