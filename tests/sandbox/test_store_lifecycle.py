"""The sandbox store: Direct-Archive, the background ticker, routing, faults, resources, paths.

Section numbers (§) refer to docs/xnat-behaviour.md.
"""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from xnatio.sandbox.store import ClientError, ImportParams, SandboxStore, StoreFaults

from .test_store_helpers import make_dicom, uid


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SandboxStore]:
    # idle_interval=0: every RECEIVING session counts as idle at the next tick.
    s = SandboxStore(tmp_path / "data", idle_interval=0.0)
    s.create_project("P1")
    yield s
    s.close()


def ingest(store: SandboxStore, files: list[tuple[str, bytes]], **params: object) -> list[str]:
    with store.begin_import(ImportParams(**params)) as batch:  # type: ignore[arg-type]
        out = [batch.ingest(io.BytesIO(data), name) for name, data in files]
    assert None not in out
    return [u for u in out if u is not None]


def series(study: str, n: int, number: int = 1, **kw: object) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        sop = uid()
        data = make_dicom(study=study, sop=sop, series_number=number, instance=i + 1, **kw)  # type: ignore[arg-type]
        out.append((f"{sop}.dcm", data))
    return out


# ---------------------------------------------------------------- Direct-Archive


def test_direct_archive_receives_then_archives_on_trigger(store: SandboxStore) -> None:
    study = uid()
    uris = ingest(
        store, series(study, 3), project="P1", subject="S1", session="E1", direct_archive=True
    )
    assert set(uris) == {f"/xapi/direct-archive/P1/{study}/E1"}
    # Files are in the archive tree, but the experiment does not exist yet.
    assert len(list((store.data_dir / "archive/P1/arc001/E1/SCANS/1/DICOM").iterdir())) == 3
    assert store.experiment_item("P1", "S1", "E1") is None
    assert store.prearchive_rows("P1") == []
    status = store.direct_archive_status("P1", study, "E1")
    assert status is not None
    assert status["status"] == "RECEIVING"
    # More files join the same DA session.
    assert set(
        ingest(store, series(study, 1, 2), project="P1", session="E1", direct_archive=True)
    ) == {f"/xapi/direct-archive/P1/{study}/E1"}
    assert store.direct_archive_trigger("P1", study, "E1") == (
        "/archive/projects/P1/subjects/S1/experiments/E1"
    )
    assert store.direct_archive_status("P1", study, "E1") is None
    listing = store.scan_files("P1", "S1", "E1")
    assert listing is not None
    assert len(listing) == 4
    with pytest.raises(ClientError) as err:
        store.direct_archive_trigger("P1", study, "E1")
    assert err.value.status == 404


def test_direct_archive_falls_back_for_existing_sessions(store: SandboxStore) -> None:
    # A pre-created (empty) session makes DA fall back to the prearchive.
    store.put_experiment("P1", "S1", "E1", "xnat:mrSessionData")
    uris = ingest(store, series(uid(), 1), project="P1", session="E1", direct_archive=True)
    assert uris[0].startswith("/prearchive/projects/P1/")
    # No project: no DA (Unassigned).
    uris = ingest(store, series(uid(), 1), project="NOPE", session="E2", direct_archive=True)
    assert uris[0].startswith("/prearchive/projects/Unassigned/")


def test_direct_archive_late_files_fall_back_after_archive_started(store: SandboxStore) -> None:
    study = uid()
    ingest(store, series(study, 1), project="P1", session="E1", direct_archive=True)
    store.direct_archive_trigger("P1", study, "E1")
    # The archive directory now exists: a late file goes to the prearchive.
    late = ingest(store, series(study, 1, 2), project="P1", session="E1", direct_archive=True)
    assert late[0].startswith("/prearchive/projects/P1/")


