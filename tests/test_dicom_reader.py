"""The one header reader: every transfer syntax and file layout, and its three users agreeing.

The inventory (:func:`xnatio.inventory.read_header`), the sandbox's import
(:func:`xnatio.sandbox.dicom_header.read_header`) and the C-STORE splicer
(:func:`xnatio.dicom.dataset.open_dataset`, :func:`~xnatio.dicom.dataset.dataset_chunks`) must
give the same answer for the same file. The files are written by pydicom, part by part, so that
each case states its encoding here rather than taking it from the code under test.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, generate_uid

from xnatio.dicom.dataset import DatasetParseError, dataset_chunks, open_dataset
from xnatio.dicom.reader import HeaderReader, NotDicomError
from xnatio.dicom.syntax import Encoding, classify
from xnatio.inventory import read_header as inventory_header
from xnatio.sandbox.dicom_header import HeaderError
from xnatio.sandbox.dicom_header import read_header as sandbox_header

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

COMMENT = "Project:P1 Subject:S1 Session:E1"


@dataclass(frozen=True)
class Case:
    """A transfer syntax and how PS3.5 says its data set is encoded."""

    uid: str
    explicit: bool
    little: bool
    deflated: bool = False
    encapsulated: bool = False


CASES = {
    "implicit-le": Case("1.2.840.10008.1.2", explicit=False, little=True),
    "explicit-le": Case("1.2.840.10008.1.2.1", explicit=True, little=True),
    "explicit-be": Case("1.2.840.10008.1.2.2", explicit=True, little=False),
    "deflated": Case("1.2.840.10008.1.2.1.99", explicit=True, little=True, deflated=True),
    "jpip-deflate": Case("1.2.840.10008.1.2.4.95", explicit=True, little=True, deflated=True),
    "jpip-htj2k-deflate": Case(
        "1.2.840.10008.1.2.4.205", explicit=True, little=True, deflated=True
    ),
    # PS3.5 A.4.13: each frame is deflated, the data set itself is plain explicit VR LE.
    "frame-deflate": Case("1.2.840.10008.1.2.8.1", explicit=True, little=True, encapsulated=True),
    "jpeg-baseline": Case("1.2.840.10008.1.2.4.50", explicit=True, little=True, encapsulated=True),
    "jpeg-2000": Case("1.2.840.10008.1.2.4.91", explicit=True, little=True, encapsulated=True),
    "rle": Case("1.2.840.10008.1.2.5", explicit=True, little=True, encapsulated=True),
    "encapsulated-raw": Case(
        "1.2.840.10008.1.2.1.98", explicit=True, little=True, encapsulated=True
    ),
    # A private syntax (GE's implicit VR little endian): the bytes decide.
    "private-implicit": Case("1.2.840.113619.5.2", explicit=False, little=True),
}
NATIVE = ("implicit-le", "explicit-le", "explicit-be")


def _dataset(case: Case) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "MR"
    item = Dataset()
    item.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedImageSequence = [item, item]
    ds.PatientName = "Test^Pat"
    ds.PatientID = "ID1"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 3
    ds.InstanceNumber = 17
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    if case.encapsulated:
        ds.PixelData = encapsulate([b"\x01\x02\x03\x04"])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = b"\x01\x02\x03\x04"
        ds["PixelData"].VR = "OB" if case.explicit else "OW"
    return ds


@dataclass(frozen=True)
class Built:
    data: bytes
    ds: Dataset
    offset: int  # where the data set starts
    meta_ts: str  # (0002,0010) as written, "" without a meta group


def build(name: str, layout: str = "preamble") -> Built:
    """A file for ``CASES[name]``: ``preamble`` (and meta group), ``meta`` (no preamble),
    ``preamble-only`` (no meta group) or ``bare`` (neither)."""
    case = CASES[name]
    ds = _dataset(case)
    body = DicomBytesIO()
    body.is_little_endian = case.little
    body.is_implicit_VR = not case.explicit
    write_dataset(body, ds)
    data = body.getvalue()
    if case.deflated:  # pydicom 3.0 deflates 1.2.840.10008.1.2.1.99 only; do it for all three
        packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = packer.compress(data) + packer.flush()
    head = b""
    if layout in ("preamble", "meta"):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = UID(case.uid)
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_file_meta_info(fp, meta, enforce_standard=True)
        head = fp.getvalue()
        assert head[:2] == b"\x02\x00"
    if layout in ("preamble", "preamble-only"):
        head = bytes(128) + b"DICM" + head
    return Built(head + data, ds, len(head), case.uid if layout in ("preamble", "meta") else "")


def _read_sent(sent: bytes, case: Case) -> Dataset:
    """Parse what the splicer would send, with the encoding the case states."""
    if case.deflated:
        sent = zlib.decompressobj(-zlib.MAX_WBITS).decompress(sent)
    return read_dataset(io.BytesIO(sent), not case.explicit, case.little)


def _three_answers(built: Built, case: Case) -> None:
    """Inventory, sandbox and splicer read the same values from ``built``."""
    data, ds = built.data, built.ds
    inv = inventory_header(io.BytesIO(data))
    hdr, prefix = sandbox_header(io.BytesIO(data))
    head = open_dataset(io.BytesIO(data))
    assert isinstance(inv, dict), inv
    assert data.startswith(prefix)
    expected = (
        ds.SOPInstanceUID,
        ds.SOPClassUID,
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        "3",
        "17",
        "MR",
    )
    assert (
        inv["sop_instance"],
        inv["sop_class"],
        inv["study"],
        inv["series"],
        inv["series_number"],
        inv["instance_number"],
        inv["modality"],
    ) == expected
    assert (
        hdr.sop_instance_uid,
        hdr.sop_class_uid,
        hdr.study_instance_uid,
        hdr.series_instance_uid,
        hdr.series_number,
        hdr.instance_number,
        hdr.modality,
    ) == expected
    assert hdr.patient_name == "Test^Pat"
    assert inv.get("ts", "") == hdr.transfer_syntax_uid == built.meta_ts
    assert head.offset == built.offset
    assert data[: head.offset] == head.head[: head.offset]
    enc = head.encoding
    assert (enc.explicit_vr, enc.little_endian, enc.deflated) == (
        case.explicit,
        case.little,
        case.deflated,
    )
    sent = b"".join(dataset_chunks(io.BytesIO(data), COMMENT))
    after = _read_sent(sent, case)
    assert after.PatientComments == COMMENT
    assert after.SOPInstanceUID == ds.SOPInstanceUID
    assert after.PixelData == ds.PixelData
    assert after.ReferencedImageSequence == ds.ReferencedImageSequence


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("layout", ["preamble", "meta"])
def test_every_transfer_syntax_reads_the_same_in_all_three(name: str, layout: str) -> None:
    _three_answers(build(name, layout), CASES[name])


@pytest.mark.parametrize("name", NATIVE)
@pytest.mark.parametrize("layout", ["bare", "preamble-only"])
def test_files_without_meta_read_the_same_in_all_three(name: str, layout: str) -> None:
    built = build(name, layout)
    assert built.offset == (0 if layout == "bare" else 132)
    _three_answers(built, CASES[name])
    head = open_dataset(io.BytesIO(built.data))
    assert head.transfer_syntax_uid == CASES[name].uid  # named by the bytes, for C-STORE


@pytest.mark.parametrize("name", CASES)
def test_a_truncated_header_is_refused_by_all_three(name: str) -> None:
    built = build(name)
    cut = built.data[: built.offset + 60]  # inside the data set, before SOP Instance UID ends
    assert inventory_header(io.BytesIO(cut)) == "truncated or corrupt DICOM header"
    with pytest.raises(HeaderError):
        sandbox_header(io.BytesIO(cut))
    with pytest.raises(DatasetParseError):
        b"".join(dataset_chunks(io.BytesIO(cut), COMMENT))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world, not DICOM at all",
        bytes(64),
        b"PK\x03\x04" + bytes(200),
        b"\x10\x00\x10\x00PN\x08\x00Test^Pat",  # group 0010 cannot start a data set
    ],
)
def test_bytes_that_are_not_dicom_are_refused_by_the_inventory_and_the_sandbox(
    data: bytes,
) -> None:
    assert inventory_header(io.BytesIO(data)) == "not DICOM"
    with pytest.raises(HeaderError):
        sandbox_header(io.BytesIO(data))
    with pytest.raises(NotDicomError):
        HeaderReader(io.BytesIO(data)).read_meta()


def test_a_data_set_that_contradicts_its_transfer_syntax_is_read_as_its_bytes_say() -> None:
    """SC_rgb_jpeg.dcm's meta says JPEG (explicit VR); its data set is implicit VR."""
    path = get_testdata_file("SC_rgb_jpeg.dcm", download=False)
    assert path is not None
    data = Path(str(path)).read_bytes()
    ref = pydicom.dcmread(io.BytesIO(data))
    inv = inventory_header(io.BytesIO(data))
    hdr, _ = sandbox_header(io.BytesIO(data))
    head = open_dataset(io.BytesIO(data))
    assert isinstance(inv, dict)
    assert inv["sop_instance"] == hdr.sop_instance_uid == ref.SOPInstanceUID
    assert not head.encoding.explicit_vr
    sent = b"".join(dataset_chunks(io.BytesIO(data), COMMENT))
    after = read_dataset(io.BytesIO(sent), True, True)
    assert after.PatientComments == COMMENT
    assert after.SOPInstanceUID == ref.SOPInstanceUID


