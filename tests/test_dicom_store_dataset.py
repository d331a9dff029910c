"""Byte-level data set handling for C-STORE: locating the data set, splicing Patient Comments."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from tests.dicom_layout import dataset_offset
from xnatio.dicom.dataset import (
    DatasetParseError,
    dataset_chunks,
    iter_chunks,
    open_dataset,
    splice_patient_comments,
)

pytestmark = pytest.mark.filterwarnings("ignore:VR lookup failed:UserWarning")

COMMENT = "Project:P1 Subject:S_1 Session:E-1"

# Bundled with pydicom (no download): every encoding family a scanner or PACS produces.
BUNDLED = [
    "CT_small.dcm",  # explicit VR LE
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "image_dfl.dcm",  # deflated
    "JPEG-lossy.dcm",
    "JPGExtended.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEGLSNearLossless_16.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG2000.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_rle_2frame.dcm",
    "test-SR.dcm",
    "reportsi.dcm",
    "rtplan.dcm",
    "rtstruct.dcm",
    "rtdose.dcm",
    "waveform_ecg.dcm",
    "nested_priv_SQ.dcm",
    "priv_SQ.dcm",
    "UN_sequence.dcm",
    "no_meta.dcm",
    "ExplVR_LitEndNoMeta.dcm",
    "MR_small_padded.dcm",
    "liver_1frame.dcm",
]


@pytest.fixture(autouse=True)
def _lenient_pydicom(monkeypatch: pytest.MonkeyPatch) -> None:
    """Some bundled files carry invalid values on purpose; reading them must not warn."""
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.IGNORE)


class Trickle(io.RawIOBase):
    """A stream that returns at most ``step`` bytes per read, like a slow archive member."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._buf = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._step if size is None or size < 0 else min(size, self._step)
        return self._buf.read(n)


def _bundled(name: str) -> Path:
    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return Path(str(found))


def _rebuild(original: bytes, offset: int, dataset: bytes) -> Dataset:
    """Read a file made of the original preamble and meta and a new data set."""
    return pydicom.dcmread(io.BytesIO(original[:offset] + dataset), force=True)


def _splice_bytes(
    data: bytes, stream: io.RawIOBase | io.BytesIO | None = None
) -> tuple[int, bytes]:
    fh = stream if stream is not None else io.BytesIO(data)
    head = open_dataset(fh)  # type: ignore[arg-type]
    first, rest = splice_patient_comments(fh, head, COMMENT)  # type: ignore[arg-type]
    return head.offset, first + b"".join(rest)


@pytest.mark.parametrize("name", BUNDLED)
def test_splice_changes_only_patient_comments(name: str) -> None:
    path = _bundled(name)
    data = path.read_bytes()
    offset, spliced = _splice_bytes(data)
    before = pydicom.dcmread(path, force=True)
    after = _rebuild(data, offset, spliced)
    assert after.PatientComments == COMMENT
    if "PatientComments" in before:
        del before.PatientComments
    del after.PatientComments
    assert after == before
    # Pixel data untouched, byte for byte.
    if "PixelData" in before:
        assert after.PixelData == before.PixelData


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"])
def test_splice_reads_forward_from_a_trickling_stream(name: str) -> None:
    data = _bundled(name).read_bytes()
    _, whole = _splice_bytes(data)
    _, trickled = _splice_bytes(data, Trickle(data, step=5))
    assert trickled == whole


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "no_meta.dcm"])
def test_dataset_without_routing_is_the_file_tail(name: str) -> None:
    data = _bundled(name).read_bytes()
    fh = io.BytesIO(data)
    head = open_dataset(fh)
    sent = head.head[head.offset :] + b"".join(iter_chunks(fh))
    expected = dataset_offset(data)  # from pydicom's reading of the meta group
    assert head.offset == expected
    assert sent == data[expected:]
    ts = pydicom.dcmread(io.BytesIO(data), force=True).file_meta.get("TransferSyntaxUID")
    assert head.transfer_syntax_uid == (ts or ImplicitVRLittleEndian)


def _write(ds: Dataset, syntax: str, tmp_path: Path) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta = meta
    out = tmp_path / "f.dcm"
    ds.save_as(out, enforce_file_format=True)
    return out.read_bytes()


def _base() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Test^Pat"
    ds.PatientID = "ID1"
    return ds


