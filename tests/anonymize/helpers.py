"""Shared helpers for the anonymisation tests: data sets written by pydicom, scripts applied."""

from __future__ import annotations

import io
from collections.abc import Mapping

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from xnatio.anonymize import Anonymizer, Edit, Script

NATIVE_SYNTAXES = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
)
VARIABLES = {"project": "PROJ1", "subject": "SUBJ01", "session": "SUBJ01_MR1"}
PIXELS = bytes(range(256)) * 32  # 8 KiB, 64x64 16-bit


def dataset(**extra: object) -> Dataset:
    """An MR-like data set with a private block, nested sequences and pixel data."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.1.42"
    ds.StudyDate = "20240315"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC123"
    ds.Modality = "MR"
    ds.InstitutionName = "General Hospital"
    ds.ReferringPhysicianName = "Who^Doctor"
    ds.StudyDescription = "Brain^Routine"
    ds.SeriesDescription = "t1_mprage"
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.1.41"
    ref2 = Dataset()
    ref2.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ref2.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.1.40"
    ds.ReferencedImageSequence = Sequence([ref, ref2])
    other = Dataset()
    other.PatientName = "Doe^Jane^Other"
    other.PatientID = "OTHER9"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.PatientWeight = "61.5"
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    ds.add_new(0x00191008, "CS", "IMAGE NUM 4")
    ds.add_new(0x0019100A, "US", 176)
    ds.add_new(0x00190011, "LO", "OTHER VENDOR")
    ds.add_new(0x00191101, "LO", "other private")
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.1.4"
    ds.SeriesNumber = "4"
    ds.InstanceNumber = "42"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.2.1125.1.9"
    ds.add_new(0x00291010, "OB", b"\x01\x02\x03\x04")
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 64
    ds.Columns = 64
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = PIXELS
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def encode(ds: Dataset, syntax: str, *, preamble: bool = True) -> bytes:
    """``ds`` as a file in ``syntax`` (with file meta unless ``preamble`` is false)."""
    ds = ds.copy()
    out = io.BytesIO()
    if not preamble:  # a bare data set, as some old writers made files
        ds.save_as(out, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)
        return out.getvalue()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def apply(
    text: str | Script,
    raw: bytes,
    variables: Mapping[str, str] = VARIABLES,
    *,
    salt: str = "test-salt",
) -> tuple[Edit, bytes, Dataset]:
    """Apply a script to ``raw``: the edit, the streamed bytes, and pydicom's reading of them."""
    script = text if isinstance(text, Script) else Script.parse(text, source="test script")
    anon = Anonymizer([script], variables, salt=salt)
    edit = anon.plan(io.BytesIO(raw), key="file-1")
    out = b"".join(edit.chunks(io.BytesIO(raw)))
    assert len(out) == edit.length
    return edit, out, pydicom.dcmread(io.BytesIO(out), force=True)


def read(raw: bytes) -> Dataset:
    """pydicom's reading of ``raw``."""
    return pydicom.dcmread(io.BytesIO(raw))


def flat(ds: Dataset) -> dict[str, object]:
    """Every element at every depth as path -> value (raw bytes for binary VRs)."""
    out: dict[str, object] = {}

    def visit(d: Dataset, prefix: str) -> None:
        for el in d:
            key = f"{prefix}{el.tag.group:04X}{el.tag.element:04X}"
            if el.VR == "SQ":
                out[key] = f"<{len(el.value)} items>"
                for i, item in enumerate(el.value):
                    visit(item, f"{key}[{i}]/")
            else:
                out[key] = el.value

    visit(ds, "")
    return out