def test_garbage_after_a_meta_group_is_not_read_as_implicit_vr() -> None:
    """Zeros would parse as implicit VR; the bytes overrule the syntax only for a real start."""
    built = build("explicit-le")
    data = built.data[: built.offset] + bytes(64)
    with pytest.raises(HeaderError):
        sandbox_header(io.BytesIO(data))
    assert inventory_header(io.BytesIO(data)) == "truncated or corrupt DICOM header"


def test_an_undefined_length_un_is_read_as_implicit_vr_items() -> None:
    """PS3.5 6.2.2: an undefined-length UN in an explicit VR data set holds implicit VR items."""
    built = build("explicit-le")
    ds = built.ds
    inner = struct.pack("<HHI", 0x0009, 0x1011, 8) + b"ABCDEFGH"
    nested = struct.pack("<HHI", 0x0009, 0x1012, 0xFFFFFFFF)  # a nested implicit sequence
    nested += struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
    nested += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    items = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner + nested
    items += struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    un = struct.pack("<HH2sHI", 0x0009, 0x1010, b"UN", 0, 0xFFFFFFFF) + items
    creator = struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 6) + b"XNATIO"
    body = built.data[built.offset :]
    split = body.index(struct.pack("<HH", 0x0010, 0x0010))  # Patient Name, after group 0008
    data = built.data[: built.offset] + body[:split] + creator + un + body[split:]
    assert pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID == ds.SOPInstanceUID
    _three_answers(Built(data, ds, built.offset, built.meta_ts), CASES["explicit-le"])


