"""Routes that XNAT clients other than xio use (xnatpy, pyxnat), over real HTTP: resources,
archive downloads, byte ranges, formats, the site's build and schemas, listings' ``columns=``
(docs/xnat-behaviour.md §14)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from xml.etree import ElementTree

import httpx
import pytest

from .conftest import IMPORT, import_params, make_files, tar_bytes

EXP = "/data/projects/P1/subjects/S1/experiments/E1"


@pytest.fixture
def archived(client: httpx.Client) -> dict[str, bytes]:
    """Session E1 of subject S1 archived in P1: two series of three files; the uploaded files by
    their archive paths (``s1/IM0001.dcm`` ...)."""
    files = make_files(3, series=2)
    r = client.post(
        IMPORT,
        params=import_params(dest="/archive/projects/P1/subjects/S1/experiments/E1"),
        content=tar_bytes(files),
        headers={"Content-Type": "application/x-tar"},
    )
    assert r.status_code == 200, r.text
    return files


def _stored(files: dict[str, bytes]) -> dict[str, bytes]:
    """The uploaded files by the name the sandbox stores them under (§4.3)."""
    return {name.replace("/", "_"): data for name, data in files.items()}


def _rows(client: httpx.Client, path: str, **params: str) -> list[dict[str, str]]:
    r = client.get(path, params={"format": "json", **params})
    assert r.status_code == 200, r.text
    rows: list[dict[str, str]] = r.json()["ResultSet"]["Result"]
    return rows


# -- resources -----------------------------------------------------------------------------------


def test_session_resource_create_list_upload_delete(
    client: httpx.Client, archived: dict[str, bytes]
) -> None:
    assert _rows(client, f"{EXP}/resources") == []
    made = client.put(f"{EXP}/resources/NOTES", params={"format": "TXT", "content": "notes"})
    assert made.status_code == 200, made.text
    again = client.put(f"{EXP}/resources/NOTES")
    assert again.status_code == 409
    assert "<h3>Specified resource already exists.</h3>" in again.text
    [row] = _rows(client, f"{EXP}/resources")
    assert (row["label"], row["format"], row["content"], row["file_count"]) == (
        "NOTES",
        "TXT",
        "notes",
        "0",
    )
    assert (row["category"], row["cat_id"]) == ("resources", "XNAT_E00001")
    # pyxnat names an existing resource by its ID when it uploads into it.
    rid = row["xnat_abstractresource_id"]
    up = client.post(
        f"{EXP}/resources/{rid}/files/a/b.txt", params={"inbody": "true"}, content=b"x"
    )
    assert up.status_code == 200, up.text
    [row] = _rows(client, f"{EXP}/resources")
    assert (row["label"], row["file_count"], row["file_size"]) == ("NOTES", "1", "1")
    catalog = client.get(f"{EXP}/resources/NOTES", params={"format": "json"})
    assert catalog.status_code == 200
    assert catalog.text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<cat:Catalog')
    entry = ElementTree.fromstring(catalog.content)[0][0]
    assert (entry.get("URI"), entry.get("size")) == ("a/b.txt", "1")
    assert client.delete(f"{EXP}/resources/NOTES").status_code == 200
    assert _rows(client, f"{EXP}/resources") == []
    assert client.get(f"{EXP}/resources/NOTES").status_code == 404


def test_scan_resource_routes_need_the_scan(
    client: httpx.Client, archived: dict[str, bytes]
) -> None:
    [row] = _rows(client, f"{EXP}/scans/1/resources")
    assert (row["label"], row["category"], row["cat_id"], row["file_count"]) == (
        "DICOM",
        "scans",
        "1",
        "3",
    )
    assert client.put(f"{EXP}/scans/1/resources/SNAPSHOTS").status_code == 200
    assert client.put(f"{EXP}/scans/9/resources/SNAPSHOTS").status_code == 404
    assert client.get(f"{EXP}/scans/9/resources").status_code == 404
    missing = client.put("/data/projects/P1/subjects/S1/experiments/NOPE/resources/R")
    assert missing.status_code == 404


# -- downloads -----------------------------------------------------------------------------------


def test_session_zip_holds_every_file_byte_for_byte(
    client: httpx.Client, archived: dict[str, bytes]
) -> None:
    r = client.get(f"{EXP}/scans/ALL/files", params={"format": "zip"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/zip"
    assert r.headers["Content-Disposition"] == 'attachment; filename="E1.zip"'
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        got = {n: zf.read(n) for n in zf.namelist()}
    types = {row["ID"]: row["type"] for row in _rows(client, f"{EXP}/scans")}
    expected = {}
    for name, data in _stored(archived).items():
        scan = name[1]  # s1_IM0001.dcm was series 1
        folder = f"{scan}-{types[scan]}".replace(" ", "_")
        expected[f"E1/scans/{folder}/resources/DICOM/files/{name}"] = data
    assert got == expected


@pytest.mark.parametrize("fmt", ["tar", "tar.gz"])
def test_scan_tar_formats(client: httpx.Client, archived: dict[str, bytes], fmt: str) -> None:
    r = client.get(f"{EXP}/scans/2/files", params={"format": fmt, "structure": "simplified"})
    assert r.status_code == 200
    got = {}
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:*") as tf:
        assert tf.fileobj is not None
        for member in tf.getmembers():
            handle = tf.extractfile(member)
            assert handle is not None
            got[member.name] = handle.read()
    assert (r.content[:2] == b"\x1f\x8b") == (fmt == "tar.gz")
    stored = {n: d for n, d in _stored(archived).items() if n.startswith("s2_")}
    assert {n.rsplit("/", 1)[-1]: d for n, d in got.items()} == stored
    assert all(n.startswith("E1/scans/2-") and "/DICOM/" in n for n in got)
    assert not any("/resources/" in n or "/files/" in n for n in got)


def test_resource_zip_and_improved_structure(
    client: httpx.Client, archived: dict[str, bytes]
) -> None:
    r = client.get(
        f"{EXP}/scans/1/resources/DICOM/files", params={"format": "zip", "structure": "improved"}
    )
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = zf.namelist()
    assert len(names) == 3
    assert all(n.startswith("scans/1_") and "/DICOM/s1_IM" in n for n in names)


def test_unknown_formats_and_structures_are_refused(
    client: httpx.Client, archived: dict[str, bytes]
) -> None:
    for path in (f"{EXP}/scans/ALL/files", f"{EXP}/scans", "/data/projects", EXP):
        r = client.get(path, params={"format": "xml"})
        assert r.status_code == 406, path
        assert "format=xml" in r.text
    legacy = client.get(f"{EXP}/scans/ALL/files", params={"format": "zip", "structure": "legacy"})
    assert legacy.status_code == 400
    empty = client.put(f"{EXP}/resources/EMPTY")
    assert empty.status_code == 200
    assert client.get(f"{EXP}/resources/EMPTY/files", params={"format": "zip"}).status_code == 404
    quiet = client.get(
        f"{EXP}/resources/EMPTY/files", params={"format": "zip", "accept-not-found": "true"}
    )
    assert quiet.status_code == 204


# -- byte ranges ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status", "part"),
    [
        ("bytes=0-9", 206, slice(0, 10)),
        ("bytes=100-", 206, slice(100, None)),
        ("bytes=-7", 206, slice(-7, None)),
        ("bytes=5-100000", 206, slice(5, None)),
        ("bytes=0-1,4-5", 200, slice(None)),  # several ranges: the whole file
        ("lines=0-1", 200, slice(None)),
        ("bytes=9-3", 200, slice(None)),  # invalid: ignored
    ],
)
def test_file_download_honours_a_byte_range(
    client: httpx.Client, archived: dict[str, bytes], header: str, status: int, part: slice
) -> None:
    name, data = next(iter(_stored(archived).items()))
    url = f"{EXP}/scans/1/resources/DICOM/files/{name}"
    r = client.get(url, headers={"Range": header})
    assert r.status_code == status
    assert r.content == data[part]
    assert r.headers["Accept-Ranges"] == "bytes"
    if status == 206:
        start = part.start % len(data) if part.start is not None else 0
        end = start + len(r.content) - 1
        assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"


def test_unsatisfiable_range_is_416(client: httpx.Client, archived: dict[str, bytes]) -> None:
    name, data = next(iter(_stored(archived).items()))
    url = f"{EXP}/scans/1/resources/DICOM/files/{name}"
    r = client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    assert r.content == b""
    # The connection stays usable after a partial answer.
    assert client.get(url, headers={"Range": "bytes=0-0"}).content == data[:1]


# -- columns, xsiType and filters ---------------------------------------------------------------


def test_columns_choose_fields_in_order_then_uri(
    client: httpx.Client, archived: dict[str, bytes]
) -> None:
    [row] = _rows(client, "/data/projects/P1/experiments", columns="label,ID,modality,nonsense")
    # Experiments of a base type (here all of them) always carry their type and project.
    assert row == {
        "label": "E1",
        "ID": "XNAT_E00001",
        "modality": "MR",
        "xsiType": "xnat:mrSessionData",
        "project": "P1",
        "URI": "/data/experiments/XNAT_E00001",
    }
    assert list(row) == ["label", "ID", "modality", "xsiType", "project", "URI"]
    default = _rows(client, "/data/projects/P1/experiments", columns="DEFAULT")
    assert default == _rows(client, "/data/projects/P1/experiments")
    assert "modality" not in default[0]
    scan = _rows(client, f"{EXP}/scans", columns="ID,xnat:imageScanData/series_description")[0]
    assert list(scan) == ["ID", "series_description", "URI"]  # the path XNAT names by shortcut
    [subject] = _rows(client, "/data/projects/P1/subjects", columns="label,xsiType")
    assert list(subject) == ["label", "URI"]  # subjects have no xsiType shortcut


def test_a_field_of_an_extension_lists_that_type_only(
    client: httpx.Client, archived: dict[str, bytes]
) -> None:
    made = client.put(
        "/data/projects/P1/subjects/S1/experiments/CT1", params={"xsiType": "xnat:ctSessionData"}
    )
    assert made.status_code == 201
    both = _rows(client, "/data/projects/P1/experiments", columns="ID,label,xsiType")
    assert [(r["label"], r["xsiType"]) for r in both] == [
        ("E1", "xnat:mrSessionData"),
        ("CT1", "xnat:ctSessionData"),
    ]
    [mr] = _rows(client, "/data/projects/P1/experiments", columns="ID,xnat:mrSessionData/date")
    assert list(mr) == ["ID", "date", "URI"]  # the field of xnat:experimentData, by shortcut
    assert mr["ID"] == "XNAT_E00001"
    dates = _rows(client, "/data/projects/P1/experiments", columns="ID,date")
    assert mr["date"] == dates[0]["date"] != ""
    [ct] = _rows(client, "/data/experiments", xsiType="xnat:ctSessionData", columns="label")
    assert ct == {"label": "CT1", "URI": "/data/experiments/XNAT_E00002"}
    images = _rows(client, "/data/experiments", xsiType="xnat:imageSessionData")
    assert len(images) == 2


def test_parameters_named_like_fields_filter(
    client: httpx.Client, archived: dict[str, bytes]
) -> None:
    assert client.put("/data/projects/P2").status_code == 200
    for project, label in (("P1", "E2"), ("P2", "F1")):
        r = client.put(f"/data/projects/{project}/subjects/S9/experiments/{label}")
        assert r.status_code == 201
    labels = [r["label"] for r in _rows(client, "/data/experiments", project="P1")]
    assert labels == ["E1", "E2"]
    assert [r["label"] for r in _rows(client, "/data/experiments", label="E*,F1")] == [
        "E1",
        "E2",
        "F1",
    ]
    assert _rows(client, "/data/experiments", label="e1") == []  # case counts
    assert [r["label"] for r in _rows(client, "/data/subjects", project="P2")] == ["S9"]
    assert [r["ID"] for r in _rows(client, f"{EXP}/scans", ID="2")] == ["2"]
    assert len(_rows(client, f"{EXP}/scans", series_description="T*")) == 2


# -- the prearchive -----------------------------------------------------------------------------


def _prearchive_upload(client: httpx.Client, session: str, **extra: str) -> str:
    """Upload a session into P1's prearchive; its URI without ``/data``."""
    r = client.post(
        IMPORT,
        params=import_params(session=session, **extra),
        content=tar_bytes(make_files(2)),
        headers={"Content-Type": "application/x-tar"},
    )
    assert r.status_code == 200, r.text
    return r.text.strip().removeprefix("/data")


