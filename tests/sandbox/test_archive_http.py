"""Archived sessions over real HTTP: deleting stored files (docs/xnat-behaviour.md §4.2, §7)."""

from __future__ import annotations

import httpx

from xnatio.sandbox import Sandbox

from .conftest import IMPORT, import_params, make_files, tar_bytes

EXP = "/data/projects/P1/subjects/S1/experiments/E1"


def _archive(client: httpx.Client, files: dict[str, bytes]) -> None:
    r = client.post(
        IMPORT,
        params=import_params(dest="/archive/projects/P1/subjects/S1/experiments/E1"),
        content=tar_bytes(files),
        headers={"Content-Type": "application/x-tar"},
    )
    assert r.status_code == 200, r.text
    assert r.text.strip() == "/data/archive/projects/P1/subjects/S1/experiments/E1"


def _rows(client: httpx.Client, path: str) -> list[dict[str, str]]:
    r = client.get(path, params={"format": "json"})
    assert r.status_code == 200, r.text
    rows: list[dict[str, str]] = r.json()["ResultSet"]["Result"]
    return rows


def test_delete_one_file_over_rest_and_from_the_store(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    _archive(client, make_files(3, series=2))
    names = [r["Name"] for r in _rows(client, EXP + "/scans/ALL/files")]
    assert len(names) == 6
    r = client.delete(EXP + f"/scans/1/resources/DICOM/files/{names[0]}")
    assert r.status_code == 200, r.text
    left = _rows(client, EXP + "/scans/ALL/files")
    assert len(left) == 5 and names[0] not in [x["Name"] for x in left]
    assert not list(sandbox.store.data_dir.rglob(names[0]))
    again = client.delete(EXP + f"/scans/1/resources/DICOM/files/{names[0]}")
    assert again.status_code == 404 and "Unable to find file." in again.text
    assert client.delete(EXP + "/scans/7/resources/DICOM/files/x.dcm").status_code == 404

    # The same through the store's public API (scan 2's first file).
    victim = next(x["Name"] for x in left if "/scans/2/" in x["URI"])
    sandbox.store.delete_file("P1", "S1", "E1", "2", victim)
    assert len(_rows(client, EXP + "/scans/ALL/files")) == 4
    assert sandbox.store.scan_file_uids("P1", "S1", "E1").keys() == {"1", "2"}


def test_delete_a_session_resource_file(client: httpx.Client) -> None:
    _archive(client, make_files(1))
    put = client.put(EXP + "/resources/NOTES/files/a/b.txt", content=b"hello")
    assert put.status_code == 200, put.text
    assert [r["Name"] for r in _rows(client, EXP + "/resources/NOTES/files")] == ["b.txt"]
    r = client.delete(EXP + "/resources/NOTES/files/a/b.txt")
    assert r.status_code == 200
    assert _rows(client, EXP + "/resources/NOTES/files") == []
