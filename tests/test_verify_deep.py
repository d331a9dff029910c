"""The element-by-element comparison of deep verification, on files pydicom writes (pure logic).

XNAT re-encodes the start of a data set when it stores a file (docs/xnat-behaviour.md §3.4 step
11): lengths of sequences and items, group lengths, padding. None of that is a difference; a
changed value anywhere, however deep, is.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from xnatio.verify.deep import CompareAgain, DeepResult, compare_streams

SOP_CLASS = "1.2.840.10008.5.1.4.1.1.4"


def dataset(pixels: bytes = b"\x01\x02" * 64, syntax: str = ExplicitVRLittleEndian) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASS
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.PatientName = "Doe^Jane"
    ds.PatientComments = "original comment"
    ref = Dataset()
    ref.ReferencedSOPClassUID = SOP_CLASS
    ref.ReferencedSOPInstanceUID = "1.2.3.9"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.Rows, ds.Columns = len(pixels) // 128, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(SOP_CLASS)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    return ds


def written(ds: Dataset, *, implicit: bool = False) -> io.BytesIO:
    out = io.BytesIO()
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    out.seek(0)
    return out


def differences(
    local: Dataset, stored: Dataset, change: Callable[[Dataset], None] | None = None, **kw: object
) -> DeepResult:
    """Compare as deep verification does: bytes first, elements again where they differ late."""
    if change is not None:
        change(stored)
    try:
        return compare_streams(written(local), written(stored), **kw)  # type: ignore[arg-type]
    except CompareAgain:
        return compare_streams(written(local), written(stored), fast=False, **kw)  # type: ignore[arg-type]


def test_identical_files_have_no_differences() -> None:
    found = differences(dataset(), dataset())
    assert found.differences == [] and found.notes == []
    assert found.elements == 0  # the bytes were the same: no element walk was needed
    walked = compare_streams(written(dataset()), written(dataset()), fast=False)
    assert walked.differences == [] and walked.elements >= 15


def test_reencoded_lengths_group_lengths_and_vr_style_are_not_differences() -> None:
    stored = dataset()
    stored.ReferencedImageSequence.is_undefined_length = True
    stored.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    stored.add_new(0x00080000, "UL", 123)  # a group length (retired, rewritten freely)
    found = compare_streams(written(dataset()), written(stored, implicit=True))
    assert found.differences == []
    assert found.notes == [
        "stored in transfer syntax 1.2.840.10008.1.2 (the local file: 1.2.840.10008.1.2.1)"
    ]
    # Implicit VR on both sides: no VR says "sequence", the lengths and the items do.
    both = compare_streams(written(dataset(), implicit=True), written(stored, implicit=True))
    assert both.differences == [] and both.notes == []


def test_a_changed_value_deep_in_a_sequence_is_named() -> None:
    def change(ds: Dataset) -> None:
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.8"
        ds.ReferencedImageSequence.is_undefined_length = True

    found = differences(dataset(), dataset(), change)
    assert found.differences == ["(0008,1140)[0](0008,1155) differs"]


def test_items_added_or_elements_removed_are_differences() -> None:
    def change(ds: Dataset) -> None:
        ds.ReferencedImageSequence.append(Dataset())
        del ds.PatientName
        ds.PatientBirthDate = "19700101"

    found = differences(dataset(), dataset(), change)
    assert found.differences == [
        "(0008,1140) has another number of items in the stored file",
        "(0010,0010) is not in the stored file",
        "(0010,0030) is only in the stored file",
    ]


def test_pixel_data_is_compared_in_chunks_to_the_last_byte() -> None:
    pixels = bytes(range(256)) * 12288  # 3 MiB: several chunks
    changed = pixels[:-1] + b"\x00"
    assert changed != pixels
    found = differences(dataset(pixels), dataset(changed))
    assert found.differences == ["(7FE0,0010) Pixel Data differs"]
    # A difference after the first MiB: the bytes kept are gone, the caller reads again.
    with pytest.raises(CompareAgain):
        compare_streams(written(dataset(pixels)), written(dataset(changed)))
    assert differences(dataset(pixels), dataset(pixels)).differences == []


def test_encapsulated_fragments() -> None:
    frames = [b"\x10" * 100, b"\x20" * 60]

    def rle(frames: list[bytes]) -> Dataset:
        ds = dataset(syntax=RLELossless)
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].is_undefined_length = True
        ds.NumberOfFrames = len(frames)
        return ds

    assert differences(rle(frames), rle(frames)).differences == []
    found = differences(rle(frames), rle([frames[0], b"\x21" * 60]))
    assert found.differences == ["(7FE0,0010) Pixel Data differs in fragment 2"]
    # Stored decompressed (XNAT may do this, §3.4 step 11): not compared, and said so.
    decompressed = dataset()
    decompressed.NumberOfFrames = 2
    decompressed.PixelData = b"\x00" * 256
    native = differences(rle(frames), decompressed)
    assert native.differences == []
    assert any("Pixel Data not compared" in n for n in native.notes)


def test_routing_comment_and_expected_edits() -> None:
    routing = "Project:P1 Subject:S1 Session:E1"

    def route(ds: Dataset) -> None:
        ds.PatientComments = routing

    assert differences(dataset(), dataset(), route, routing=routing).differences == []
    assert differences(dataset(), dataset(), route).differences == ["(0010,4000) differs"]

    def anonymise(ds: Dataset) -> None:
        ds.PatientName = "Anon"
        del ds.PatientComments
        ds.PatientIdentityRemoved = "YES"

    edits = {0x00100010: b"Anon", 0x00104000: None, 0x00120062: b"YES"}
    assert differences(dataset(), dataset(), anonymise, expected=edits).differences == []
    found = differences(dataset(), dataset(), anonymise, expected={0x00100010: b"Other"})
    assert found.differences == [
        "(0010,0010) does not hold the expected value",
        "(0010,4000) is not in the stored file",
        "(0012,0062) is only in the stored file",
    ]