def test_prearchive_projects_lists_every_project(client: httpx.Client) -> None:
    _prearchive_upload(client, "E1")
    rows = _rows(client, "/data/prearchive/projects")
    assert [(r["project"], r["name"]) for r in rows] == [("P1", "E1")]
    assert rows == _rows(client, "/data/prearchive")


def test_batch_rebuild_move_and_delete(client: httpx.Client) -> None:
    assert client.put("/data/projects/P2").status_code == 200
    first = _prearchive_upload(client, "E1")
    second = _prearchive_upload(client, "E2")
    built = client.post("/data/services/prearchive/rebuild", params={"src": [first, second]})
    assert built.status_code == 200, built.text
    assert [r["status"] for r in built.json()["ResultSet"]["Result"]] == ["READY", "READY"]
    # pyxnat sends its parameters as a form body
    moved = client.post(
        "/data/services/prearchive/move", data={"src": first, "newProject": "P2", "async": "false"}
    )
    assert moved.status_code == 200, moved.text
    [row] = moved.json()["ResultSet"]["Result"]
    assert (row["project"], row["name"]) == ("P2", "E1")
    gone = client.post(
        "/data/services/prearchive/delete", params={"src": "/data" + second, "format": "csv"}
    )
    assert gone.status_code == 200
    assert [r["name"] for r in _rows(client, "/data/prearchive")] == ["E1"]
    assert (
        client.post("/data/services/prearchive/delete", params={"src": second}).status_code == 404
    )
    assert client.post("/data/services/prearchive/delete").status_code == 404
    bad = client.post("/data/services/prearchive/delete", params={"src": "/archive/projects/P1"})
    assert bad.status_code == 400
    assert client.get("/data/services/prearchive/delete").status_code == 405


