"""send_dicom_store against a pynetdicom Storage SCP in this process, with injected faults."""

from __future__ import annotations

import hashlib
import io
import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from tests.dicom_layout import dataset_offset
from xnatio.dicom.dataset import file_meta_header
from xnatio.errors import ConnectionFailedError, InputError
from xnatio.inventory import build_inventory
from xnatio.progress import ProgressEvent
from xnatio.synth import write_session
from xnatio.transport.dicom_store import check_receiver, status_category, status_meaning
from xnatio.uploaders import DicomStoreResult, InstanceOutcome, send_dicom_store

ROUTING = "Project:P1 Subject:S1 Session:E1"
# What the SCP does with the n-th request for an instance: a status, "abort", or a delay (s).
Behaviour = Callable[[str, int], "int | str | float"]


@dataclass
class Received:
    sop_instance_uid: str
    transfer_syntax: str
    data: bytes


class FakeScp:
    """A pynetdicom Storage SCP on a free loopback port, recording what it stores."""

    def __init__(self, ae: AE) -> None:
        self.ae = ae
        self.behaviour: Behaviour = lambda uid, n: 0x0000
        self.received: list[Received] = []
        self.requests: Counter[str] = Counter()
        self.order: list[tuple[str, int]] = []  # (instance, attempt) as the requests came
        self.lock = threading.Lock()
        self.server: ThreadedAssociationServer | None = None
        self.port = 0

    def _on_store(self, event: evt.Event) -> int:
        request = event.request
        assert isinstance(request, C_STORE)
        uid = str(request.AffectedSOPInstanceUID)
        with self.lock:
            self.requests[uid] += 1
            n = self.requests[uid]
            self.order.append((uid, n))
        action = self.behaviour(uid, n)
        if action == "abort":
            event.assoc.abort()
            return 0xA700
        if isinstance(action, float):
            time.sleep(action)
            action = 0
        assert isinstance(action, int)
        if status_category(action) != "failure":
            raw = request.DataSet
            assert raw is not None
            with self.lock:
                self.received.append(
                    Received(uid, str(event.context.transfer_syntax), raw.getvalue())
                )
        return action

    def start(self) -> None:
        self.server = self.ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        assert self.server is not None
        self.port = self.server.server_address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def _storage_ae(ae_title: str = "XNAT") -> AE:
    ae = AE(ae_title=ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.network_timeout = 5
    ae.acse_timeout = 5
    return ae


@pytest.fixture
def make_scp() -> Iterator[Callable[[AE], FakeScp]]:
    started: list[FakeScp] = []

    def factory(ae: AE) -> FakeScp:
        scp = FakeScp(ae)
        scp.start()
        started.append(scp)
        return scp

    yield factory
    for scp in started:
        scp.stop()


@pytest.fixture
def scp(make_scp: Callable[[AE], FakeScp]) -> FakeScp:
    return make_scp(_storage_ae())


@pytest.fixture
def session(tmp_path: Path) -> Path:
    out = tmp_path / "session"
    write_session(out, series=2, instances=4, rows=16, columns=16)
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _send(source: Path, port: int, **kwargs: object) -> DicomStoreResult:
    options: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "project": "P1",
        "subject": "S1",
        "session": "E1",
        "num_batches": 3,
        "timeout": 5.0,
    }
    options.update(kwargs)
    return send_dicom_store(source_dir=source, **options)  # type: ignore[arg-type]


def _source_dataset(path: Path) -> Dataset:
    return pydicom.dcmread(path)


