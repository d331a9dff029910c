"""The byte-level editor: every transfer syntax, exact lengths, untouched bytes stay the file's."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from xnatio.anonymize import AnonymizeError, Anonymizer, Script, hash_uid

from .helpers import NATIVE_SYNTAXES, PIXELS, VARIABLES, apply, dataset, encode, flat

V = 'version "6.1"\n'
EDITS = (
    V + 'project != "Unassigned" ? (0008,1030) := project\n'
    "(0010,0010) := subject\n(0010,0020) := session\n"
    "(0008,0018) := hashUID[(0008,0018)]\n"
    "(0020,000D) := hashUID[(0020,000D)]\n"
    "hashUIDList[*/(0008,1155)]\n"
    '*/(0010,0010) := "NOBODY"\n'
    "-(0010,0030)\n"
    "-(0019,{SIEMENS MR HEADER}XX)\n"
    '(0010,21B0) := "added"\n'
    '(0012,0062) := "YES"\n'
)
EXPECTED = {
    "00081030": "PROJ1",
    "00100010": "NOBODY",
    "00100020": "SUBJ01_MR1",
    "00080018": hash_uid("1.2.826.0.1.3680043.2.1125.1.42"),
    "0020000D": hash_uid("1.2.826.0.1.3680043.2.1125.1"),
    "00081140[0]/00081155": hash_uid("1.2.826.0.1.3680043.2.1125.1.41"),
    "00081140[1]/00081155": hash_uid("1.2.826.0.1.3680043.2.1125.1.40"),
    "00101002[0]/00100010": "NOBODY",
    "00100030": None,
    "00191008": None,
    "0019100A": None,
    "001021B0": "added",
    "00120062": "YES",
}


def check(before: Dataset, after: Dataset, expected: Mapping[str, object]) -> None:
    """Every expected edit made, every other element (at every depth) unchanged."""
    old, new = flat(before), flat(after)
    for key, value in expected.items():
        if value is None:
            assert key not in new, key
        else:
            assert new.get(key) == value, key
    for key, value in old.items():
        if key not in expected:
            assert new.get(key) == value, key
    assert set(new) - set(old) <= set(expected)


@pytest.mark.parametrize("syntax", NATIVE_SYNTAXES)
def test_every_native_syntax_round_trips(syntax: str) -> None:
    raw = encode(dataset(), syntax)
    edit, out, ds = apply(EDITS, raw)
    assert ds.file_meta.TransferSyntaxUID == syntax
    check(pydicom.dcmread(io.BytesIO(raw)), ds, EXPECTED)
    assert ds.PixelData == PIXELS
    assert ds.file_meta.MediaStorageSOPInstanceUID == EXPECTED["00080018"]
    assert edit.new_sop_instance_uid == EXPECTED["00080018"]
    assert edit.new_study_instance_uid == EXPECTED["0020000D"]
    assert out[:128] == bytes(128) and out[128:132] == b"DICM"
    if syntax != DeflatedExplicitVRLittleEndian:
        # The tail of the file, pixel data included, is the file's own bytes.
        tail = raw[raw.rindex(PIXELS[:64]) - 16 :]
        assert out.endswith(tail)


SITE = (
    V + 'project != "Unassigned" ? (0008,1030) := project\n'
    "(0010,0010) := subject\n(0010,0020) := session\n"
)


@pytest.mark.parametrize("syntax", NATIVE_SYNTAXES)
def test_xnat_default_site_script_in_every_syntax(syntax: str) -> None:
    raw = encode(dataset(), syntax)
    edit, out, ds = apply(SITE, raw)
    expected = {"00081030": "PROJ1", "00100010": "SUBJ01", "00100020": "SUBJ01_MR1"}
    check(pydicom.dcmread(io.BytesIO(raw)), ds, expected)
    assert ds.PixelData == PIXELS and len(out) == edit.length
    if syntax != DeflatedExplicitVRLittleEndian:
        last = edit.pieces[-1]
        assert isinstance(last, tuple) and last[1] == len(raw)  # the rest is the file's own
        assert out[-(last[1] - last[0]) :] == raw[last[0] :]


@pytest.mark.parametrize("syntax", NATIVE_SYNTAXES)
def test_the_plan_reads_no_further_than_the_script_needs(syntax: str) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB of pixel data
    raw = encode(dataset(PixelData=big, Rows=1024), syntax)
    reads: list[int] = []

    class Counting(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            data = super().read(n)
            reads.append(len(data))
            return data

    script = Script.parse(V + "(0010,0010) := subject\n")
    Anonymizer([script], VARIABLES).plan(Counting(raw))
    if syntax == DeflatedExplicitVRLittleEndian:
        assert sum(reads) == len(raw)  # inflated whole, by design
    else:
        assert sum(reads) <= 64 * 1024  # the first read; the pixel data was never read


def test_an_untouched_file_is_copied_exactly_but_the_preamble() -> None:
    raw = encode(dataset(), ExplicitVRLittleEndian)
    raw = b"TIFF-ish preamble".ljust(128, b"!") + raw[128:]
    edit, out, _ = apply(V + '(0010,1000) ?= "x"\n', raw)
    assert not edit.changed
    assert out == bytes(128) + raw[128:]
    assert edit.pieces[1:] == ((132, len(raw)),)  # one source range: nothing else read or built


def test_meta_group_is_kept_unless_sop_uids_change() -> None:
    raw = encode(dataset(), ExplicitVRLittleEndian)
    _, out, _ = apply(V + "(0010,0010) := subject\n", raw)
    meta_end = 132 + 12 + struct.unpack_from("<I", raw, 140)[0]
    assert out[132:meta_end] == raw[132:meta_end]
    _, out, ds = apply(V + '(0008,0016) := "1.2.840.10008.5.1.4.1.1.7"\n', raw)
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    (group_length,) = struct.unpack_from("<I", out, 140)
    assert ds.file_meta.FileMetaInformationGroupLength == group_length
    assert out[132 + 12 + group_length : 132 + 12 + group_length + 4] == b"\x08\x00\x05\x00"


def test_retired_group_lengths_are_recomputed() -> None:
    ds = dataset()
    raw = bytearray(encode(ds, ExplicitVRLittleEndian))
    # Insert (0010,0000) UL before the first element of group 0010.
    at = raw.index(b"\x10\x00\x10\x00PN")
    end = raw.index(b"\x19\x00\x10\x00LO")
    element = struct.pack("<HH2sHI", 0x0010, 0, b"UL", 4, end - at)
    raw[at:at] = element
    _, out, ds2 = apply(V + '(0010,0010) := "A^VERY^LONG^REPLACEMENT^NAME"\n', bytes(raw))
    start = out.index(b"\x10\x00\x00\x00UL")
    (length,) = struct.unpack_from("<I", out, start + 8)
    group_end = out.index(b"\x19\x00\x10\x00LO")
    assert length == group_end - (start + 12)
    assert ds2.PatientName == "A^VERY^LONG^REPLACEMENT^NAME"


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_undefined_length_sequences_and_items_stay_undefined(syntax: str) -> None:
    ds = dataset()
    raw = io.BytesIO()
    ds2 = ds.copy()
    ds2.file_meta = pydicom.dataset.FileMetaDataset()
    ds2.file_meta.TransferSyntaxUID = UID(syntax)
    ds2.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds2.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for el in ds2.iterall():
        if el.VR == "SQ":
            el.is_undefined_length = True
    ds2.save_as(raw, enforce_file_format=True)
    source = raw.getvalue()
    assert b"\xfe\xff\xdd\xe0" in source
    _, out, after = apply(EDITS, source)
    check(pydicom.dcmread(io.BytesIO(source)), after, EXPECTED)
    assert out.count(b"\xfe\xff\xdd\xe0") == source.count(b"\xfe\xff\xdd\xe0")


def test_encapsulated_pixel_data_passes_through() -> None:
    frames = [
        b"\xff\xd8" + bytes(range(200)) + b"\xff\xd9",
        b"\xff\xd8" + b"\x07" * 99 + b"\xff\xd9",
    ]
    ds = dataset(NumberOfFrames=2)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    raw = encode(ds, JPEGBaseline8Bit)
    ds.add_new(0x00491001, "LO", "after pixel data")  # a private element after (7FE0,0010)
    tail = struct.pack("<HH2sH", 0x0049, 0x0010, b"LO", 4) + b"AFTR"
    tail += struct.pack("<HH2sH", 0x0049, 0x1001, b"LO", 4) + b"xxxx"
    raw += tail
    _, out, after = apply(V + "removeAllPrivateTags\n(0010,0010) := subject\n", raw)
    assert after.PixelData == pydicom.dcmread(io.BytesIO(raw)).PixelData
    assert 0x00491001 not in after and 0x00191008 not in after and after.PatientName == "SUBJ01"
    assert not out.endswith(tail)


def test_a_file_without_preamble_or_meta_group() -> None:
    raw = encode(dataset(), ImplicitVRLittleEndian, preamble=False)
    assert raw[:2] == b"\x08\x00"
    edit, out, ds = apply(EDITS, raw)
    check(pydicom.dcmread(io.BytesIO(raw), force=True), ds, EXPECTED)
    assert out[:2] == b"\x08\x00" and edit.dataset_offset == 0


def test_a_stream_that_cannot_seek_or_tell_its_size() -> None:
    raw = encode(dataset(), ExplicitVRBigEndian)

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._b = io.BytesIO(raw)

        def readable(self) -> bool:
            return True

        def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
            data = self._b.read(min(len(buf), 1000))
            buf[: len(data)] = data
            return len(data)

    anon = Anonymizer([Script.parse(EDITS)], VARIABLES, salt="s")
    edit = anon.plan(io.BufferedReader(Pipe()))
    out = b"".join(edit.chunks(io.BufferedReader(Pipe())))
    assert len(out) == edit.length
    check(pydicom.dcmread(io.BytesIO(raw)), pydicom.dcmread(io.BytesIO(out)), EXPECTED)


def test_dataset_only_is_what_c_store_sends() -> None:
    raw = encode(dataset(), DeflatedExplicitVRLittleEndian)
    anon = Anonymizer([Script.parse(EDITS)], VARIABLES, salt="s")
    edit = anon.plan(io.BytesIO(raw))
    whole = b"".join(edit.chunks(io.BytesIO(raw)))
    wire = b"".join(edit.chunks(io.BytesIO(raw), dataset_only=True))
    body = whole[edit.dataset_offset :]
    assert wire[: len(body)] == body and len(wire) % 2 == 0 and len(wire) - len(body) in (0, 1)
    inflated = zlib.decompressobj(-15).decompress(wire)
    assert b"SUBJ01_MR1" in inflated and b"MRN0001" not in inflated


def test_files_on_disk_are_never_modified(tmp_path: Path) -> None:
    path = tmp_path / "a.dcm"
    raw = encode(dataset(), ExplicitVRLittleEndian)
    path.write_bytes(raw)
    anon = Anonymizer([Script.parse(EDITS)], VARIABLES, salt="s")
    edit = anon.plan_file(path)
    with anon.open_edited(path, edit.length) as f:
        out = f.read()
    assert len(out) == edit.length and path.read_bytes() == raw
    assert pydicom.dcmread(io.BytesIO(out)).PatientID == "SUBJ01_MR1"


def test_a_file_that_changed_between_plan_and_send_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.dcm"
    path.write_bytes(encode(dataset(), ExplicitVRLittleEndian))
    anon = Anonymizer([Script.parse(EDITS)], VARIABLES, salt="s")
    edit = anon.plan_file(path)
    path.write_bytes(
        encode(dataset(InstitutionName="A Much Longer Hospital Name"), ExplicitVRLittleEndian)
    )
    with pytest.raises(AnonymizeError, match="changed since it was planned"):
        anon.open_edited(path, edit.length)
    path.write_bytes(path.read_bytes()[:-100])
    with open(path, "rb") as f, pytest.raises(AnonymizeError, match="got shorter"):
        b"".join(edit.chunks(f))


def test_nested_sequences_deep_inside() -> None:
    inner = Dataset()
    inner.CodeValue = "113100"
    inner.PatientName = "Deep^Name"
    middle = Dataset()
    middle.ConceptNameCodeSequence = Sequence([inner])
    ds = dataset()
    ds.ContentSequence = Sequence([middle, Dataset()])
    raw = encode(ds, ExplicitVRLittleEndian)
    _, _, after = apply(
        V + '*/(0010,0010) := "X"\n(0040,A730)[0]/(0040,A043)[0]/(0008,0100) := "1"\n', raw
    )
    assert after.ContentSequence[0].ConceptNameCodeSequence[0].PatientName == "X"
    assert after.ContentSequence[0].ConceptNameCodeSequence[0].CodeValue == "1"
    assert len(after.ContentSequence) == 2 and after.PixelData == PIXELS


def test_not_dicom_is_an_anonymize_error() -> None:
    anon = Anonymizer([Script.parse(EDITS)], VARIABLES, salt="s")
    with pytest.raises(AnonymizeError, match="cannot read the DICOM header"):
        anon.plan(io.BytesIO(bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\x40\x00"))