@pytest.mark.parametrize(
    "syntax",
    [
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    ],
)
def test_existing_comment_is_replaced(syntax: str, tmp_path: Path) -> None:
    ds = _base()
    ds.PatientComments = "old comment that is longer than the new one"
    ds.PatientSex = "O"  # (0010,0040): before (0010,4000)
    ds.ExaminedBodyThickness = 1.5  # (0010,9431): after it, stays put
    item = Dataset()
    item.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedImageSequence = Sequence([item])  # (0008,1140), written with undefined length
    ds["ReferencedImageSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    ds.StudyDescription = "desc"
    data = _write(ds, syntax, tmp_path)
    offset, spliced = _splice_bytes(data)
    after = _rebuild(data, offset, spliced)
    before = pydicom.dcmread(io.BytesIO(data))
    assert after.PatientComments == COMMENT
    del after.PatientComments, before.PatientComments
    assert after == before


def _implicit(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def test_retired_group_length_keeps_adding_up() -> None:
    group = [
        _implicit(0x00100010, b"Test^Pat"),
        _implicit(0x00100020, b"ID1 "),
        _implicit(0x00104000, b"an old comment"),
    ]
    data = (
        _implicit(0x00080016, b"1.2.840.10008.5.1.4.1.1.7\x00")
        + _implicit(0x00080018, b"1.2.3.4\x00")
        + _implicit(0x00100000, struct.pack("<I", sum(len(e) for e in group)))
        + b"".join(group)
        + _implicit(0x00200010, b"42")
    )
    offset, spliced = _splice_bytes(data)
    assert offset == 0
    after = pydicom.dcmread(io.BytesIO(spliced), force=True)
    assert after.PatientComments == COMMENT
    assert after.StudyID == "42"
    expected = len(group[0]) + len(group[1]) + 8 + len(COMMENT)
    assert after[0x00100000].value == expected


def test_comment_appended_when_data_set_ends_before_it(tmp_path: Path) -> None:
    ds = _base()
    data = _write(ds, ExplicitVRLittleEndian, tmp_path)
    offset, spliced = _splice_bytes(data)
    assert spliced.endswith(
        struct.pack("<HH2sH", 0x0010, 0x4000, b"LT", len(COMMENT)) + COMMENT.encode()
    )
    assert _rebuild(data, offset, spliced).PatientComments == COMMENT


def test_odd_comment_is_padded_and_overlong_refused() -> None:
    data = _bundled("CT_small.dcm").read_bytes()
    fh = io.BytesIO(data)
    head = open_dataset(fh)
    first, _ = splice_patient_comments(fh, head, "Project:P Subject:S Session:E")
    assert b"Session:E \x12\x00" not in first  # padding lands inside the value, not after
    after = _rebuild(data, head.offset, first + data[len(head.head) :])
    assert after.PatientComments == "Project:P Subject:S Session:E"
    fh = io.BytesIO(data)
    with pytest.raises(DatasetParseError):
        splice_patient_comments(fh, open_dataset(fh), "x" * 10242)


def test_truncated_header_is_a_parse_error() -> None:
    data = _bundled("CT_small.dcm").read_bytes()
    fh = io.BytesIO(data[:200])
    with pytest.raises(DatasetParseError):
        splice_patient_comments(fh, open_dataset(fh), COMMENT)


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("no_meta.dcm", ImplicitVRLittleEndian),
        ("ExplVR_LitEndNoMeta.dcm", ExplicitVRLittleEndian),
        ("ExplVR_BigEndNoMeta.dcm", ExplicitVRBigEndian),
    ],
)
def test_files_without_meta_are_recognised_by_their_bytes(name: str, syntax: str) -> None:
    with _bundled(name).open("rb") as fh:
        head = open_dataset(fh)
    assert (head.offset, head.transfer_syntax_uid) == (0, syntax)


@pytest.mark.parametrize("comment", [None, COMMENT])
def test_odd_deflated_stream_gets_its_pad_byte(comment: str | None) -> None:
    data = _bundled("image_dfl.dcm").read_bytes()
    offset = dataset_offset(data)
    assert (len(data) - offset) % 2 == 1  # the bundled file is odd: the case under test
    sent = b"".join(dataset_chunks(io.BytesIO(data), comment))
    assert len(sent) % 2 == 0
    if comment is None:
        assert sent == data[offset:] + b"\x00"
    after = _rebuild(data, offset, sent)
    assert after.get("PatientComments") == comment