def test_direct_archive_failure_moves_to_prearchive(store: SandboxStore) -> None:
    study = uid()
    files = series(study, 2)
    ingest(store, files, project="P1", subject="S1", session="E1", direct_archive=True)
    # Someone creates the experiment while DA is receiving: archiving it fails.
    store.put_experiment("P1", "S1", "E1", "xnat:mrSessionData")
    with pytest.raises(ClientError) as err:
        store.direct_archive_trigger("P1", study, "E1")
    assert err.value.status == 409
    rows = store.prearchive_rows("P1")
    assert len(rows) == 1
    assert rows[0]["status"] == "CONFLICT"
    assert rows[0]["tag"] == study
    _, _, _, project, ts, folder = rows[0]["url"].split("/")
    assert sorted(f["name"] for f in store.prearchive_files(project, ts, folder)) == sorted(
        n for n, _ in files
    )
    # The data is still committable with overwrite.
    assert (
        store.commit_prearchive(project, ts, folder, auto_archive=True, overwrite="append")[0]
        == 301
    )


def test_ticker_archives_idle_direct_archive_sessions(store: SandboxStore) -> None:
    study = uid()
    ingest(store, series(study, 2), project="P1", session="E1", direct_archive=True)
    store.tick()
    assert store.direct_archive_status("P1", study, "E1") is None
    assert [e["label"] for e in store.experiments("P1")] == ["E1"]


# ---------------------------------------------------------------- the ticker (§3.5)


def test_ticker_builds_and_auto_archives(store: SandboxStore) -> None:
    store.create_project("P4", prearchive_code=4)
    manual = ingest(store, series(uid(), 1), project="P1", session="M1")[0]
    auto = ingest(store, series(uid(), 1), project="P4", session="A1")[0]
    held = ingest(store, series(uid(), 1), project="P4", session="H1", prevent_auto_commit=True)[0]
    uploader = ingest(store, series(uid(), 1), project="P4", session="U1", source="uploader")[0]
    comment_aa = ingest(
        store, series(uid(), 1, patient_comments="AA:true"), project="P1", session="C1"
    )[0]
    unassigned = ingest(store, series(uid(), 1), session="X1")[0]
    store.tick()
    status = {r["url"]: r["status"] for r in store.prearchive_rows(None)}
    assert status == {
        manual: "READY",
        held: "RECEIVING",
        uploader: "RECEIVING",
        unassigned: "READY",
    }
    assert auto not in status
    assert comment_aa not in status
    assert [e["label"] for e in store.experiments("P4")] == ["A1"]
    assert [e["label"] for e in store.experiments("P1")] == ["C1"]


def test_ticker_waits_for_the_idle_interval(tmp_path: Path) -> None:
    s = SandboxStore(tmp_path / "d", idle_interval=60.0)
    try:
        s.create_project("P4", prearchive_code=4)
        ingest(s, series(uid(), 1), project="P4", session="A1")
        s.tick()
        assert [r["status"] for r in s.prearchive_rows("P4")] == ["RECEIVING"]
    finally:
        s.close()


def test_ticker_reupload_conflicts_unless_code_5(store: SandboxStore) -> None:
    store.create_project("P4", prearchive_code=4)
    store.create_project("P5", prearchive_code=5)
    for project, expected in (("P4", ["CONFLICT"]), ("P5", [])):
        files = series(uid(), 2)
        ingest(store, files, project=project, session="E1")
        store.tick()
        ingest(store, files, project=project, session="E1")
        store.tick()
        assert [r["status"] for r in store.prearchive_rows(project)] == expected
        listing = store.scan_files(project, "Doe_Jane", "E1")
        assert listing is not None
        assert len(listing) == 2


def test_new_data_while_archiving_creates_a_second_row(store: SandboxStore) -> None:
    study = uid()
    uri = ingest(store, series(study, 1), project="P1", session="E1")[0]
    store.faults.file_delay = 0.0
    # Simulate the archive step being in progress.
    row = store.prearchive.find(*uri.split("/")[3:])
    assert row is not None
    store._db.execute("UPDATE sessions SET status='ARCHIVING' WHERE n=?", (row["n"],))
    second = ingest(store, series(study, 1, 2), project="P1", session="E1")[0]
    assert second != uri
    assert second.endswith("/E1")


# ---------------------------------------------------------------- routing (§6.2)