def test_sends_every_instance_with_routing_and_leaves_source_untouched(
    scp: FakeScp, session: Path
) -> None:
    before = _digest(session)
    events: list[ProgressEvent] = []
    result = _send(session, scp.port, progress_callback=events.append)
    assert result.success, result.errors
    assert (result.total_files, result.sent, result.warned, result.failed) == (8, 8, 0, 0)
    assert result.bytes_sent == sum(p.stat().st_size for p in session.rglob("*.dcm"))
    assert 1 <= result.associations <= 3
    assert _digest(session) == before
    by_uid = {r.sop_instance_uid: r for r in scp.received}
    assert len(by_uid) == 8
    for path in session.rglob("*.dcm"):
        source = _source_dataset(path)
        got = by_uid[source.SOPInstanceUID]
        assert got.transfer_syntax == source.file_meta.TransferSyntaxUID
        sent = pydicom.dcmread(io.BytesIO(got.data), force=True)
        sent.file_meta = FileMetaDataset()
        sent.file_meta.TransferSyntaxUID = UID(got.transfer_syntax)
        assert sent.PatientComments == ROUTING
        del sent.PatientComments
        source.pop("PatientComments", None)
        assert sent == source
    for o in result.outcomes:
        assert (o.status, o.meaning, o.attempts) == (0, "Success", 1)
        assert o.association is not None
    uploads = [e for e in events if e.phase == "uploading"]
    assert [e.current for e in uploads] == sorted(e.current for e in uploads)
    assert uploads[-1].current == uploads[-1].total == 8
    assert uploads[-1].bytes_sent == uploads[-1].bytes_total == result.bytes_sent


def test_without_routing_tags_the_file_bytes_are_sent_as_they_are(
    scp: FakeScp, session: Path
) -> None:
    result = _send(session, scp.port, routing_tags=False, project=None, subject=None, session=None)
    assert result.success
    by_uid = {r.sop_instance_uid: r.data for r in scp.received}
    for path in session.rglob("*.dcm"):
        data = path.read_bytes()
        uid = _source_dataset(path).SOPInstanceUID
        assert by_uid[uid] == data[dataset_offset(data) :]


def test_warning_statuses_are_counted_apart(scp: FakeScp, session: Path) -> None:
    uids = sorted(_source_dataset(p).SOPInstanceUID for p in session.rglob("*.dcm"))
    warn = {uids[0]: 0xB000, uids[1]: 0xB007, uids[2]: 0xB006}
    scp.behaviour = lambda uid, n: warn.get(uid, 0)
    result = _send(session, scp.port)
    assert result.success
    assert (result.sent, result.warned, result.failed) == (8, 3, 0)
    statuses = {o.sop_instance_uid: (o.status, o.meaning) for o in result.outcomes}
    assert statuses[uids[0]] == (0xB000, "Warning: Coercion of data elements")
    assert statuses[uids[1]] == (0xB007, "Warning: Data set does not match SOP class")
    assert statuses[uids[2]] == (0xB006, "Warning: Elements discarded")
    assert sum(n for n in scp.requests.values()) == 8  # warnings are not retried


def test_out_of_resources_is_retried_aside_while_the_association_goes_on(
    scp: FakeScp, session: Path
) -> None:
    """0xA700 is transient (PS3.4 B.2.3): the instance is tried again after a pause, but the
    association is kept and sends the next instance at once (issue 11, finding 7)."""
    scp.behaviour = lambda uid, n: 0xA700 if n == 1 and int(uid[-1]) % 2 == 0 else 0
    events: list[ProgressEvent] = []
    result = _send(session, scp.port, num_batches=1, progress_callback=events.append)
    assert result.success, result.errors
    retried = {o.sop_instance_uid for o in result.outcomes if o.attempts == 2}
    assert retried
    assert retried == {uid for uid, n in scp.requests.items() if n == 2}
    assert result.associations == 1  # no association was given up for a status
    firsts = [i for i, (_, n) in enumerate(scp.order) if n == 1]
    for i, (uid, n) in enumerate(scp.order):
        if uid in retried and n == 1 and any(j > i for j in firsts):
            assert scp.order[i + 1] != (uid, 2), scp.order  # the others did not wait
    sending = [e for e in events if e.phase == "uploading" and e.batch is not None]
    assert sending[-1].retries == len(retried)


