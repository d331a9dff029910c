"""Tiny DICOM factory for the store tests (kept independent of xnatio.synth)."""

from __future__ import annotations

import io
import itertools

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage

_counter = itertools.count(1)


def uid(prefix: str = "1.2.826.0.1.3680043.9.7777") -> str:
    """A unique, valid UID."""
    return f"{prefix}.{next(_counter)}"


def make_dicom(
    *,
    study: str,
    series: str | None = None,
    sop: str | None = None,
    series_number: int | str | None = 1,
    instance: int = 1,
    modality: str = "MR",
    sop_class: str | None = MRImageStorage,
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID1",
    patient_comments: str | None = None,
    study_description: str | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    pixel_bytes: int = 512,
    extra: dict[str, str] | None = None,
) -> bytes:
    """Encode a small MR-like object with the given identifiers."""
    ds = Dataset()
    if sop_class is not None:
        ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop or uid()
    ds.StudyDate = "20240102"
    ds.StudyTime = "101530"
    ds.Modality = modality
    if study_description is not None:
        ds.StudyDescription = study_description
    ds.SeriesDescription = "T1 axial"
    item = Dataset()
    item.CodeValue = "X1"
    item.CodeMeaning = "demo"
    ds.ProcedureCodeSequence = Sequence([item])
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    if patient_comments is not None:
        ds.PatientComments = patient_comments
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series or f"{study}.{series_number}"
    if series_number is not None:
        ds.SeriesNumber = series_number
    ds.InstanceNumber = instance
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.Rows = 16
    ds.Columns = 16
    ds.BitsAllocated = 8
    ds.PixelData = b"\x01" * pixel_bytes
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class or MRImageStorage)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_factory_objects_read_back_with_the_sandbox_header_reader() -> None:
    """The factory's bytes parse identically with pydicom and the store's own reader."""
    import pydicom
    from pydicom.uid import ImplicitVRLittleEndian

    from xnatio.sandbox.dicom_header import read_header

    for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        data = make_dicom(
            study=uid(),
            series_number=12,
            instance=3,
            transfer_syntax=ts,
            patient_comments="Project:P Session:S1",
        )
        ref = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        h, prefix = read_header(io.BytesIO(data))
        assert data.startswith(prefix)
        assert h.sop_instance_uid == ref.SOPInstanceUID
        assert h.study_instance_uid == ref.StudyInstanceUID
        assert h.series_number == "12"
        assert h.instance_number == "3"
        assert h.patient_comments == "Project:P Session:S1"
        assert h.transfer_syntax_uid == ts


@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"])
def test_header_reader_big_endian_and_deflated(ts: str) -> None:
    from xnatio.sandbox.dicom_header import read_header

    study = uid()
    data = make_dicom(study=study, series_number=4, instance=9, transfer_syntax=ts)
    h, _ = read_header(io.BytesIO(data))
    assert h.study_instance_uid == study
    assert h.series_number == "4"
    assert h.instance_number == "9"
    assert h.sop_class_uid == MRImageStorage


def test_header_reader_large_header_and_no_preamble() -> None:
    """A header bigger than the first read, and a bare dataset without preamble or meta."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from xnatio.sandbox.dicom_header import read_header

    study = uid()
    small = make_dicom(study=study)
    ds0 = pydicom.dcmread(io.BytesIO(small))
    ds0.add_new(0x00090010, "LO", "XNATIO")
    ds0.add_new(0x00091001, "OB", b"x" * 50_000)  # pushes the study UID past the first read
    out = io.BytesIO()
    ds0.save_as(out, enforce_file_format=True)
    big = out.getvalue()
    h, prefix = read_header(io.BytesIO(big))
    assert h.study_instance_uid == study
    assert big.startswith(prefix)
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.StudyInstanceUID = study
    raw = DicomBytesIO()
    raw.is_little_endian = True
    raw.is_implicit_VR = True
    write_dataset(raw, ds)
    h, _ = read_header(io.BytesIO(raw.getvalue()))
    assert (h.sop_instance_uid, h.study_instance_uid) == ("1.2.3.4", study)
