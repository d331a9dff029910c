"""The sandbox's own SCP (xnatio.dimse.server) against independent peers and broken senders.

DCMTK ``storescu``/``echoscu`` and pynetdicom's SCU must both work; negotiation, PDU sizes,
aborts and half-sent data sets are checked over real associations on loopback.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.dicom_layout import dataset_offset
from xnatio.dimse.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    PDV_COMMAND,
    PDV_LAST,
    associate_rq,
    command_us,
    encode_command,
    parse_associate,
    parse_command,
    pdv_header,
    uid_bytes,
)
from xnatio.sandbox import Sandbox

from .conftest import MR_IMAGE, dicom_bytes, make_dataset

ROUTED = "Project:P1 Subject:S1 Session:E1"
needs_dcmtk = pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK not installed")


@pytest.fixture
def scp(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox(dicom_port=0, dicom_aet="XNATSCP")


def _port(sandbox: Sandbox) -> int:
    port = sandbox.dicom_port
    assert port is not None
    return port


def _write(folder: Path, n: int, *, pixel_bytes: int = 64, comments: str = ROUTED) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    uids = []
    for i in range(1, n + 1):
        ds = make_dataset(study, series, i, patient_comments=comments, pixel_bytes=pixel_bytes)
        (folder / f"IM{i:03d}.dcm").write_bytes(dicom_bytes(ds))
        uids.append(str(ds.SOPInstanceUID))
    return uids


def _stored(sandbox: Sandbox) -> list[Path]:
    return sorted(p for p in Path(sandbox.data_dir).rglob("*.dcm"))


def _dataset_bytes(path: Path) -> bytes:
    """The data set of a DICOM file, without preamble and file meta group."""
    raw = path.read_bytes()
    return raw[dataset_offset(raw) :]


@needs_dcmtk
def test_dcmtk_echoscu_and_storescu(scp: Sandbox, tmp_path: Path) -> None:
    port = str(_port(scp))
    echo = subprocess.run(
        ["echoscu", "-aec", "XNATSCP", "127.0.0.1", port], capture_output=True, timeout=30
    )
    assert echo.returncode == 0, echo.stderr
    uids = _write(tmp_path / "in", 5, pixel_bytes=40_000)
    store = subprocess.run(
        ["storescu", "-aec", "XNATSCP", "-aet", "DCMTKSCU", "+sd", "127.0.0.1", port, "in"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert store.returncode == 0, store.stderr
    rows = scp.store.prearchive_rows("P1")
    assert [(r["subject"], r["name"]) for r in rows] == [("S1", "E1")]
    files = scp.store.prearchive_files("P1", rows[0]["timestamp"], rows[0]["folderName"])
    assert sorted(f["sop_instance_uid"] for f in files) == sorted(uids)
    # The data set is stored byte for byte; the meta header names the sender.
    by_uid = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in _stored(scp)}
    for src in sorted((tmp_path / "in").iterdir()):
        uid = str(pydicom.dcmread(src).SOPInstanceUID)
        assert _dataset_bytes(by_uid[uid]) == _dataset_bytes(src)
        meta = pydicom.dcmread(by_uid[uid]).file_meta
        assert meta.SourceApplicationEntityTitle == "DCMTKSCU"
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian


@needs_dcmtk
def test_dcmtk_unknown_called_ae_is_rejected(scp: Sandbox) -> None:
    echo = subprocess.run(
        ["echoscu", "-aec", "NOTXNAT", "127.0.0.1", str(_port(scp))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert echo.returncode != 0
    assert "Called AE Title Not Recognized" in echo.stdout + echo.stderr


@needs_dcmtk
def test_dcmtk_dcmsend_compressed_files_are_accepted_as_they_are(
    scp: Sandbox, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    names = [
        "JPEG2000.dcm",
        "MR_small_RLE.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "JPEG-lossy.dcm",
        "JPEGLSNearLossless_16.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
    ]  # distinct SOP Instance UIDs (the MR_small variants share one with MR_small_RLE)
    for name in names:
        bundled = get_testdata_file(name, download=False)
        assert isinstance(bundled, str)
        shutil.copy(bundled, folder / name)
    store = subprocess.run(
        ["dcmsend", "-aec", "XNATSCP", "+sd", "127.0.0.1", str(_port(scp)), str(folder)],
        capture_output=True,
        timeout=60,
    )
    assert store.returncode == 0, store.stderr
    stored = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in _stored(scp)}
    assert len(stored) == len(names)
    for name in names:
        src = folder / name
        ds = pydicom.dcmread(src)
        got = stored[str(ds.SOPInstanceUID)]
        back = pydicom.dcmread(got)
        assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID, name
        # dcmsend writes the data set from its own model (lengths may change, trailing padding
        # goes): compare elements.
        ds.pop(0xFFFCFFFC, None)
        assert back == ds, name
        assert back.PixelData == ds.PixelData, name


def test_negotiation_accepts_storage_and_verification_only(scp: Sandbox) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(MR_IMAGE, ["1.2.840.10008.1.2.4.70", ExplicitVRLittleEndian])
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.3.4.5.6"])  # unknown syntax
    ae.add_requested_context("1.2.840.10008.5.1.4.1.2.1.1", [ExplicitVRLittleEndian])  # C-FIND
    ae.add_requested_context("1.3.12.2.1107.5.9.1", [ImplicitVRLittleEndian])  # Siemens CSA
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", _port(scp), ae_title="XNATSCP")
    assert assoc.is_established
    results = {
        (str(cx.abstract_syntax), cx.result, str(cx.transfer_syntax[0]))
        for cx in assoc.rejected_contexts + assoc.accepted_contexts
    }
    assoc.release()
    assert (MR_IMAGE, 0, "1.2.840.10008.1.2.4.70") in results  # the first proposed one wins
    assert any(a == "1.2.840.10008.5.1.4.1.1.2" and r == 4 for a, r, _ in results)
    assert any(a == "1.2.840.10008.5.1.4.1.2.1.1" and r == 3 for a, r, _ in results)
    assert ("1.3.12.2.1107.5.9.1", 0, ImplicitVRLittleEndian) in results
    assert any(a == Verification and r == 0 for a, r, _ in results)


def test_max_pdu_is_negotiated_both_ways(scp: Sandbox) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.maximum_pdu_size = 4096  # our responses must fit; the data set comes in 4 KB pieces too
    ae.add_requested_context(MR_IMAGE, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", _port(scp), ae_title="XNATSCP", max_pdu=4096)
    assert assoc.is_established
    assert assoc.acceptor.maximum_length == 1 << 20  # what the SCP announces
    study, series = generate_uid(), generate_uid()
    ds = make_dataset(study, series, 1, patient_comments=ROUTED, pixel_bytes=100_000)
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0x0000
    (stored,) = _stored(scp)
    assert pydicom.dcmread(stored).PixelData == ds.PixelData


# -- a raw sender, for what well-behaved peers never do ---------------------------------------


class RawScu:
    """Speaks just enough DICOM by hand to stop anywhere."""

    def __init__(self, port: int, called: str = "XNATSCP") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(
            associate_rq(called, "RAWSCU", {1: (MR_IMAGE, [ExplicitVRLittleEndian])}, 16384)
        )
        pdu_type, body = self.read_pdu()
        assert pdu_type == A_ASSOCIATE_AC
        assert parse_associate(body).contexts[0].result == 0

    def read_pdu(self) -> tuple[int, bytes]:
        head = self._exact(6)
        pdu_type, _, length = struct.unpack(">BBI", head)
        return pdu_type, self._exact(length)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def command(self, uid: str) -> None:
        cmd = encode_command(
            [
                (0x0002, uid_bytes(MR_IMAGE)),
                (0x0100, struct.pack("<H", 1)),
                (0x0110, struct.pack("<H", 1)),
                (0x0700, struct.pack("<H", 0)),
                (0x0800, struct.pack("<H", 0)),
                (0x1000, uid_bytes(uid)),
            ]
        )
        self.sock.sendall(pdv_header(1, PDV_COMMAND | PDV_LAST, len(cmd)) + cmd)

    def data(self, chunk: bytes, last: bool) -> None:
        self.sock.sendall(pdv_header(1, PDV_LAST if last else 0, len(chunk)) + chunk)

    def response(self) -> tuple[int, str]:
        """Status and error comment of the next (single-PDV) response."""
        pdu_type, body = self.read_pdu()
        assert pdu_type == 0x04
        assert body[5] == PDV_COMMAND | PDV_LAST
        fields = parse_command(body[6:])
        return command_us(fields, 0x0900) or 0, fields.get(0x0902, b"").decode().strip()


def _data_set(comments: str = ROUTED) -> tuple[str, bytes]:
    ds = make_dataset(
        generate_uid(), generate_uid(), 1, patient_comments=comments, pixel_bytes=4000
    )
    raw = dicom_bytes(ds)
    return str(ds.SOPInstanceUID), raw[dataset_offset(raw) :]


@pytest.mark.parametrize("how", ["abort", "close"])
def test_a_sender_that_stops_mid_data_set_stores_nothing(scp: Sandbox, how: str) -> None:
    uid, data = _data_set()
    raw = RawScu(_port(scp))
    raw.command(uid)
    raw.data(data[:1000], last=False)
    if how == "abort":
        raw.sock.sendall(struct.pack(">BBIBBBB", A_ABORT, 0, 4, 0, 0, 0, 0))
    raw.sock.close()
    # The SCP carries on: a full instance on a new association is stored, the torn one is not.
    uid2, data2 = _data_set()
    again = RawScu(_port(scp))
    again.command(uid2)
    half = len(data2) // 2 & ~1
    again.data(data2[:half], last=False)
    again.data(data2[half:], last=True)
    assert again.response() == (0x0000, "")
    again.sock.close()
    uids = [str(pydicom.dcmread(p).SOPInstanceUID) for p in _stored(scp)]
    assert uids == [uid2]
    assert not [p for p in Path(scp.data_dir).rglob("*.part")]


def test_stop_cuts_open_associations(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(dicom_port=0, dicom_aet="XNATSCP")
    raw = RawScu(_port(sandbox))
    uid, data = _data_set()
    raw.command(uid)
    raw.data(data[:100], last=False)
    sandbox.stop()  # returns although the association is still mid data set
    with pytest.raises((ConnectionError, OSError)):
        raw.read_pdu()
    raw.sock.close()


def test_unreadable_data_is_c000_with_the_reason(scp: Sandbox) -> None:
    raw = RawScu(_port(scp))
    raw.command(generate_uid())
    raw.data(b"\x00" * 64, last=True)
    status, comment = raw.response()
    assert status == 0xC000
    assert comment.startswith("unable to read DICOM object")
    uid, data = _data_set()  # the association carries on
    raw.command(uid)
    raw.data(data, last=True)
    assert raw.response() == (0x0000, "")
    raw.sock.close()
