"""A sandbox holding sessions that xio uploaded over both transports, for the tests that drive
XNAT's Python clients (xnatpy, pyxnat) against it.

* ``P1/SUBJ_MR/SUBJ_MR_MR``: an MR session (two series of three) sent through the import service
  (:func:`xnatio.uploaders.upload_dicom_parallel_rest`), committed by xio;
* ``P2/SUBJ_CT/SUBJ_CT_CT``: a CT session (one series of four) sent with C-STORE
  (:func:`xnatio.uploaders.send_dicom_store`) to a project that auto-archives.

The uploaded files are kept by SOP Instance UID so a test can compare what a client downloads with
what was sent: the whole file for REST uploads; for C-STORE, the data set only, since a DICOM
receiver writes its own file meta header (XNAT's does too).
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom

from xnatio.config import XnatConfig
from xnatio.sandbox import Sandbox, SandboxConfig
from xnatio.synth import write_session
from xnatio.uploaders import send_dicom_store, upload_dicom_parallel_rest

__all__ = ["CT", "MR", "Site", "by_uid", "data_set", "open_site", "zip_members"]

MR = ("P1", "SUBJ_MR", "SUBJ_MR_MR")
CT = ("P2", "SUBJ_CT", "SUBJ_CT_CT")


@dataclass(frozen=True)
class Site:
    """The running sandbox, what was uploaded, and a scratch folder."""

    sandbox: Sandbox
    mr_files: dict[str, bytes]  # SOP Instance UID -> the file as uploaded
    ct_files: dict[str, bytes]
    scratch: Path

    @property
    def url(self) -> str:
        """The sandbox's base URL."""
        return self.sandbox.url


def data_set(data: bytes) -> bytes:
    """A DICOM file's data set: what follows the preamble and the file meta group."""
    assert data[128:132] == b"DICM"
    # (0002,0000) UL 4 <group length>: explicit VR little endian, 12 bytes from offset 132.
    (group_length,) = struct.unpack_from("<I", data, 132 + 8)
    return data[132 + 12 + group_length :]


def zip_members(data: bytes) -> dict[str, bytes]:
    """Every member of a zip, by name."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def by_uid(files: list[bytes]) -> dict[str, bytes]:
    """DICOM files by their SOP Instance UID."""
    out = {}
    for data in files:
        uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        out[uid] = data
    return out


def _route_in_comments(folder: Path, where: tuple[str, str, str]) -> None:
    """Name the session in each file's Patient Comments, as XNAT's receiver reads them (§6.2),
    so xio sends the data sets unchanged (no routing tags of its own)."""
    project, subject, session = where
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientComments = f"Project:{project} Subject:{subject} Session:{session}"
        ds.save_as(path, enforce_file_format=True)


def _sources(folder: Path) -> dict[str, bytes]:
    return by_uid([p.read_bytes() for p in sorted(folder.rglob("*.dcm"))])


@contextmanager
def open_site(scratch: Path) -> Iterator[Site]:
    """Start a sandbox, upload the two sessions with xio, yield the site, stop the sandbox."""
    config = SandboxConfig(
        data_dir=scratch / "data",
        port=0,
        dicom_port=0,
        projects=("P1", "P2"),
        ticker_interval=0.2,
        idle_interval=1.0,
    )
    with Sandbox(config) as sandbox:
        sandbox.store.set_prearchive_code(CT[0], 4)  # C-STORE sessions archive on their own
        write_session(scratch / "mr", series=2, instances=3, modality="MR", rows=16, columns=16)
        write_session(
            scratch / "ct", series=1, instances=4, modality="CT", rows=16, columns=16,
            patient_id="CT001", seed=7,
        )  # fmt: skip
        _route_in_comments(scratch / "ct", CT)
        rest = upload_dicom_parallel_rest(
            server=sandbox.url, username="admin", password="admin", source_dir=scratch / "mr",
            project=MR[0], subject=MR[1], session=MR[2], num_batches=2, upload_workers=2,
            journal=False,
        )  # fmt: skip
        assert rest.success, rest
        assert sandbox.dicom_port is not None
        store = send_dicom_store(
            source_dir=scratch / "ct", host="127.0.0.1", port=sandbox.dicom_port,
            project=CT[0], subject=CT[1], session=CT[2], num_batches=2, journal=False,
            routing_tags=False, server=XnatConfig(sandbox.url, "admin", "admin"), wait=60,
        )  # fmt: skip
        assert store.success, store
        yield Site(sandbox, _sources(scratch / "mr"), _sources(scratch / "ct"), scratch)
