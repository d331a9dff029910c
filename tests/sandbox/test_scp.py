"""The sandbox's DICOM SCP over real associations (docs/xnat-behaviour.md §6): routing,
statuses, faults."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from xnatio.sandbox import Sandbox

from .conftest import MR_IMAGE, make_dataset

ROUTED = "Project:P1 Subject:S1 Session:E1"


@pytest.fixture
def scp(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox(dicom_port=0, dicom_aet="XNATSCP")


def _associate(sandbox: Sandbox, called: str | None = None, *, jpeg: bool = False) -> Association:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(MR_IMAGE, [ExplicitVRLittleEndian])
    if jpeg:
        ae.add_requested_context(MR_IMAGE, [JPEGBaseline8Bit])
    ae.add_requested_context(Verification)
    port = sandbox.dicom_port
    assert port is not None
    return ae.associate("127.0.0.1", port, ae_title=called or sandbox.aet)


@pytest.fixture
def assoc(scp: Sandbox) -> Iterator[Association]:
    association = _associate(scp)
    assert association.is_established
    yield association
    if association.is_established:
        association.release()


def _datasets(n: int, comments: str = ROUTED) -> list[Dataset]:
    study, series = generate_uid(), generate_uid()
    return [make_dataset(study, series, i, patient_comments=comments) for i in range(1, n + 1)]


def test_echo(assoc: Association) -> None:
    status = assoc.send_c_echo()
    assert status.Status == 0x0000


def test_store_routes_by_patient_comments(scp: Sandbox, assoc: Association) -> None:
    for ds in _datasets(3):
        status = assoc.send_c_store(ds)
        assert status.Status == 0x0000
    rows = scp.store.prearchive_rows("P1")
    assert [(r["subject"], r["name"]) for r in rows] == [("S1", "E1")]
    files = scp.store.prearchive_files("P1", rows[0]["timestamp"], rows[0]["folderName"])
    assert len(files) == 3


def test_unroutable_goes_to_unassigned_and_still_succeeds(scp: Sandbox, assoc: Association) -> None:
    ds = _datasets(1, comments="Project:NOSUCH")[0]
    assert assoc.send_c_store(ds).Status == 0x0000
    assert scp.store.prearchive_rows("P1") == []
    assert len(scp.store.prearchive_rows(None)) == 1


def test_unknown_called_ae_is_rejected(scp: Sandbox) -> None:
    association = _associate(scp, called="SOMEONE")
    assert association.is_rejected


def test_compressed_syntax_is_stored_as_sent(scp: Sandbox) -> None:
    association = _associate(scp, jpeg=True)
    assert association.is_established
    ds = _datasets(1)[0]
    fragment = b"\xff\xd8" + bytes(range(200)) + b"\xff\xd9"  # opaque bytes: never decoded
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    status = association.send_c_store(ds)
    association.release()
    assert status.Status == 0x0000
    stored = [p for p in Path(scp.data_dir).rglob("*.dcm")]
    assert len(stored) == 1
    back = pydicom.dcmread(stored[0])
    assert back.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert back.file_meta.SourceApplicationEntityTitle == "TESTSCU"
    assert fragment in back.PixelData


def test_abort_fault_after_n_instances(scp: Sandbox, assoc: Association) -> None:
    scp.faults.scp_abort(after_instances=1)
    datasets = _datasets(3)
    assert assoc.send_c_store(datasets[0]).Status == 0x0000
    status = assoc.send_c_store(datasets[1])
    assert "Status" not in status  # no answer: the association was aborted
    assoc.join(timeout=10)  # the requestor's thread ends once the A-ABORT is processed
    assert assoc.is_aborted
    again = _associate(scp)
    assert again.send_c_store(datasets[2]).Status == 0x0000  # used up: next one is fine
    again.release()


def test_status_fault_for_next_k_instances(scp: Sandbox, assoc: Association) -> None:
    scp.faults.scp_status(0xA700, count=2)
    statuses = [assoc.send_c_store(ds).Status for ds in _datasets(3)]
    assert statuses == [0xA700, 0xA700, 0x0000]


def test_write_failure_is_c000(scp: Sandbox, assoc: Association) -> None:
    scp.faults.disk_full = True
    assert assoc.send_c_store(_datasets(1)[0]).Status == 0xC000