def test_archive_service_redirects_for_an_auto_archiving_session(client: httpx.Client) -> None:
    """XNAT's rule (``PrearcSession.isAutoArchive``): the row's own code, else a parameter named
    like ``AA``/``auto-archive``, else the project's code decides; 303 when it auto-archives."""
    manual = _prearchive_upload(client, "E1")
    plain = client.post("/data/services/archive", params={"src": manual})
    assert plain.status_code == 200
    assert plain.text == "/data/archive/projects/P1/subjects/S1/experiments/E1\r\n"
    # A row made while the project was manual, then the project turned to auto-archive.
    before = _prearchive_upload(client, "E3", prevent_auto_commit="true")
    also_before = _prearchive_upload(client, "E4", prevent_auto_commit="true")
    assert client.put("/data/projects/P1/prearchive_code/4").status_code == 200
    # A row that takes the project's code; the background pass must not archive it first.
    auto = _prearchive_upload(client, "E2", prevent_auto_commit="true")
    redirected = client.post("/data/services/archive", params={"src": auto})
    assert redirected.status_code == 303
    location = redirected.headers["Location"]
    assert location == f"{client.base_url}/data/archive/projects/P1/subjects/S1/experiments/E2"
    # xnatpy's archive() sends auto-archive=false: a plain 200 with the URI.
    told = client.post("/data/services/archive", params={"src": before, "auto-archive": "false"})
    assert told.status_code == 200, told.text
    assert client.post("/data/services/archive", params={"src": also_before}).status_code == 303


def test_prearchive_file_honours_a_byte_range(client: httpx.Client) -> None:
    uri = _prearchive_upload(client, "E1")
    assert client.post(f"/data{uri}", params={"action": "build"}).status_code == 200
    files = _rows(client, f"/data{uri}/scans/1/resources/DICOM/files")
    whole = client.get(files[0]["URI"])
    part = client.get(files[0]["URI"], headers={"Range": "bytes=2-5"})
    assert part.status_code == 206
    assert part.content == whole.content[2:6]
