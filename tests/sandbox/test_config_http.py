"""Site DICOM routing configuration over real HTTP: ``/data/config/dicom/...``
(docs/xnat-behaviour.md §6.2)."""

from __future__ import annotations

import httpx

from .conftest import IMPORT, make_files, tar_bytes

RULES = "/data/config/dicom/sessionRules"


def _import_without_labels(client: httpx.Client) -> str:
    """Import a fresh study naming only the project; return the prearchive session's name."""
    r = client.post(
        IMPORT,
        params={"import-handler": "DICOM-zip", "inbody": "true", "project": "P1"},
        content=tar_bytes(make_files(1)),
        headers={"Content-Type": "application/x-tar"},
    )
    assert r.status_code == 200, r.text
    return r.text.strip().rsplit("/", 1)[-1]


def test_put_get_and_disable_routing_rules(client: httpx.Client) -> None:
    missing = client.get(RULES, params={"format": "json"})
    assert missing.status_code == 404
    assert "Couldn't find config for user admin" in missing.text
    assert _import_without_labels(client) == "PID001"  # PatientID, the default session label

    rule = r"(0010,0010):(\w+)\^"
    put = client.put(RULES, content=rule, headers={"Content-Type": "text/plain"})
    assert put.status_code == 201, put.text
    same = client.put(RULES, content=rule, headers={"Content-Type": "text/plain"})
    assert same.status_code == 200  # unchanged contents: nothing new is stored
    assert client.get(RULES, params={"contents": "true"}).text == rule
    (row,) = client.get(RULES, params={"format": "json"}).json()["ResultSet"]["Result"]
    assert (row["tool"], row["path"], row["contents"], row["status"], row["version"]) == (
        "dicom",
        "sessionRules",
        rule,
        "enabled",
        "1",
    )
    assert _import_without_labels(client) == "Test"  # PatientName Test^Patient

    assert client.delete(RULES).status_code == 200  # disables, keeps the text
    assert client.get(RULES, params={"contents": "true"}).status_code == 404
    (row,) = client.get(RULES, params={"format": "json"}).json()["ResultSet"]["Result"]
    assert row["status"] == "disabled" and row["contents"] == rule
    assert _import_without_labels(client) == "PID001"
    assert client.put(RULES, params={"status": "enabled"}).status_code == 200
    assert _import_without_labels(client) == "Test"
    assert client.put(RULES, params={"status": "maybe"}).status_code == 400


def test_bad_rules_and_unknown_paths(client: httpx.Client) -> None:
    bad = client.put(
        "/data/config/dicom/projectRules",
        content="not a rule",
        headers={"Content-Type": "text/plain"},
    )
    assert bad.status_code == 400
    assert client.get("/data/config/dicom/projectRules").status_code == 404
    assert client.put("/data/config/dicom/other", content="x").status_code == 404
    for kind in ("projectRules", "subjectRules", "aaRules"):
        r = client.put(
            f"/data/config/dicom/{kind}",
            content="(0010,0020):(.*)",
            headers={"Content-Type": "text/plain"},
        )
        assert r.status_code == 201, (kind, r.text)
