"""Helpers for the sandbox tests: small DICOM objects, archives built in memory, a client."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator

import httpx
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from xnatio.sandbox import Sandbox

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def make_dataset(
    study_uid: str,
    series_uid: str,
    number: int,
    *,
    series_number: int = 1,
    patient_comments: str = "",
    pixel_bytes: int = 64,
) -> Dataset:
    """A small MR image dataset with file meta (explicit VR little endian)."""
    ds = Dataset()
    ds.SOPClassUID = MR_IMAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = number
    ds.Modality = "MR"
    ds.PatientID = "PID001"
    ds.PatientName = "Test^Patient"
    ds.StudyDate = "20240101"
    ds.SeriesDescription = "T1"
    if patient_comments:
        ds.PatientComments = patient_comments
    ds.Columns = min(max(pixel_bytes // 2, 1), 512)
    ds.Rows = max(pixel_bytes // 2 // ds.Columns, 1)
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(256))[:pixel_bytes].ljust(pixel_bytes, b"\0")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    """The dataset in DICOM file format."""
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def make_files(
    n: int, *, series: int = 1, study_uid: str | None = None, pixel_bytes: int = 64
) -> dict[str, bytes]:
    """``n`` DICOM files per series of one study, keyed by an archive path."""
    study = study_uid or generate_uid()
    files: dict[str, bytes] = {}
    for s in range(1, series + 1):
        series_uid = generate_uid()
        for i in range(1, n + 1):
            ds = make_dataset(study, series_uid, i, series_number=s, pixel_bytes=pixel_bytes)
            files[f"s{s}/IM{i:04d}.dcm"] = dicom_bytes(ds)
    return files


def tar_bytes(files: dict[str, bytes], *, gz: bool = False) -> bytes:
    """A tar (or tar.gz) holding ``files``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gz else "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """A zip holding ``files``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


IMPORT = "/data/services/import"


def import_params(**extra: str) -> dict[str, str]:
    """The usual DICOM-zip query for project P1, subject S1, session E1."""
    base = {
        "import-handler": "DICOM-zip",
        "inbody": "true",
        "project": "P1",
        "subject": "S1",
        "session": "E1",
    }
    base.update(extra)
    return base


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    """An httpx client for the ``sandbox`` fixture, with admin/admin Basic credentials."""
    with httpx.Client(base_url=sandbox.url, auth=("admin", "admin"), timeout=30) as c:
        yield c