def test_routing_from_patient_comments(store: SandboxStore) -> None:
    files = series(uid(), 1, patient_comments="Project:P1 Subject:S9 Session:SESS_1")
    uri = ingest(store, files)[0]
    assert uri.startswith("/prearchive/projects/P1/")
    assert uri.endswith("/SESS_1")
    assert store.prearchive_rows("P1")[0]["subject"] == "S9"


def test_routing_from_study_description_and_fallbacks(store: SandboxStore) -> None:
    uri = ingest(store, series(uid(), 1, study_description="P1", patient_id="PAT 7"))[0]
    assert uri.startswith("/prearchive/projects/P1/")
    assert uri.endswith("/PAT_7")  # session from PatientID, cleaned
    assert store.prearchive_rows("P1")[0]["subject"] == "Doe_Jane"
    # An unknown project in the comments is not usable: Unassigned.
    uri = ingest(store, series(uid(), 1, patient_comments="Project:NOPE", patient_id=""))[0]
    assert uri.startswith("/prearchive/projects/Unassigned/")
    assert uri.endswith("/dicom_upload")
    # A given (existing) project wins over the DICOM; a wrong one falls back to routing.
    files = series(uid(), 1, patient_comments="Project:P1")
    store.create_project("P2")
    assert ingest(store, files, project="P2")[0].startswith("/prearchive/projects/P2/")
    files = series(uid(), 1, patient_comments="Project:P1")
    assert ingest(store, files, project="WRONG")[0].startswith("/prearchive/projects/P1/")


def test_comment_syntax() -> None:
    from xnatio.sandbox.routing import comment_value

    assert comment_value("Project:BobsProj Subject:subj001 AA:true", "subject") == "subj001"
    assert comment_value("x;project : P-1,y", "Project") == "P-1"
    assert comment_value("MyProject:P1", "Project") is None
    assert comment_value("Project:P1.2", "Project") is None


# ---------------------------------------------------------------- faults and paths


def test_disk_full_and_delay(tmp_path: Path) -> None:
    faults = StoreFaults()
    s = SandboxStore(tmp_path / "d", faults=faults)
    try:
        s.create_project("P1")
        faults.disk_full = True
        with pytest.raises(ClientError) as err:
            ingest(s, series(uid(), 1), project="P1", session="E1")
        assert err.value.status == 400
        assert err.value.message.startswith("unable to read DICOM object ")
        assert not [p for p in (tmp_path / "d" / "prearchive").rglob("*") if p.is_file()]
        faults.disk_full = False
        faults.file_delay = 0.05
        t0 = time.monotonic()
        ingest(s, series(uid(), 2), project="P1", session="E2")
        assert time.monotonic() - t0 >= 0.1
    finally:
        s.close()


def _folders(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_dir()] if root.exists() else []


@pytest.mark.parametrize("direct_archive", [False, True])
def test_a_session_whose_every_write_failed_is_not_kept(
    store: SandboxStore, direct_archive: bool
) -> None:
    # Disk full from the first instance: no row, no folder, nothing for the ticker to build
    # (XNAT builds a session from its files; an empty one would be archived empty and the
    # data sent again would then stop in the prearchive as a conflict).
    study = uid()
    files = series(study, 2)
    store.faults.disk_full = True
    for name, data in files:
        with pytest.raises(ClientError):
            ingest(store, [(name, data)], project="P1", subject="S1", session="E1",
                   direct_archive=direct_archive)  # fmt: skip
    assert store.prearchive_rows(None) == []
    assert store.direct_archive_status("P1", study, "E1") is None
    assert _folders(store.data_dir / "prearchive/P1") == []  # no timestamp folder
    assert not (store.data_dir / "archive/P1/arc001/E1").exists()
    store.tick()
    assert store.experiments("P1") == []

    # Space is back: the same data is received, built and archived as usual.
    store.faults.disk_full = False
    uris = ingest(store, files, project="P1", subject="S1", session="E1",
                  direct_archive=direct_archive)  # fmt: skip
    assert uris[0].startswith("/xapi/" if direct_archive else "/prearchive/")
    store.set_prearchive_code("P1", 4)
    store.tick()
    assert store.prearchive_rows(None) == []
    listing = store.scan_files("P1", "S1", "E1")
    assert listing is not None and len(listing) == 2