def test_out_of_resources_is_retried_a_bounded_number_of_times(scp: FakeScp, session: Path) -> None:
    stuck = _source_dataset(sorted(session.rglob("*.dcm"))[2]).SOPInstanceUID
    scp.behaviour = lambda uid, n: 0xA702 if uid == stuck else 0
    result = _send(session, scp.port, num_batches=2, max_attempts=3)
    assert (result.sent, result.failed) == (7, 1)
    failed = next(o for o in result.outcomes if o.category == "failure")
    assert (failed.sop_instance_uid, failed.status, failed.attempts) == (stuck, 0xA702, 3)
    assert scp.requests[stuck] == 3
    assert result.associations == 2


@pytest.mark.parametrize("status", [0xC000, 0xA900, 0x0122, 0x0124])
def test_a_permanent_failure_is_not_retried(scp: FakeScp, session: Path, status: int) -> None:
    """Cannot understand, data set does not match its SOP class, SOP class refused, not
    authorised: the same bytes get the same answer, so one attempt is final."""
    bad = _source_dataset(next(iter(sorted(session.rglob("*.dcm"))))).SOPInstanceUID
    scp.behaviour = lambda uid, n: status if uid == bad else 0
    result = _send(session, scp.port, max_attempts=3)
    assert not result.success
    assert (result.sent, result.failed) == (7, 1)
    failed = [o for o in result.outcomes if o.category == "failure"]
    assert [(o.sop_instance_uid, o.status, o.attempts) for o in failed] == [(bad, status, 1)]
    assert failed[0].meaning == status_meaning(status)
    assert len(result.errors) == 1
    assert f"0x{status:04X} {status_meaning(status)} after 1 attempt(s)" in result.errors[0]
    assert scp.requests[bad] == 1
    assert result.associations == 3  # nothing was given up for a status


def test_an_aborted_association_is_resent(scp: FakeScp, session: Path) -> None:
    uids = sorted(_source_dataset(p).SOPInstanceUID for p in session.rglob("*.dcm"))
    scp.behaviour = lambda uid, n: "abort" if uid == uids[3] and n == 1 else 0
    result = _send(session, scp.port, num_batches=1)
    assert result.success, result.errors
    assert {r.sop_instance_uid for r in scp.received} == set(uids)
    outcome = next(o for o in result.outcomes if o.sop_instance_uid == uids[3])
    assert outcome.attempts == 2
    assert result.associations == 2


def test_a_slow_response_times_out_and_is_resent(scp: FakeScp, session: Path) -> None:
    uids = sorted(_source_dataset(p).SOPInstanceUID for p in session.rglob("*.dcm"))
    scp.behaviour = lambda uid, n: 1.0 if uid == uids[0] and n == 1 else 0
    result = _send(session, scp.port, num_batches=2, timeout=0.4)
    assert result.success, result.errors
    outcome = next(o for o in result.outcomes if o.sop_instance_uid == uids[0])
    assert outcome.attempts == 2


def test_a_slow_receiver_within_the_timeout_is_fine(scp: FakeScp, session: Path) -> None:
    scp.behaviour = lambda uid, n: 0.05
    result = _send(session, scp.port, num_batches=4, timeout=2.0)
    assert result.success
    assert all(o.attempts == 1 for o in result.outcomes)


def test_rejected_calling_ae_is_one_clear_line(
    make_scp: Callable[[AE], FakeScp], session: Path
) -> None:
    ae = _storage_ae()
    ae.require_calling_aet = ["TRUSTED"]
    scp = make_scp(ae)
    with pytest.raises(ConnectionFailedError) as info:
        _send(session, scp.port)
    message = info.value.message
    assert "calling AE title not recognised" in message
    assert f"127.0.0.1:{scp.port}" in message
    assert "\n" not in message
    assert not scp.requests


