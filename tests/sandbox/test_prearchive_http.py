"""Prearchive listings and actions over real HTTP (docs/xnat-behaviour.md §4.2, §9): scans,
resources, files."""

from __future__ import annotations

import httpx

from xnatio.config import XnatConfig
from xnatio.sandbox import Sandbox
from xnatio.xnat.listings import list_prearchive_files
from xnatio.xnat.session import XnatSession

from .conftest import IMPORT, import_params, make_files, tar_bytes


def _upload(client: httpx.Client, files: dict[str, bytes], **extra: str) -> str:
    """Import ``files`` into the prearchive; return the session's ``/data/prearchive/...`` URL."""
    r = client.post(
        IMPORT,
        params=import_params(prevent_auto_commit="true", **extra),
        content=tar_bytes(files),
        headers={"Content-Type": "application/x-tar"},
    )
    assert r.status_code == 200, r.text
    return r.text.strip()


def _rows(client: httpx.Client, path: str) -> list[dict[str, str]]:
    r = client.get(path, params={"format": "json"})
    assert r.status_code == 200, r.text
    rows: list[dict[str, str]] = r.json()["ResultSet"]["Result"]
    assert all(isinstance(v, str) for row in rows for v in row.values())
    return rows


def _build(client: httpx.Client, url: str) -> None:
    r = client.post(url, params={"action": "build"})
    assert r.status_code == 200, r.text


def test_scan_listings_need_a_built_session(client: httpx.Client) -> None:
    url = _upload(client, make_files(2, series=2))
    # Before the first build there is no session document: XNAT answers 404.
    r = client.get(url + "/scans", params={"format": "json"})
    assert r.status_code == 404
    assert "Unable to locate prearc resource." in r.text
    _build(client, url)
    scans = _rows(client, url + "/scans")
    assert [(s["ID"], s["xsiType"], s["series_description"]) for s in scans] == [
        ("1", "xnat:mrScanData", "T1"),
        ("2", "xnat:mrScanData", "T1"),
    ]
    resources = _rows(client, url + "/scans/1/resources")
    assert [(r["label"], r["file_count"]) for r in resources] == [("DICOM", "2")]
    assert int(resources[0]["file_size"]) > 0


def test_scan_files_and_downloads(client: httpx.Client) -> None:
    files = make_files(3)
    url = _upload(client, files)
    _build(client, url)
    path = url + "/scans/1/resources/DICOM/files"
    rows = _rows(client, path)
    assert [r["Name"] for r in rows] == ["s1_IM0001.dcm", "s1_IM0002.dcm", "s1_IM0003.dcm"]
    assert set(rows[0]) == {"Name", "Size", "URI"}
    assert rows[0]["URI"] == f"{path}/s1_IM0001.dcm"
    assert rows[0]["Size"] == str(len(files["s1/IM0001.dcm"]))
    got = client.get(rows[0]["URI"])
    assert got.status_code == 200 and got.content == files["s1/IM0001.dcm"]
    missing = client.get(f"{path}/nope.dcm")
    assert missing.status_code == 400 and "Unable to access the file at: nope.dcm" in missing.text
    # XNAT has no ALL shortcut for the prearchive, and unknown scans or resources are 404.
    assert client.get(url + "/scans/ALL/resources/DICOM/files").status_code == 404
    assert client.get(url + "/scans/9/resources/DICOM/files").status_code == 404
    assert client.get(url + "/scans/1/resources/secondary/files").status_code == 404