def test_a_failed_write_keeps_a_session_that_has_files(store: SandboxStore) -> None:
    study = uid()
    first, second = series(study, 2)
    uri = ingest(store, [first], project="P1", subject="S1", session="E1")[0]
    store.faults.disk_full = True
    with pytest.raises(ClientError):
        ingest(store, [second], project="P1", subject="S1", session="E1")
    _, _, _, project, ts, folder = uri.split("/")
    assert [f["name"] for f in store.prearchive_files(project, ts, folder)] == [first[0]]
    store.faults.disk_full = False
    assert ingest(store, [second], project="P1", subject="S1", session="E1") == [uri]


def test_hostile_names_stay_inside_the_data_folder(store: SandboxStore) -> None:
    sop = uid()
    data = make_dicom(study=uid(), sop=sop)
    uri = ingest(store, [("../../../etc/passwd", data)], project="P1", session="../../x")[0]
    assert ".." not in uri.split("/")
    _, _, _, project, ts, folder = uri.split("/")
    files = store.prearchive_files(project, ts, folder)
    assert len(files) == 1
    assert files[0]["sop_instance_uid"] == sop
    assert files[0]["name"] == ".._.._.._etc_passwd"  # cleaned as XNAT cleans it (§4.3)
    stored = [p for p in store.data_dir.rglob("*") if p.is_file() and "SCANS" in p.parts]
    assert [p.name for p in stored] == [".._.._.._etc_passwd"]
    assert store.data_dir in stored[0].resolve().parents


# ---------------------------------------------------------------- resources (§7)


def _archived(store: SandboxStore) -> None:
    uri = ingest(store, series(uid(), 1), project="P1", subject="S1", session="E1")[0]
    store.archive_service(uri, dest=None, overwrite=None, overwrite_files=False)


def test_resource_put_duplicates_and_overwrite(store: SandboxStore) -> None:
    with pytest.raises(ClientError) as err:
        store.put_resource_file(
            "P1",
            "S1",
            "E1",
            None,
            "NOTES",
            "a.txt",
            io.BytesIO(b"x"),
            overwrite=False,
            extract=False,
        )
    assert err.value.status == 404
    _archived(store)
    put = store.put_resource_file
    assert (
        put(
            "P1",
            "S1",
            "E1",
            None,
            "NOTES",
            "dir/a.txt",
            io.BytesIO(b"one"),
            overwrite=False,
            extract=False,
        )
        == []
    )
    assert put(
        "P1",
        "S1",
        "E1",
        None,
        "NOTES",
        "dir/a.txt",
        io.BytesIO(b"two!"),
        overwrite=False,
        extract=False,
    ) == ["dir/a.txt"]
    files = store.resource_files("P1", "S1", "E1", None, "NOTES")
    assert files is not None
    assert [(f["Name"], f["Size"]) for f in files] == [("a.txt", "3")]
    assert (
        put(
            "P1",
            "S1",
            "E1",
            None,
            "NOTES",
            "dir/a.txt",
            io.BytesIO(b"two!"),
            overwrite=True,
            extract=False,
        )
        == []
    )
    files = store.resource_files("P1", "S1", "E1", None, "NOTES")
    assert files is not None
    assert files[0]["Size"] == "4"
    path = store.resource_file_path("P1", "S1", "E1", None, "NOTES", "dir/a.txt")
    assert path is not None
    assert path.read_bytes() == b"two!"
    # Scan-level resources, and the scan must exist.
    assert (
        put(
            "P1",
            "S1",
            "E1",
            "1",
            "SNAP",
            "s.png",
            io.BytesIO(b"png"),
            overwrite=False,
            extract=False,
        )
        == []
    )
    snap = store.resource_files("P1", "S1", "E1", "1", "SNAP")
    assert snap is not None
    assert [f["Name"] for f in snap] == ["s.png"]
    with pytest.raises(ClientError):
        put(
            "P1",
            "S1",
            "E1",
            "99",
            "SNAP",
            "s.png",
            io.BytesIO(b"png"),
            overwrite=False,
            extract=False,
        )
    assert store.resource_files("P1", "S1", "E1", None, "MISSING") is None