def test_unknown_called_ae_is_one_clear_line(
    make_scp: Callable[[AE], FakeScp], session: Path
) -> None:
    ae = _storage_ae("XNAT")
    ae.require_called_aet = True
    scp = make_scp(ae)
    with pytest.raises(ConnectionFailedError, match="called AE title not recognised"):
        _send(session, scp.port, called_aet="NOTXNAT")
    assert _send(session, scp.port, called_aet="XNAT").success


FIX_ADDRESS = "check --dicom-host/--dicom-port and that the receiver is running"


def test_closed_port_is_a_connection_failure(session: Path) -> None:
    with pytest.raises(ConnectionFailedError) as info:
        _send(session, _free_port())
    message = info.value.message
    assert "connection refused" in message and FIX_ADDRESS in message
    assert "\n" not in message


def test_connect_timeout_says_how_to_fix_it(session: Path) -> None:
    # A listener that never accepts, its backlog already full: SYNs go unanswered.
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        filler.connect(("127.0.0.1", port))
        t0 = time.monotonic()
        with pytest.raises(ConnectionFailedError) as info:
            _send(session, port, timeout=0.3)
        assert time.monotonic() - t0 < 5
    message = info.value.message
    assert "connection timed out" in message and FIX_ADDRESS in message
    assert f"127.0.0.1:{port}" in message


def test_check_receiver_echoes_and_sends_nothing(
    make_scp: Callable[[AE], FakeScp], session: Path
) -> None:
    ae = _storage_ae("XNAT")
    ae.require_called_aet = True
    scp = make_scp(ae)
    check_receiver(host="127.0.0.1", port=scp.port, timeout=5.0)
    with pytest.raises(ConnectionFailedError, match="called AE title not recognised"):
        check_receiver(host="127.0.0.1", port=scp.port, called_aet="NOTXNAT", timeout=5.0)
    with pytest.raises(ConnectionFailedError, match="connection refused; check --dicom-host"):
        check_receiver(host="127.0.0.1", port=_free_port(), timeout=5.0)
    with pytest.raises(InputError, match="calling AE title"):
        check_receiver(host="127.0.0.1", port=scp.port, calling_aet="X" * 17)
    assert not scp.requests
    # What send_dicom_store does after its own check, when the caller made it.
    assert _send(session, scp.port, echo=False).success


def test_bad_labels_are_refused_before_connecting(session: Path) -> None:
    port = _free_port()  # nothing listens: a connection attempt would fail differently
    with pytest.raises(InputError, match="project label 'my project'"):
        _send(session, port, project="my project")
    with pytest.raises(InputError, match="session label"):
        _send(session, port, session="E1.v2")
    with pytest.raises(InputError, match="routing tags need"):
        _send(session, port, subject=None)


def test_a_refused_transfer_syntax_names_the_files(
    make_scp: Callable[[AE], FakeScp], tmp_path: Path
) -> None:
    mixed = tmp_path / "mixed"
    write_session(mixed, series=1, instances=6, rows=16, columns=16, transfer_syntax="mixed")
    ae = AE(ae_title="XNAT")
    ae.add_supported_context(Verification)
    ae.add_supported_context(MRImageStorage, ExplicitVRLittleEndian)
    scp = make_scp(ae)
    result = _send(mixed, scp.port)
    implicit = {
        str(p.relative_to(mixed))
        for p in mixed.rglob("*.dcm")
        if _source_dataset(p).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    }
    assert implicit
    assert result.failed == len(implicit)
    assert result.sent == 6 - len(implicit)
    failed = {o.path for o in result.outcomes if o.category == "failure"}
    assert failed == implicit
    assert len(result.errors) == 1
    line = result.errors[0]
    assert "transfer syntax not supported" in line
    assert "MR Image Storage" in line
    assert "Implicit VR Little Endian" in line
    assert all(path in line for path in implicit)
    assert all(o.attempts == 0 for o in result.outcomes if o.category == "failure")


