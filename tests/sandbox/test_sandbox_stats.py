"""The sandbox counts what is open at once: HTTP connections and requests, DICOM associations.

Each count is checked against connections the test itself holds open; a connection counts as
seen once it has been answered, so no test waits on timing.
"""

from __future__ import annotations

import base64
import http.client
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from xnatio.sandbox import Sandbox
from xnatio.sandbox.stats import Gauge, Reading

WAIT = 30.0
AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}


@contextmanager
def _open_connections(sandbox: Sandbox, count: int) -> Iterator[list[http.client.HTTPConnection]]:
    """``count`` keep-alive connections, each answered once (so the server has accepted it)."""
    with ExitStack() as stack:
        conns = []
        for _ in range(count):
            conn = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=WAIT)
            stack.callback(conn.close)
            conn.request("GET", "/data/auth", headers=AUTH)
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 200 and not answer.will_close
            conns.append(conn)
        yield conns


def _idle(gauge: Gauge) -> None:
    assert gauge.wait_for(lambda n: n == 0, WAIT), gauge


def test_open_connections_are_counted_with_their_peak(sandbox: Sandbox) -> None:
    with _open_connections(sandbox, 5):
        assert sandbox.stats().http_connections == Reading(current=5, peak=5, total=5)
        with _open_connections(sandbox, 2):
            assert sandbox.stats().http_connections == Reading(current=7, peak=7, total=7)
        _idle_at(sandbox.http_connections, 5)
    _idle(sandbox.http_connections)
    assert sandbox.stats().http_connections == Reading(current=0, peak=7, total=7)


def _idle_at(gauge: Gauge, value: int) -> None:
    assert gauge.wait_for(lambda n: n == value, WAIT), gauge


def test_connections_one_after_another_peak_at_one(sandbox: Sandbox) -> None:
    for _ in range(4):
        with _open_connections(sandbox, 1):
            pass
        _idle(sandbox.http_connections)
    assert sandbox.stats().http_connections == Reading(current=0, peak=1, total=4)
    assert sandbox.stats().http_requests == Reading(current=0, peak=1, total=4)


def test_stats_route_reads_and_resets(sandbox: Sandbox) -> None:
    with _open_connections(sandbox, 3):
        pass
    _idle(sandbox.http_connections)
    with httpx.Client(base_url=sandbox.url, auth=("admin", "admin"), timeout=WAIT) as client:
        stats = client.get("/sandbox/stats").json()
        # The asking connection is open, and so is its request.
        assert stats["http_connections"] == {"current": 1, "peak": 3, "total": 4}
        assert stats["http_requests"]["current"] == 1
        assert stats["dicom_associations"] == {"current": 0, "peak": 0, "total": 0}
        assert stats["ingest"] is None
        after = client.delete("/sandbox/stats").json()
        assert after["http_connections"] == {"current": 1, "peak": 1, "total": 0}
        with _open_connections(sandbox, 2):
            again = client.get("/sandbox/stats").json()
        assert again["http_connections"] == {"current": 3, "peak": 3, "total": 2}


def test_stats_route_needs_the_login(sandbox: Sandbox) -> None:
    assert httpx.get(sandbox.url + "/sandbox/stats", timeout=WAIT).status_code == 401
    bad = httpx.delete(sandbox.url + "/sandbox/stats", auth=("admin", "wrong"), timeout=WAIT)
    assert bad.status_code == 401
    assert sandbox.stats().http_connections.peak >= 1  # they were counted all the same


@pytest.mark.parametrize("count", [1, 3])
def test_dicom_associations_are_counted(make_sandbox: Callable[..., Sandbox], count: int) -> None:
    sandbox = make_sandbox(dicom_port=0)
    assert sandbox.dicom_port is not None
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assocs = [ae.associate("127.0.0.1", sandbox.dicom_port, ae_title=sandbox.aet)
              for _ in range(count)]  # fmt: skip
    try:
        assert all(a.is_established for a in assocs)
        assert sandbox.stats().dicom_associations == Reading(count, count, count)
    finally:
        for assoc in assocs:
            assoc.release()
    _idle(sandbox.dicom_associations)
    assert sandbox.stats().dicom_associations == Reading(0, count, count)
    assert sandbox.stats().http_connections.total == 0


def test_gauge_reset_keeps_what_is_open() -> None:
    gauge = Gauge()
    for _ in range(3):
        gauge.up()
    gauge.down()
    assert gauge.reading() == Reading(2, 3, 3)
    gauge.reset()
    assert gauge.reading() == Reading(2, 2, 0)
    with gauge.held():
        assert gauge.reading() == Reading(3, 3, 1)
    assert not gauge.wait_for(lambda n: n == 0, 0.01)
