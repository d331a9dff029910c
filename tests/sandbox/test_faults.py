"""Fault injection (issue 2): each fault, set in Python, at start, and over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from xnatio.sandbox import Sandbox

from .conftest import IMPORT, import_params, make_files, tar_bytes

TAR = {"Content-Type": "application/x-tar"}


def _post(client: httpx.Client, body: bytes, **params: str) -> httpx.Response:
    return client.post(IMPORT, params=import_params(**params), content=body, headers=TAR)


def _file_count(sandbox: Sandbox) -> int:
    total = 0
    for row in sandbox.store.prearchive_rows("P1"):
        ts, folder = row["timestamp"], row["folderName"]
        total += len(sandbox.store.prearchive_files("P1", ts, folder))
    return total


def test_drop_connection_mid_body_then_recover(sandbox: Sandbox, client: httpx.Client) -> None:
    body = tar_bytes(make_files(40, pixel_bytes=20_000))  # about 850 kB
    sandbox.faults.drop_connection(after_bytes=100_000, count=1)
    with pytest.raises(httpx.TransportError):
        _post(client, body)
    assert _file_count(sandbox) < 40  # stopped part-way; what was written stays
    ok = _post(client, body, session="E2")
    assert ok.status_code == 200
    assert sandbox.faults.snapshot()["drop_connection"] == []


def test_drop_applies_only_to_matching_paths(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.faults.drop_connection(after_bytes=0, count=1, path="/data/services/import")
    assert client.get("/data/projects").status_code == 200
    with pytest.raises(httpx.TransportError):
        _post(client, tar_bytes(make_files(1)))


@pytest.mark.parametrize("status", [500, 502, 503])
def test_http_error_for_next_k_requests(
    sandbox: Sandbox, client: httpx.Client, status: int
) -> None:
    sandbox.faults.http_error(status, count=2, path="/data/services/import")
    body = tar_bytes(make_files(1))
    assert client.get("/data/projects").status_code == 200  # other paths unaffected
    assert _post(client, body).status_code == status
    assert _post(client, body).status_code == status
    assert _post(client, body).status_code == 200


def test_gateway_timeout_while_import_carries_on(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.faults.file_delay = 0.1
    sandbox.faults.gateway_timeout(after_seconds=0.2)
    r = _post(client, tar_bytes(make_files(12)))
    assert r.status_code == 504
    assert _file_count(sandbox) < 12  # answered before the import (12 x 0.1 s) finished
    deadline = time.monotonic() + 10
    while _file_count(sandbox) < 12:
        assert time.monotonic() < deadline, "the import did not carry on after the 504"
        time.sleep(0.05)


def test_file_delay_slows_each_file(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.faults.file_delay = 0.1
    started = time.monotonic()
    assert _post(client, tar_bytes(make_files(4))).status_code == 200
    assert time.monotonic() - started >= 0.4


def test_disk_full_fails_writes_as_client_error(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.faults.disk_full = True
    r = _post(client, tar_bytes(make_files(2)))
    assert r.status_code == 400
    assert "unable to read DICOM object" in r.text
    sandbox.faults.disk_full = False
    assert _post(client, tar_bytes(make_files(2))).status_code == 200


def test_faults_over_http(sandbox: Sandbox, client: httpx.Client) -> None:
    r = client.put("/sandbox/faults", json={"http_error": {"status": 503, "count": 1}})
    assert r.status_code == 200
    assert r.json()["http_error"] == [{"status": 503, "count": 1, "path": "/"}]
    assert client.get("/data/projects").status_code == 503
    assert client.get("/data/projects").status_code == 200
    sid = client.get("/data/JSESSION").text
    assert client.put("/sandbox/faults", json={"expire_sessions": True}).status_code == 200
    assert httpx.get(sandbox.url + "/data/auth", cookies={"JSESSIONID": sid}).status_code == 401
    client.put("/sandbox/faults", json={"file_delay": 0.25, "disk_full": True})
    assert sandbox.faults.file_delay == 0.25
    assert sandbox.faults.disk_full
    assert client.put("/sandbox/faults", json={"clear": True}).json()["disk_full"] is False
    assert client.put("/sandbox/faults", json={"nonsense": 1}).status_code == 400
    assert client.put("/sandbox/faults", json={"http_error": {"bogus": 1}}).status_code == 400
    assert client.put("/sandbox/faults", content=b"[1]").status_code == 400
    assert httpx.put(sandbox.url + "/sandbox/faults", json={"clear": True}).status_code == 401


def test_faults_at_start(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(faults={"http_error": [{"status": 502, "count": 1, "path": "/data"}]})
    with httpx.Client(base_url=sandbox.url, auth=("admin", "admin")) as client:
        assert client.get("/data/projects").status_code == 502
        assert client.get("/data/projects").status_code == 200


def test_fault_spec_errors_apply_nothing(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        sandbox.faults.apply({"http_error": {"status": 503}, "oops": True})
    assert sandbox.faults.snapshot()["http_error"] == []
    with pytest.raises(ValueError, match="not an error status"):
        sandbox.faults.http_error(200)