def test_verify_client_reads_the_prearchive_listings(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    url = _upload(client, make_files(2, series=2))
    config = XnatConfig(server=sandbox.url, username="admin", password="admin")
    with XnatSession(config, timeout=30) as xnat:
        xnat.login()
        assert list_prearchive_files(xnat, url) is None  # not built yet
        _build(client, url)
        listed = list_prearchive_files(xnat, url)
    assert listed is not None
    assert sorted((f.scan, f.name) for f in listed) == [
        ("1", "s1_IM0001.dcm"),
        ("1", "s1_IM0002.dcm"),
        ("2", "s2_IM0001.dcm"),
        ("2", "s2_IM0002.dcm"),
    ]
    assert all(f.size is not None and f.size > 0 for f in listed)
    assert all(f.uri.startswith(url + "/scans/") for f in listed)


def _status(client: httpx.Client, url: str) -> str:
    (row,) = _rows(client, url)
    return row["status"]


def test_build_and_reset_status(client: httpx.Client) -> None:
    url = _upload(client, make_files(1))
    reset = client.post(url, params={"action": "reset-status"})
    assert reset.status_code == 200 and reset.text == url
    assert reset.headers["content-type"].startswith("text/uri-list")
    assert _status(client, url) == "RECEIVING"  # never built: no session document
    r = client.post(url, params={"action": "build"})
    assert r.status_code == 200 and r.text == url
    assert _status(client, url) == "READY"
    assert client.get("/data/projects/P1/subjects/S1/experiments/E1").status_code == 404
    client.post(url, params={"action": "reset-status", "tag": "1.2.3"})
    (row,) = _rows(client, url)
    assert (row["status"], row["tag"]) == ("READY", "1.2.3")
    bad = client.post(url, params={"action": "frobnicate"})
    assert bad.status_code == 400
    assert "unsupported action on prearchive session: frobnicate" in bad.text
    none = client.post(url)
    assert none.status_code == 400 and "No action parameter was specified" in none.text
    missing = client.post(url.rsplit("/", 1)[0] + "/NOPE", params={"action": "build"})
    assert missing.status_code == 404


def test_move_to_another_project(sandbox: Sandbox, client: httpx.Client) -> None:
    assert client.put("/data/projects/P2").status_code == 200
    url = _upload(client, make_files(2))
    ts = url.split("/")[-2]
    denied = client.post(url, params={"action": "move", "newProject": "NOPE"})
    assert denied.status_code == 403
    assert "Unable to modify session data for destination project." in denied.text
    r = client.post(url, params={"action": "move", "newProject": "P2"}, follow_redirects=False)
    assert r.status_code == 301, r.text
    new_url = f"/data/prearchive/projects/P2/{ts}/E1"
    assert r.text == new_url
    assert _rows(client, "/data/prearchive/projects/P1") == []
    (row,) = _rows(client, "/data/prearchive/projects/P2")
    assert (row["project"], row["status"], row["url"]) == ("P2", "READY", new_url[len("/data") :])
    assert len(_rows(client, new_url + "/scans/1/resources/DICOM/files")) == 2
    assert not (sandbox.store.data_dir / "prearchive" / "P1" / ts).exists()
    # Committed from its new home, it archives into P2.
    commit = client.post(
        new_url,
        params={"action": "commit", "AA": "true"},
        follow_redirects=False,
    )
    assert commit.status_code == 301, commit.text
    assert "/archive/projects/P2/" in commit.text
    assert len(_rows(client, "/data/projects/P2/subjects/S1/experiments/E1/scans/ALL/files")) == 2


def test_move_out_of_unassigned(client: httpx.Client) -> None:
    r = client.post(
        IMPORT,
        params={"import-handler": "DICOM-zip", "inbody": "true", "project": "NOPE"},
        content=tar_bytes(make_files(1)),
        headers={"Content-Type": "application/x-tar"},
    )
    url = r.text.strip()
    assert "/prearchive/projects/Unassigned/" in url
    moved = client.post(url, params={"action": "move", "newProject": "P1"}, follow_redirects=False)
    assert moved.status_code == 301
    assert moved.text.startswith("/data/prearchive/projects/P1/")
    assert _rows(client, "/data/prearchive/projects/Unassigned") == []


def test_delete_a_prearchive_session(sandbox: Sandbox, client: httpx.Client) -> None:
    url = _upload(client, make_files(2))
    ts = url.split("/")[-2]
    r = client.delete(url)
    assert r.status_code == 200, r.text
    assert _rows(client, "/data/prearchive/projects/P1") == []
    assert not (sandbox.store.data_dir / "prearchive" / "P1" / ts).exists()
    assert client.delete(url).status_code == 404
    # A new upload of the same study starts a fresh session.
    again = _upload(client, make_files(1))
    assert again != url and len(_rows(client, "/data/prearchive/projects/P1")) == 1
