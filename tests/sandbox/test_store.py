"""The sandbox store: import into the prearchive, commit, archive listings
(docs/xnat-behaviour.md §3.4, §3.8, §4)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from xnatio.sandbox.store import ClientError, ImportParams, SandboxStore

from .test_store_helpers import make_dicom, uid


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SandboxStore]:
    s = SandboxStore(tmp_path / "data")
    s.create_project("P1")
    yield s
    s.close()


def ingest(
    store: SandboxStore, files: list[tuple[str, bytes]], **params: object
) -> list[str | None]:
    with store.begin_import(ImportParams(**params)) as batch:  # type: ignore[arg-type]
        return [batch.ingest(io.BytesIO(data), name) for name, data in files]


def one_uri(uris: list[str | None]) -> str:
    assert len(set(uris)) == 1
    uri = uris[0]
    assert uri is not None
    return uri


def session_files(study: str, n: int, series_number: int = 1) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        sop = uid()
        out.append(
            (
                f"{sop}.dcm",
                make_dicom(study=study, sop=sop, series_number=series_number, instance=i + 1),
            )
        )
    return out


def test_import_lands_in_one_prearchive_row(store: SandboxStore) -> None:
    study = uid()
    files = session_files(study, 3)
    uris = ingest(store, files, project="P1", subject="S1", session="E1", prevent_auto_commit=True)
    uri = one_uri(uris)
    assert uri.startswith("/prearchive/projects/P1/")
    assert uri.endswith("/E1")
    rows = store.prearchive_rows("P1")
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "RECEIVING"
    assert row["tag"] == study
    assert row["subject"] == "S1"
    assert row["url"] == uri
    assert row["prevent_auto_commit"] == "true"
    assert row["autoarchive"] == "Manual"
    assert all(isinstance(v, str) for v in row.values())
    # A second request with the same study and label reuses the row.
    more = session_files(study, 2)
    assert one_uri(ingest(store, more, project="P1", subject="S1", session="E1")) == uri
    _, _, _, project, ts, folder = uri.split("/")
    listed = store.prearchive_files(project, ts, folder)
    assert sorted(f["name"] for f in listed) == sorted(n for n, _ in files + more)
    assert {f["scan"] for f in listed} == {"1"}


def test_commit_and_archive_listings(store: SandboxStore) -> None:
    study = uid()
    files = session_files(study, 2, series_number=4) + session_files(study, 1, series_number=7)
    uri = one_uri(ingest(store, files, project="P1", subject="S1", session="E1"))
    _, _, _, project, ts, folder = uri.split("/")
    assert store.experiment_item("P1", "S1", "E1") is None
    status, archived = store.commit_prearchive(project, ts, folder, auto_archive=True)
    assert (status, archived) == (301, "/archive/projects/P1/subjects/S1/experiments/E1")
    assert store.prearchive_rows("P1") == []
    exps = store.experiments("P1")
    assert [e["label"] for e in exps] == ["E1"]
    assert exps[0]["xsiType"] == "xnat:mrSessionData"
    assert exps[0]["date"] == "2024-01-02"
    scans = store.scans("P1", "S1", "E1")
    assert scans is not None
    assert [s["ID"] for s in scans] == ["4", "7"]
    listing = store.scan_files("P1", "S1", "E1", "ALL")
    assert listing is not None
    assert sorted(f["Name"] for f in listing) == sorted(n for n, _ in files)
    import hashlib

    by_name = dict(files)
    for f in listing:
        assert f["digest"] == hashlib.md5(by_name[f["Name"]]).hexdigest()
        assert f["Size"] == str(len(by_name[f["Name"]]))
        assert f["collection"] == "DICOM"
        assert f["URI"].startswith("/experiments/XNAT_E00001/scans/")
    only7 = store.scan_files("P1", "S1", "E1", "7")
    assert only7 is not None
    assert len(only7) == 1
    # Subject and experiment may be given by accession ID.
    subj = store.subjects("P1")[0]
    assert subj["ID"] == "XNAT_S00001"
    assert store.scans("P1", "XNAT_S00001", "XNAT_E00001") == scans
    item = store.experiment_item("P1", "S1", "E1")
    assert item is not None
    top = item["items"][0]
    assert top["meta"]["xsi:type"] == "xnat:mrSessionData"
    assert top["data_fields"]["UID"] == study
    assert [s["data_fields"]["ID"] for s in top["children"][0]["items"]] == ["4", "7"]
    # Files are on disk inside the data folder.
    exp_dir = store.data_dir / "archive/P1/arc001/E1/SCANS/4/DICOM"
    assert len(list(exp_dir.iterdir())) == 2
    assert not any((store.data_dir / "prearchive" / "P1").iterdir())


def test_commit_without_auto_archive_only_builds(store: SandboxStore) -> None:
    uri = one_uri(ingest(store, session_files(uid(), 1), project="P1", session="E1"))
    _, _, _, project, ts, folder = uri.split("/")
    assert store.commit_prearchive(project, ts, folder) == (200, uri)
    session = store.prearchive_session(project, ts, folder)
    assert session is not None
    assert session["status"] == "READY"
    # New data sets a READY row back to RECEIVING.
    ingest(store, session_files(session["tag"], 1), project="P1", session="E1")
    session = store.prearchive_session(project, ts, folder)
    assert session is not None
    assert session["status"] == "RECEIVING"


def test_project_code_4_commit_archives(store: SandboxStore) -> None:
    store.create_project("P4", prearchive_code=4)
    uri = one_uri(ingest(store, session_files(uid(), 1), project="P4", session="E1"))
    _, _, _, project, ts, folder = uri.split("/")
    status, _ = store.commit_prearchive(project, ts, folder)
    assert status == 301


def test_archive_service_and_dest(store: SandboxStore) -> None:
    uri = one_uri(ingest(store, session_files(uid(), 2), project="P1", session="E1"))
    out = store.archive_service(
        uri,
        dest="/archive/projects/P1/subjects/SX/experiments/EX",
        overwrite=None,
        overwrite_files=False,
    )
    assert out == "/archive/projects/P1/subjects/SX/experiments/EX"
    assert [e["label"] for e in store.experiments("P1", "SX")] == ["EX"]
    with pytest.raises(ClientError) as err:
        store.archive_service(uri, dest=None, overwrite=None, overwrite_files=False)
    assert err.value.status == 404


def _commit(store: SandboxStore, uri: str, **kw: object) -> tuple[int, str]:
    _, _, _, project, ts, folder = uri.split("/")
    return store.commit_prearchive(project, ts, folder, auto_archive=True, **kw)  # type: ignore[arg-type]


def test_reupload_conflicts_and_overwrite_modes(store: SandboxStore) -> None:
    study = uid()
    files = session_files(study, 2)
    first = one_uri(ingest(store, files, project="P1", subject="S1", session="E1"))
    assert _commit(store, first)[0] == 301

    # Same files again: no overwrite -> merge not allowed.
    second = one_uri(ingest(store, files, project="P1", subject="S1", session="E1"))
    with pytest.raises(ClientError) as err:
        _commit(store, second)
    assert err.value.status == 409
    assert err.value.message == "Session already exists, retry with overwrite enabled"
    assert store.prearchive_rows("P1")[0]["status"] == "CONFLICT"

    # overwrite=append (or "none") merges, but the files exist already.
    for mode in ("append", "none"):
        with pytest.raises(ClientError) as err:
            _commit(store, second, overwrite=mode)
        assert err.value.message == "Session already exists with the same resources."
    # overwrite_files lets them be replaced.
    assert _commit(store, second, overwrite="append", overwrite_files=True)[0] == 301
    listing = store.scan_files("P1", "S1", "E1")
    assert listing is not None
    assert len(listing) == 2

    # Partly overlapping upload: "matching files"; delete replaces.
    third_files = [*files[:1], *session_files(study, 1)]
    third = one_uri(ingest(store, third_files, project="P1", subject="S1", session="E1"))
    with pytest.raises(ClientError) as err:
        _commit(store, third, overwrite="append")
    assert err.value.message == "Session already exists with matching files."
    assert _commit(store, third, overwrite="delete")[0] == 301
    listing = store.scan_files("P1", "S1", "E1")
    assert listing is not None
    assert len(listing) == 3


def test_new_series_merge_with_append(store: SandboxStore) -> None:
    study = uid()
    first = one_uri(ingest(store, session_files(study, 1, 1), project="P1", session="E1"))
    _commit(store, first)
    second = one_uri(ingest(store, session_files(study, 1, 2), project="P1", session="E1"))
    assert _commit(store, second, overwrite="append")[0] == 301
    scans = store.scans("P1", "Doe_Jane", "E1")
    assert scans is not None
    assert [s["ID"] for s in scans] == ["1", "2"]


def test_uid_and_subject_and_scan_conflicts(store: SandboxStore) -> None:
    study = uid()
    first = one_uri(ingest(store, session_files(study, 1, 1), project="P1", session="E1"))
    _commit(store, first)
    # A different study under the same label.
    other = one_uri(ingest(store, session_files(uid(), 1, 1), project="P1", session="E1"))
    with pytest.raises(ClientError) as err:
        _commit(store, other, overwrite="append")
    assert err.value.message == "Invalid modification of session UID via archive process."
    # delete overrides the UID check; same scan number with another series UID is renumbered.
    assert _commit(store, other, overwrite="delete")[0] == 301
    scans = store.scans("P1", "Doe_Jane", "E1")
    assert scans is not None
    assert [s["ID"] for s in scans] == ["1", "2"]
    # Same series UID under another number.
    series_uid = f"{study}.1"
    sop = uid()
    moved = make_dicom(study=study, series=series_uid, series_number=9, sop=sop)
    fourth = one_uri(ingest(store, [(f"{sop}.dcm", moved)], project="P1", session="E1"))
    with pytest.raises(ClientError) as err:
        _commit(store, fourth, overwrite="append")
    assert err.value.message == (
        "Session already contains a scan with the same UID, but a different number (1)."
    )
    # Another subject (another study, so that a fresh prearchive row carries the subject).
    third = one_uri(
        ingest(store, session_files(uid(), 1, 3), project="P1", subject="OTHER", session="E1")
    )
    with pytest.raises(ClientError) as err:
        _commit(store, third, overwrite="append")
    assert err.value.message.startswith("Invalid modification of session subject")


def test_file_names(store: SandboxStore) -> None:
    study = uid()
    sop_a, sop_b = uid(), uid()
    a = make_dicom(study=study, sop=sop_a, instance=1)
    b = make_dicom(study=study, sop=sop_b, instance=2)
    uri = one_uri(ingest(store, [("batch 1/série/IM0001.dcm", a)], project="P1", session="E1"))
    _, _, _, project, ts, folder = uri.split("/")
    names = [f["name"] for f in store.prearchive_files(project, ts, folder)]
    assert names == ["batch_1_s_rie_IM0001.dcm"]
    # Same name, same object: overwritten in place.
    ingest(store, [("batch 1/série/IM0001.dcm", a)], project="P1", session="E1")
    assert len(store.prearchive_files(project, ts, folder)) == 1
    # Same name, another object: template name.
    ingest(store, [("batch 1/série/IM0001.dcm", b)], project="P1", session="E1")
    names = sorted(f["name"] for f in store.prearchive_files(project, ts, folder))
    assert len(names) == 2
    template = next(n for n in names if n != "batch_1_s_rie_IM0001.dcm")
    assert template.startswith(f"{study}-1-2-")
    assert template.endswith(".dcm")
    # rename=true always uses the template.
    c_sop = uid()
    c = make_dicom(study=study, sop=c_sop, instance=3)
    ingest(store, [("x.dcm", c)], project="P1", session="E1", rename=True)
    names = [f["name"] for f in store.prearchive_files(project, ts, folder)]
    assert "x.dcm" not in names
    assert any(n.startswith(f"{study}-1-3-") for n in names)
    uids = {f["sop_instance_uid"] for f in store.prearchive_files(project, ts, folder)}
    assert uids == {sop_a, sop_b, c_sop}


def test_scan_folder_rules(store: SandboxStore) -> None:
    study = uid()
    files = [
        ("a.dcm", make_dicom(study=study, series_number=None, series="1.2.3.4")),
        ("b.dcm", make_dicom(study=study, series_number="+5", series=f"{study}.5")),
    ]
    uri = one_uri(ingest(store, files, project="P1", session="E1"))
    _, _, _, project, ts, folder = uri.split("/")
    scans = {f["name"]: f["scan"] for f in store.prearchive_files(project, ts, folder)}
    assert scans == {"a.dcm": "1.2.3.4", "b.dcm": "_5"}  # 1.9 turns a leading + into _


def test_bad_objects(store: SandboxStore) -> None:
    with pytest.raises(ClientError) as err:
        ingest(store, [("notes.txt", b"hello world, not DICOM at all")], project="P1")
    assert err.value.message == "unable to read DICOM object notes.txt"
    assert err.value.status == 400
    no_class = make_dicom(study=uid(), sop_class=None)
    with pytest.raises(ClientError) as err:
        ingest(store, [("DICOMDIR", no_class)], project="P1")
    assert err.value.message == "object DICOMDIR contains no SOP Class UID"


def test_concurrent_same_file_is_refused(store: SandboxStore) -> None:
    study = uid()
    sop = uid()
    data = make_dicom(study=study, sop=sop)
    started = threading.Event()
    release = threading.Event()

    class SlowStream(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            chunk = super().read(n)
            if not chunk and not started.is_set():  # the copy phase, under the per-file lock
                started.set()
                release.wait(5)
            return chunk

    errors: list[str] = []

    def first() -> None:
        with store.begin_import(ImportParams(project="P1", session="E1")) as batch:
            batch.ingest(SlowStream(data), f"{sop}.dcm")

    t = threading.Thread(target=first)
    t.start()
    assert started.wait(5)
    try:
        ingest(store, [(f"{sop}.dcm", data)], project="P1", session="E1")
    except ClientError as exc:
        errors.append(exc.message)
    release.set()
    t.join(5)
    assert errors == ["Concurrent file sends of the same data is not supported."]


def test_unknown_project_goes_to_unassigned(store: SandboxStore) -> None:
    uri = one_uri(ingest(store, session_files(uid(), 1), project="NOPE", session="E1"))
    assert uri.startswith("/prearchive/projects/Unassigned/")
    rows = store.prearchive_rows("Unassigned")
    assert len(rows) == 1
    assert rows[0]["project"] == "Unassigned"
    assert rows[0]["autoarchive"] == ""
    _, _, _, project, ts, folder = uri.split("/")
    assert store.commit_prearchive(project, ts, folder) == (200, uri)
    with pytest.raises(ClientError) as err:
        store.commit_prearchive(project, ts, folder, auto_archive=True)
    assert err.value.status == 403


def test_restart_keeps_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    s = SandboxStore(data)
    s.create_project("P1")
    files = session_files(uid(), 2)
    first = one_uri(ingest(s, files[:1], project="P1", subject="S1", session="E1"))
    _commit(s, first)
    pending = one_uri(ingest(s, files[1:], project="P1", subject="S1", session="E2"))
    s.close()
    s2 = SandboxStore(data)
    try:
        assert s2.project_exists("P1")
        assert [e["label"] for e in s2.experiments("P1")] == ["E1"]
        listing = s2.scan_files("P1", "S1", "E1")
        assert listing is not None
        assert [f["Name"] for f in listing] == [files[0][0]]
        assert [r["url"] for r in s2.prearchive_rows("P1")] == [pending]
        # IDs continue after a restart.
        assert _commit(s2, pending)[0] == 301
        assert [e["ID"] for e in s2.experiments("P1")] == ["XNAT_E00001", "XNAT_E00002"]
    finally:
        s2.close()


def test_projects_subjects_experiments(store: SandboxStore) -> None:
    assert store.create_project("P1") is False
    with pytest.raises(ClientError) as err:
        store.create_project("bad id")
    assert err.value.status == 417
    assert store.put_subject("P1", "SUB01") == ("XNAT_S00001", True)
    assert store.put_subject("P1", "sub01") == ("XNAT_S00001", False)
    assert store.put_experiment("P1", "SUB01", "MR1", "xnat:mrSessionData") == (
        "XNAT_E00001",
        True,
    )
    assert store.put_experiment("P1", "SUB01", "MR1", "xnat:mrSessionData")[1] is False
    with pytest.raises(ClientError) as err:
        store.put_experiment("P1", "SUB01", "bad/label", "xnat:mrSessionData")
    assert err.value.status == 417
    store.set_prearchive_code("P1", 5)
    assert store.get_prearchive_code("P1") == 5
    assert [p["ID"] for p in store.list_projects()] == ["P1"]
    scans = store.scans("P1", "SUB01", "MR1")
    assert scans == []
    assert store.scans("P1", "SUB01", "MISSING") is None


def test_merge_into_precreated_experiment(store: SandboxStore) -> None:
    store.put_experiment("P1", "S1", "E1", "xnat:mrSessionData")
    study = uid()
    uri = one_uri(ingest(store, session_files(study, 2), project="P1", subject="S1", session="E1"))
    with pytest.raises(ClientError) as err:
        _commit(store, uri)
    assert err.value.message == "Session already exists, retry with overwrite enabled"
    assert _commit(store, uri, overwrite="append")[0] == 301
    exps = store.experiments("P1")
    assert [(e["ID"], e["UID"], e["date"]) for e in exps] == [("XNAT_E00001", study, "2024-01-02")]


def test_parallel_batches_share_one_row_then_one_commit(store: SandboxStore) -> None:
    """The uploader's pattern (§3.9 item 5): N parallel batches, one row, one commit."""
    study = uid()
    batches = [session_files(study, 25, series_number=k % 2 + 1) for k in range(4)]
    results: list[list[str | None]] = [[] for _ in batches]

    def run(k: int) -> None:
        results[k] = ingest(
            store, batches[k], project="P1", subject="S1", session="E1", prevent_auto_commit=True
        )

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    uri = one_uri([u for r in results for u in r])
    status, _ = _commit(store, uri, overwrite="delete")
    assert status == 301
    uids = store.scan_file_uids("P1", "S1", "E1")
    expected = {n[: -len(".dcm")] for b in batches for n, _ in b}
    assert {u for us in uids.values() for u in us} == expected
    assert sorted(len(v) for v in uids.values()) == [50, 50]