def _tiny(sop_class: str, folder: Path, i: int) -> None:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.PatientID = "P"
    ds.SeriesNumber = 1
    ds.InstanceNumber = i
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(folder / f"f{i:03d}.dcm", enforce_file_format=True)


def test_more_than_128_contexts_are_spread_over_associations(
    make_scp: Callable[[AE], FakeScp], tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    # Real storage SOP classes: the SCP only serves classes it knows.
    classes = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts][:130]
    assert len(classes) == 130
    for i, uid in enumerate(classes):
        _tiny(uid, folder, i)
    scp = make_scp(_storage_ae())
    result = _send(folder, scp.port, num_batches=1)
    assert result.success, result.errors[:3]
    assert result.sent == 130
    assert result.associations == 2
    assert len({r.sop_instance_uid for r in scp.received}) == 130


def test_never_more_associations_than_files(scp: FakeScp, tmp_path: Path) -> None:
    folder = tmp_path / "two"
    write_session(folder, series=1, instances=2, rows=16, columns=16)
    result = _send(folder, scp.port, num_batches=45)
    assert result.success
    assert result.associations <= 2


def test_status_meanings_follow_annex_b() -> None:
    assert status_meaning(0xA700) == "Refused: Out of resources"
    assert status_meaning(0xA7FF) == "Refused: Out of resources"
    assert status_meaning(0xC000) == "Error: Cannot understand"
    assert status_meaning(0xA900) == "Error: Data set does not match SOP class"
    assert [status_category(s) for s in (0, 0xB000, 0xB006, 0xB007, 0xA700, 0xC123)] == [
        "success",
        "warning",
        "warning",
        "warning",
        "failure",
        "failure",
    ]


def test_inventory_is_accepted_and_left_open(scp: FakeScp, session: Path) -> None:
    with build_inventory(session) as inv:
        result = send_dicom_store(
            inventory=inv, host="127.0.0.1", port=scp.port, routing_tags=False, echo=False
        )
        assert result.success
        with inv.source.open(inv.files[0].path) as fh:  # still usable
            assert len(fh.read(4)) == 4


def test_on_instance_reports_each_final_outcome_once(scp: FakeScp, session: Path) -> None:
    uids = sorted(_source_dataset(p).SOPInstanceUID for p in session.rglob("*.dcm"))

    # uids[0] fails for good (0xC000 is permanent), uids[1] succeeds on its second attempt
    # (0xA700 is transient), uids[2] warns.
    def behaviour(uid: str, n: int) -> int:
        if uid == uids[0]:
            return 0xC000
        if uid == uids[1]:
            return 0xA700 if n == 1 else 0
        return 0xB000 if uid == uids[2] else 0

    scp.behaviour = behaviour
    seen: list[tuple[InstanceOutcome, str, int]] = []
    lock = threading.Lock()
    events: list[ProgressEvent] = []

    def on_instance(outcome: InstanceOutcome) -> None:
        with lock:
            # Requests the SCP had seen for this instance when its outcome was reported.
            seen.append(
                (outcome, threading.current_thread().name, scp.requests[outcome.sop_instance_uid])
            )

    result = _send(
        session, scp.port, max_attempts=2, on_instance=on_instance, progress_callback=events.append
    )
    assert sorted(o.sop_instance_uid for o, _, _ in seen) == uids  # each exactly once
    assert {o.sop_instance_uid: o for o, _, _ in seen} == {
        o.sop_instance_uid: o for o in result.outcomes
    }
    assert all(name.startswith("xnatio-cstore-") for _, name, _ in seen)
    by_uid = {o.sop_instance_uid: (o.category, o.attempts, n) for o, _, n in seen}
    assert by_uid[uids[0]] == ("failure", 1, 1)  # permanent: its one attempt is the last
    assert by_uid[uids[1]] == ("success", 2, 2)
    assert by_uid[uids[2]] == ("warning", 1, 1)
    # Progress counts every instance: 7 stored (current), 1 failed.
    last = [e for e in events if e.phase == "uploading"][-1]
    assert (last.current, last.failed, last.total) == (7, 1, 8)