def test_a_meta_group_without_a_data_set_is_an_error() -> None:
    built = build("explicit-le")
    data = built.data[: built.offset]
    with pytest.raises(HeaderError, match="no data set"):
        sandbox_header(io.BytesIO(data))
    assert inventory_header(io.BytesIO(data)) == "truncated or corrupt DICOM header"


def _bundled() -> list[Path]:
    """Every file bundled with pydicom (DICOM or not), without downloading anything."""
    root = Path(pydicom.__file__).parent / "data" / "test_files"
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_all_three_agree_on_every_file_bundled_with_pydicom() -> None:
    """Where the inventory keeps a file, the others read the same UIDs; where it refuses, so
    does the sandbox."""
    kept = refused = 0
    for name in _bundled():
        data = name.read_bytes()
        inv = inventory_header(io.BytesIO(data))
        if inv in ("not DICOM", "truncated or corrupt DICOM header"):
            refused += 1
            with pytest.raises(HeaderError):
                sandbox_header(io.BytesIO(data))
            continue
        if not isinstance(inv, dict):  # DICOMDIR or a missing UID: the inventory's policy
            continue
        kept += 1
        hdr, _ = sandbox_header(io.BytesIO(data))
        assert (hdr.sop_instance_uid, hdr.study_instance_uid, hdr.series_instance_uid) == (
            inv["sop_instance"],
            inv.get("study", ""),
            inv.get("series", ""),
        ), name
        head = open_dataset(io.BytesIO(data))
        assert head.transfer_syntax_uid == (inv.get("ts") or head.transfer_syntax_uid), name
        sent = b"".join(dataset_chunks(io.BytesIO(data), COMMENT))
        if head.encoding.deflated:
            sent = zlib.decompressobj(-zlib.MAX_WBITS).decompress(sent)
        enc = head.encoding
        after = read_dataset(io.BytesIO(sent), not enc.explicit_vr, enc.little_endian)
        assert after.PatientComments == COMMENT, name
        assert after.SOPInstanceUID == inv["sop_instance"], name
    assert kept > 60
    assert refused >= 5


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        ("1.2.840.10008.1.2", Encoding(False, True)),
        ("1.2.840.10008.1.2.1", Encoding(True, True)),
        ("1.2.840.10008.1.2.2", Encoding(True, False)),
        ("1.2.840.10008.1.2.1.99", Encoding(True, True, deflated=True)),
        ("1.2.840.10008.1.2.4.95", Encoding(True, True, deflated=True)),
        ("1.2.840.10008.1.2.4.205", Encoding(True, True, deflated=True)),
        ("1.2.840.10008.1.2.8.1", Encoding(True, True, encapsulated=True)),
        ("1.2.840.10008.1.2.1.98", Encoding(True, True, encapsulated=True)),
        ("1.2.840.10008.1.2.4.50", Encoding(True, True, encapsulated=True)),
        ("1.2.840.10008.1.2.4.100.1", Encoding(True, True, encapsulated=True)),
        ("1.2.840.10008.1.2.4.201", Encoding(True, True, encapsulated=True)),
        ("1.2.840.10008.1.2.5", Encoding(True, True, encapsulated=True)),
        ("1.2.840.10008.1.2.4.94", Encoding(True, True)),  # JPIP: pixel data by reference
        ("1.2.840.10008.1.2.7.1", Encoding(True, True)),  # SMPTE ST 2110: no pixel data
        ("1.2.840.10008.1.20", None),  # not a transfer syntax (Papyrus 3)
        ("1.2.840.113619.5.2", None),
        ("", None),
    ],
)
def test_classification_of_transfer_syntaxes(uid: str, expected: Encoding | None) -> None:
    assert classify(uid) == expected
