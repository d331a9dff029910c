"""Prearchive listings and actions over real HTTP (§4.2, §9): scans, resources, files."""

from __future__ import annotations

import httpx

from xnatio.config import XnatConfig
from xnatio.sandbox import Sandbox
from xnatio.verify import list_prearchive_files
from xnatio.xnat import XnatSession

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
    r = client.post(url, params={"action": "commit"})  # P1 is Manual: build only
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
    assert all(f.size > 0 and f.uri.startswith(url + "/scans/") for f in listed)