def test_on_instance_reports_instances_never_sent(session: Path) -> None:
    seen: list[InstanceOutcome] = []
    with pytest.raises(ConnectionFailedError):
        _send(session, _free_port(), on_instance=seen.append)
    assert seen == []  # the C-ECHO failed: nothing had an outcome
    port = _free_port()
    result = _send(session, port, on_instance=seen.append, echo=False, timeout=0.5)
    assert result.failed == 8
    assert sorted(o.path for o in seen) == sorted(o.path for o in result.outcomes)
    assert all(o.status is None and o.meaning.startswith("not sent") for o in seen)


def test_an_error_in_on_instance_stops_the_send_and_is_raised(scp: FakeScp, session: Path) -> None:
    calls: list[InstanceOutcome] = []

    def on_instance(outcome: InstanceOutcome) -> None:
        calls.append(outcome)
        raise OSError("journal disk full")

    with pytest.raises(OSError, match="journal disk full"):
        _send(session, scp.port, num_batches=1, on_instance=on_instance)
    assert len(calls) == 1  # no further calls after the first error
    assert sum(scp.requests.values()) < 8  # nothing new started


def _implicit_file_labelled_explicit(path: Path) -> str:
    """A file whose meta says Explicit VR Little Endian over an implicit VR data set."""
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    body = pydicom.filebase.DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    pydicom.filewriter.write_dataset(body, ds)
    meta = file_meta_header(
        str(ds.SOPClassUID),
        str(ds.SOPInstanceUID),
        str(ExplicitVRLittleEndian),
        implementation_class_uid="2.25.1",
    )
    path.write_bytes(meta + body.getvalue())
    return str(ds.SOPInstanceUID)


@pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")
def test_a_data_set_in_the_other_vr_style_goes_in_the_syntax_its_bytes_are_in(
    scp: FakeScp, tmp_path: Path
) -> None:
    """Sent under its label, implicit VR data would be misread as explicit VR; no syntax can
    carry implicit VR data with JPEG pixel data (pydicom's SC_rgb_jpeg.dcm, on which Orthanc
    waits for a data set that never ends), so that file is not sent, as dcmsend does not."""
    folder = tmp_path / "odd"
    folder.mkdir()
    relabelled = _implicit_file_labelled_explicit(folder / "relabelled.dcm")
    jpeg = get_testdata_file("SC_rgb_jpeg.dcm", download=False)
    assert jpeg is not None
    shutil.copy(str(jpeg), folder / "SC_rgb_jpeg.dcm")
    jpeg_uid = str(pydicom.dcmread(str(jpeg), stop_before_pixels=True).SOPInstanceUID)
    with build_inventory(folder) as inv:
        assert {f.path: f.vr_mismatch for f in inv.files} == {
            "SC_rgb_jpeg.dcm": True,
            "relabelled.dcm": True,
        }
    result = _send(folder, scp.port, routing_tags=False, allow_multiple_studies=True)
    received = {r.sop_instance_uid: r for r in scp.received}
    assert received[relabelled].transfer_syntax == ImplicitVRLittleEndian
    data = (folder / "relabelled.dcm").read_bytes()
    assert received[relabelled].data == data[dataset_offset(data) :]
    assert jpeg_uid not in scp.requests  # never sent
    outcome = next(o for o in result.outcomes if o.sop_instance_uid == jpeg_uid)
    assert outcome.attempts == 0 and outcome.status is None
    assert outcome.meaning == (
        "not sent: its data set is implicit VR, which its transfer syntax JPEG Baseline "
        "(Process 1) (1.2.840.10008.1.2.4.50) cannot carry; a receiver would misread it"
    )