def test_resource_extract_zip_and_tar(store: SandboxStore) -> None:
    _archived(store)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("a/one.txt", "1")
        zf.writestr("two.txt", "22")
    dup = store.put_resource_file(
        "P1",
        "S1",
        "E1",
        None,
        "R",
        "up.zip",
        io.BytesIO(zbuf.getvalue()),
        overwrite=False,
        extract=True,
    )
    assert dup == []
    files = store.resource_files("P1", "S1", "E1", None, "R")
    assert files is not None
    assert sorted(f["URI"].split("/files/")[1] for f in files) == ["a/one.txt", "two.txt"]
    dup = store.put_resource_file(
        "P1",
        "S1",
        "E1",
        None,
        "R",
        "up.zip",
        io.BytesIO(zbuf.getvalue()),
        overwrite=False,
        extract=True,
    )
    assert sorted(dup) == ["a/one.txt", "two.txt"]
    # Upper-case extension: not an archive, stored as is.
    store.put_resource_file(
        "P1",
        "S1",
        "E1",
        None,
        "R",
        "UP.ZIP",
        io.BytesIO(zbuf.getvalue()),
        overwrite=False,
        extract=True,
    )
    files = store.resource_files("P1", "S1", "E1", None, "R")
    assert files is not None
    assert "UP.ZIP" in {f["Name"] for f in files}
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        info = tarfile.TarInfo("t/three.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"333"))
    store.put_resource_file(
        "P1",
        "S1",
        "E1",
        None,
        "R",
        "x.tar.gz",
        io.BytesIO(tbuf.getvalue()),
        overwrite=False,
        extract=True,
    )
    path = store.resource_file_path("P1", "S1", "E1", None, "R", "t/three.txt")
    assert path is not None
    assert path.read_bytes() == b"333"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_resource_extract_refuses_unsafe_entries(store: SandboxStore, kind: str) -> None:
    _archived(store)
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w") as tf:
        if kind == "symlink":
            info = tarfile.TarInfo("link")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        else:
            name = "../../evil.txt" if kind == "dotdot" else "/tmp/evil.txt"
            info = tarfile.TarInfo(name)
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(ClientError):
        store.put_resource_file(
            "P1",
            "S1",
            "E1",
            None,
            "R",
            "bad.tar",
            io.BytesIO(tbuf.getvalue()),
            overwrite=False,
            extract=True,
        )
    assert not list(store.data_dir.parent.rglob("evil.txt"))
    assert not list(store.data_dir.rglob("link"))
    with pytest.raises(ClientError):
        store.put_resource_file(
            "P1",
            "S1",
            "E1",
            None,
            "R",
            "../x.txt",
            io.BytesIO(b"x"),
            overwrite=False,
            extract=False,
        )


def test_scan_folder_never_escapes() -> None:
    from xnatio.sandbox.dicom_header import DicomHeader, scan_folder_name

    assert scan_folder_name(DicomHeader(series_number="..", series_instance_uid="..")) == "NA"
    assert (
        scan_folder_name(DicomHeader(series_number="../1", series_instance_uid="1.2/3")) == "1.2_3"
    )


def test_custom_routing_rules_persist(tmp_path: Path) -> None:
    s = SandboxStore(tmp_path / "d")
    try:
        s.create_project("XPROJ")
        with pytest.raises(ClientError):
            s.set_routing_rules("projectRules", "not a rule")
        s.set_routing_rules("projectRules", r"(0040,0254):proj=(\w+)")
        s.set_routing_rules("sessionRules", r"(0008,1030):^(\w+)_session:1")
    finally:
        s.close()
    s = SandboxStore(tmp_path / "d")
    try:
        assert s.get_routing_rules("projectRules") == r"(0040,0254):proj=(\w+)"
        data = make_dicom(
            study=uid(),
            study_description="visit2_session",
            extra={"PerformedProcedureStepDescription": "scan proj=XPROJ"},
        )
        uri = ingest(s, [("a.dcm", data)])[0]
        assert uri.startswith("/prearchive/projects/XPROJ/")
        assert uri.endswith("/visit2")
    finally:
        s.close()
