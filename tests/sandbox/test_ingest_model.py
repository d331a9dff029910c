"""The ingest model (``ingest_profile``): an XNAT that queues, refuses and times out.

Orderings are proven by the model's gauges and by holding its session lock, never by timing
upper bounds: a test holds the lock, waits until the requests it started stand where they should
(at the lock, in the queue), checks what the server answers meanwhile, then lets them go
(docs/xnat-behaviour.md §3.9 item 4 and §8 give the limits modelled).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from xnatio.sandbox import Sandbox
from xnatio.sandbox.ingest import PROFILES, IngestModel, IngestProfile, ingest_profile

from .conftest import IMPORT, import_params, make_files, tar_bytes, zip_bytes

WAIT = 30.0  # generous bound for events that should happen at once


def _profile(**overrides: Any) -> IngestProfile:
    """No cost per file and no proxy unless asked: each test sets what it checks."""
    base: dict[str, Any] = {
        "file_seconds": 0.0,
        "lock_seconds": 0.0,
        "request_threads": 8,
        "accept_count": 8,
        "db_connections": 40,
        "proxy_read_timeout": None,
        "time_scale": 1.0,
    }
    return IngestProfile(**{**base, **overrides})


def _model(sandbox: Sandbox) -> IngestModel:
    model = sandbox.ingest
    assert model is not None
    return model


def _post(sandbox: Sandbox, body: bytes, session: str = "E1", **headers: str) -> httpx.Response:
    """One DICOM-zip import of a tar on a connection of its own."""
    with httpx.Client(base_url=sandbox.url, auth=("admin", "admin"), timeout=WAIT * 2) as c:
        return c.post(
            IMPORT,
            params=import_params(session=session),
            content=body,
            headers={"Content-Type": "application/x-tar", **headers},
        )


@contextmanager
def _held(lock: Any) -> Iterator[None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _stored(sandbox: Sandbox) -> dict[str, int]:
    """Files per prearchive session folder of project P1."""
    store = sandbox.store
    rows = store.prearchive_rows("P1")
    return {
        r["folderName"]: len(store.prearchive_files("P1", r["timestamp"], r["folderName"]))
        for r in rows
    }


def _one_file(study: str, tag: str) -> bytes:
    """A tar of one new object of ``study``, under a name of its own."""
    return tar_bytes({f"{tag}/{k}": v for k, v in make_files(1, study_uid=study).items()})


def _wait(gauge_wait: Callable[..., bool], value: int) -> None:
    assert gauge_wait(lambda n: n == value, WAIT), f"gauge never reached {value}"


def test_requests_queue_then_get_503(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(ingest_profile=_profile(request_threads=1, accept_count=1))
    model = _model(sandbox)
    first, second = tar_bytes(make_files(2)), tar_bytes(make_files(2))
    with cf.ThreadPoolExecutor(2) as pool, _held(model.session_lock):
        running = pool.submit(_post, sandbox, first, "E1")
        _wait(model.lock_waiting.wait_for, 1)  # holds the one thread, stopped at the lock
        queued = pool.submit(_post, sandbox, second, "E2")
        _wait(model.queued.wait_for, 1)
        with httpx.Client(base_url=sandbox.url, auth=("admin", "admin"), timeout=WAIT) as c:
            refused = c.post(IMPORT, params=import_params(session="E3"), content=first,
                             headers={"Content-Type": "application/x-tar"})  # fmt: skip
            assert refused.status_code == 503
            # /sandbox/ routes bypass the model: the statistics answer while it is full.
            stats = c.get("/sandbox/stats").json()["ingest"]
        assert stats["threads"]["current"] == 1 and stats["queued"]["current"] == 1
        assert stats["refused"] == 1
        assert not running.done() and not queued.done()
    assert running.result().status_code == 200
    assert queued.result().status_code == 200
    assert _stored(sandbox) == {"E1": 2, "E2": 2}  # nothing of the refused request
    final = sandbox.stats().ingest
    assert final is not None
    assert (final.threads.peak, final.queued.peak, final.refused) == (1, 1, 1)


def test_proxy_504_while_the_import_completes(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(ingest_profile=_profile(proxy_read_timeout=0.3))
    model = _model(sandbox)
    files = make_files(3)
    with _held(model.session_lock):
        started = time.monotonic()
        answer = _post(sandbox, tar_bytes(files))
        assert answer.status_code == 504
        assert time.monotonic() - started >= 0.3
        assert "504 Gateway Time-out" in answer.text
        # The server has not stored anything yet and still works on the request.
        assert _stored(sandbox) == {}
        # The proxy counts its 504 once the answer has gone out: the client may read it first.
        deadline = time.monotonic() + WAIT
        while (ingest := sandbox.stats().ingest) is not None and ingest.gateway_timeouts < 1:
            assert time.monotonic() < deadline, "the 504 was never counted"
            time.sleep(0.01)
        assert ingest is not None and ingest.threads.current == 1
        assert ingest.gateway_timeouts == 1 and ingest.finished_after_timeout == 0
        # The proxy closed the client's connection at the 504.
        assert sandbox.http_connections.wait_for(lambda n: n == 0, WAIT)
    assert model.wait_idle(WAIT)
    assert _stored(sandbox) == {"E1": 3}
    final = sandbox.stats().ingest
    assert final is not None and final.finished_after_timeout == 1 and final.files == 3


def test_session_lock_is_global_and_serialises(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(ingest_profile=_profile(request_threads=8))
    model = _model(sandbox)
    requests = 4
    with cf.ThreadPoolExecutor(requests) as pool:
        with _held(model.session_lock):
            # Four requests into one new session, and one more into another: all wait.
            study = generate_uid()
            futures = [pool.submit(_post, sandbox, _one_file(study, f"r{i}"), "E1")
                       for i in range(requests - 1)]  # fmt: skip
            futures.append(pool.submit(_post, sandbox, _one_file(generate_uid(), "x"), "E2"))
            _wait(model.lock_waiting.wait_for, requests)
            assert _stored(sandbox) == {}
            assert all(not f.done() for f in futures)
        assert [f.result().status_code for f in futures] == [200] * requests
    assert _stored(sandbox) == {"E1": requests - 1, "E2": 1}
    stats = sandbox.stats().ingest
    assert stats is not None and stats.lock_waiting.peak == requests


def test_lock_cost_adds_up_across_parallel_requests(make_sandbox: Callable[..., Sandbox]) -> None:
    """A lower bound only (a loaded machine makes it slower, never faster)."""
    lock_seconds, requests = 0.25, 5
    sandbox = make_sandbox(ingest_profile=_profile(lock_seconds=lock_seconds, request_threads=8))
    bodies = [tar_bytes(make_files(1)) for _ in range(requests)]
    started = time.monotonic()
    with cf.ThreadPoolExecutor(requests) as pool:
        codes = [r.status_code for r in pool.map(lambda b: _post(sandbox, b), bodies)]
    assert codes == [200] * requests
    assert time.monotonic() - started >= requests * lock_seconds


def test_database_pool_bounds_files_in_flight(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(ingest_profile=_profile(request_threads=8, db_connections=2))
    model = _model(sandbox)
    with cf.ThreadPoolExecutor(4) as pool:
        with _held(model.session_lock):
            futures = [pool.submit(_post, sandbox, tar_bytes(make_files(1)), f"E{i}")
                       for i in range(4)]  # fmt: skip
            _wait(model.db_waiting.wait_for, 2)
            assert model.db_connections.reading().current == 2
            assert model.lock_waiting.reading().current == 2
        assert [f.result().status_code for f in futures] == [200] * 4
    assert model.db_connections.reading().peak == 2


def test_time_scale_shortens_the_proxy_timeout(make_sandbox: Callable[..., Sandbox]) -> None:
    # 1,000 XNAT seconds at a scale of 1/2,000: the 504 comes after half a second.
    profile = _profile(proxy_read_timeout=1000.0, time_scale=0.0005)
    sandbox = make_sandbox(ingest_profile=profile)
    with _held(_model(sandbox).session_lock):
        started = time.monotonic()
        assert _post(sandbox, tar_bytes(make_files(1))).status_code == 504
        assert time.monotonic() - started >= 0.5


def test_chunked_bodies_pass_the_modelled_proxy_unchanged(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    """The proxy reads the whole body first; the server still sees a chunked body (§3.2)."""
    sandbox = make_sandbox(ingest_profile=_profile())

    def chunked(body: bytes, content_type: str) -> httpx.Response:
        with httpx.Client(base_url=sandbox.url, auth=("admin", "admin"), timeout=WAIT) as c:
            pieces = iter([body[: len(body) // 2], body[len(body) // 2 :]])
            return c.post(IMPORT, params=import_params(), content=pieces,
                          headers={"Content-Type": content_type})  # fmt: skip

    files = make_files(3)
    assert chunked(zip_bytes(files), "application/zip").status_code == 200
    refused = chunked(tar_bytes(files), "application/x-tar")
    assert refused.status_code == 400 and "In-body File posts" in refused.text
    assert _stored(sandbox) == {"E1": 3}


def test_without_a_profile_there_is_no_model(sandbox: Sandbox) -> None:
    assert sandbox.ingest is None
    assert sandbox.stats().ingest is None


def test_profiles_by_name_and_bad_values() -> None:
    xnat = ingest_profile("xnat")
    assert xnat is PROFILES["xnat"]
    assert (xnat.request_threads, xnat.accept_count, xnat.db_connections) == (200, 100, 40)
    assert xnat.proxy_read_timeout == 100.0
    assert ingest_profile("xnat", time_scale=1.0).time_scale == 1.0
    with pytest.raises(ValueError, match="unknown ingest profile"):
        ingest_profile("tomcat")
    for bad in ({"time_scale": 0.0}, {"time_scale": float("nan")}, {"lock_seconds": -1.0},
                {"request_threads": 0}, {"proxy_read_timeout": 0.0}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            IngestProfile(**bad)


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "xnatio", "sandbox", "--port", "0", "--dicom-port", "-1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "XNATIO_SANDBOX_PASSWORD": "admin"},
    )


def test_cli_option_turns_the_model_on() -> None:
    proc = _cli("--ingest-profile", "xnat", "--ingest-time-scale", "0.5",
                "--ingest-proxy-timeout", "0")  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[1].removeprefix("url=")
        stats = httpx.get(url + "/sandbox/stats", auth=("admin", "admin"), timeout=WAIT).json()
        profile = stats["ingest"]["profile"]
        assert (profile["name"], profile["time_scale"], profile["request_threads"]) == (
            "xnat",
            0.5,
            200,
        )
        assert profile["proxy_read_timeout"] is None
    finally:
        proc.terminate()
        proc.communicate(timeout=WAIT)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--ingest-time-scale", "0.5"), "need --ingest-profile"),
        (("--ingest-proxy-timeout", "5"), "need --ingest-profile"),
        (("--ingest-profile", "xnat", "--ingest-time-scale", "nan"), "time_scale"),
        (("--ingest-profile", "tomcat"), "tomcat"),
    ],
)
def test_cli_refuses_bad_ingest_options(args: tuple[str, ...], message: str) -> None:
    proc = _cli(*args)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 2, (out, err)
    assert message in err and "Traceback" not in err
