"""The URIs that listings return, over real HTTP: accession-ID routes (docs/xnat-behaviour.md
§1.2, §4.2)."""

from __future__ import annotations

import httpx
import pytest

from .conftest import IMPORT, import_params, make_files, tar_bytes


def _archive(client: httpx.Client, files: dict[str, bytes]) -> None:
    r = client.post(
        IMPORT,
        params=import_params(dest="/archive/projects/P1/subjects/S1/experiments/E1"),
        content=tar_bytes(files),
        headers={"Content-Type": "application/x-tar"},
    )
    assert r.status_code == 200, r.text


def _rows(client: httpx.Client, path: str) -> list[dict[str, str]]:
    r = client.get(path, params={"format": "json"})
    assert r.status_code == 200, r.text
    rows: list[dict[str, str]] = r.json()["ResultSet"]["Result"]
    return rows


@pytest.mark.parametrize("prefix", ["/data", "/REST", "/data/archive"])
def test_listing_uris_resolve(client: httpx.Client, prefix: str) -> None:
    files = make_files(2)
    _archive(client, files)
    (exp,) = _rows(client, "/data/projects/P1/experiments")
    assert exp["URI"].startswith("/data/experiments/XNAT_E")
    path = prefix + exp["URI"][len("/data") :]
    item = client.get(path, params={"format": "json"})
    assert item.status_code == 200, item.text
    fields = item.json()["items"][0]["data_fields"]
    assert (fields["ID"], fields["label"], fields["project"]) == (exp["ID"], "E1", "P1")
    (scan,) = _rows(client, path + "/scans")
    assert scan["URI"] == f"/data/experiments/{exp['ID']}/scans/1"
    one = client.get(prefix + scan["URI"][len("/data") :], params={"format": "json"})
    assert one.status_code == 200
    assert one.json()["items"][0]["data_fields"]["ID"] == "1"
    rows = _rows(client, path + "/scans/ALL/files")
    assert len(rows) == 2
    by_uri = _rows(client, path + "/scans/1/resources/DICOM/files")
    assert [r["URI"] for r in by_uri] == [r["URI"] for r in rows]
    got = client.get(rows[0]["URI"])
    assert got.status_code == 200 and got.content in files.values()
    assert client.get(path + "/scans/1/resources").status_code == 200

    (subject,) = _rows(client, "/data/projects/P1/subjects")
    subj = client.get(subject["URI"], params={"format": "json"})
    assert subj.status_code == 200
    assert subj.json()["items"][0]["data_fields"]["label"] == "S1"
    by_label = client.get("/data/projects/P1/experiments/E1", params={"format": "json"})
    assert by_label.status_code == 200
    assert by_label.json()["items"][0]["data_fields"]["ID"] == exp["ID"]


def test_accession_id_routes_404(client: httpx.Client) -> None:
    assert client.get("/data/experiments/XNAT_E99999").status_code == 404
    assert client.get("/data/experiments/E1").status_code == 404  # labels need a project
    assert client.get("/data/experiments/XNAT_E99999/scans").status_code == 404
    assert client.get("/data/subjects/XNAT_S99999").status_code == 404
    assert client.get("/data/projects/P1/experiments/NOPE").status_code == 404


def test_writes_through_the_accession_path(client: httpx.Client) -> None:
    _archive(client, make_files(1))
    (exp,) = _rows(client, "/data/projects/P1/experiments")
    base = exp["URI"]
    put = client.put(base + "/resources/NOTES/files/n.txt", content=b"note")
    assert put.status_code == 200, put.text
    assert [r["Name"] for r in _rows(client, base + "/resources/NOTES/files")] == ["n.txt"]
    assert client.delete(base + "/resources/NOTES/files/n.txt").status_code == 200
    assert client.put(base, content=b"").status_code == 405
