"""Synthetic sessions: valid DICOM in every syntax, deterministic, fast, and the CLI."""

from __future__ import annotations

import hashlib
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from xnatio.cli.synth import command
from xnatio.errors import InputError
from xnatio.inventory import build_inventory
from xnatio.synth import PRESETS, SOP_CLASSES, SYNTAXES, write_session


@pytest.mark.parametrize("content", ["simple", "realistic"])
@pytest.mark.parametrize("syntax", [*SYNTAXES, "mixed"])
def test_every_syntax_reads_back_with_pydicom(tmp_path: Path, syntax: str, content: str) -> None:
    summary = write_session(
        tmp_path,
        series=2,
        instances=3,
        rows=16,
        columns=8,
        transfer_syntax=syntax,
        seed=3,
        content=content,
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


def test_small_preset_is_sized_as_documented(tmp_path: Path) -> None:
    # Speed is measured by the benchmarks (docs/benchmarks.md), not by a wall-clock bound here.
    preset = PRESETS["small"]
    summary = write_session(
        tmp_path,
        series=preset.series,
        instances=preset.instances,
        rows=preset.rows,
        columns=preset.columns,
    )
    assert summary.file_count == 300
    assert 35e6 < summary.total_bytes < 45e6


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


# -- realistic content ---------------------------------------------------------------------------


def _pixels(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    assert ds.BitsStored == 12
    return np.asarray(ds.pixel_array, dtype=np.int32)


def test_realistic_slices_differ_and_follow_the_anatomy(tmp_path: Path) -> None:
    summary = write_session(
        tmp_path, series=2, instances=24, rows=128, columns=128, content="realistic", seed=4
    )
    digests = {hashlib.sha256(pydicom.dcmread(p).PixelData).digest() for p in summary.files}
    assert len(digests) == summary.file_count  # no two images alike, across series too
    first = [_pixels(p) for p in summary.files[:24]]
    assert all(a.min() >= 0 and a.max() <= 4095 for a in first)
    # The head's cross-section grows towards the middle of the stack and shrinks again.
    head = [int((a > 100).sum()) for a in first]
    assert head[0] < head[12] > head[-1]
    assert head[12] > 0.4 * 128 * 128
    # Air around the head: Rician noise of a few units, neither zero nor tissue-bright.
    corners = np.concatenate([a[:12, :12].ravel() for a in first])
    assert 2.0 < corners.mean() < 8.0
    assert corners.max() < 40
    # Inside the head, values vary (structures, texture), not one flat level per tissue.
    assert len(np.unique(first[12][48:80, 48:80])) > 100


def test_realistic_is_deterministic_and_seeded(tmp_path: Path) -> None:
    kwargs = {"series": 1, "instances": 3, "rows": 32, "columns": 32, "content": "realistic"}
    a = write_session(tmp_path / "a", seed=5, **kwargs)  # type: ignore[arg-type]
    b = write_session(tmp_path / "b", seed=5, **kwargs)  # type: ignore[arg-type]
    c = write_session(tmp_path / "c", seed=6, **kwargs)  # type: ignore[arg-type]
    for pa, pb in zip(a.files, b.files, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
    assert pydicom.dcmread(a.files[0]).PixelData != pydicom.dcmread(c.files[0]).PixelData


def test_realistic_compresses_like_real_images_and_simple_does_not(tmp_path: Path) -> None:
    # Real uncompressed MR/CT files compress 1.4-6.7x with gzip -1 (bench/compressibility.py).
    def ratio(content: str) -> float:
        summary = write_session(
            tmp_path / content, series=1, instances=8, rows=256, columns=256, content=content
        )
        data = b"".join(p.read_bytes() for p in summary.files)
        return len(data) / len(zlib.compress(data, 1))

    assert ratio("simple") < 1.3
    assert 1.8 < ratio("realistic") < 3.0


def test_realistic_ct_pads_outside_the_field_of_view(tmp_path: Path) -> None:
    summary = write_session(
        tmp_path, series=1, instances=5, rows=64, columns=64, modality="CT", content="realistic"
    )
    a = _pixels(summary.files[2])
    assert a[0, 0] == 0  # padding (-1024 HU) in the corner, outside the reconstruction circle
    assert 800 < np.median(a[24:40, 24:40]) < 1300  # brain, near 1024 + 35 HU


def test_realistic_without_numpy_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "xnatio.synth_phantom", None)
    with pytest.raises(InputError, match="needs numpy"):
        write_session(tmp_path, series=1, instances=1, content="realistic")
    with pytest.raises(InputError, match="content 'noise' is not supported"):
        write_session(tmp_path, series=1, instances=1, content="noise")


def test_cli_content_option(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        command, [str(tmp_path / "s"), "--series", "1", "--instances", "2", "--rows", "8",
                  "--columns", "8", "--content", "realistic"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "content=realistic" in result.output
