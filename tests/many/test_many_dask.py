"""upload-many on a real Dask cluster: a scheduler and two worker processes on loopback.

One cluster serves the module (starting one takes seconds). The last test kills a worker
while its session is half sent; its nanny starts a new one.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xnatio.config import XnatConfig
from xnatio.many import ManyEvent, ManyOptions, read_manifest, upload_many
from xnatio.options import RestOptions
from xnatio.sandbox import Sandbox

from .helpers import CountingProxy, manifest, write_sessions
from .test_many_run import count_logins, rows, stored

distributed = pytest.importorskip("distributed")
dask_config = pytest.importorskip("dask.config")

pytestmark = pytest.mark.filterwarnings(
    # distributed's own clean-up at interpreter level, not ours
    "ignore::ResourceWarning",
    "ignore::DeprecationWarning",
)


@pytest.fixture(scope="module")
def cluster(_workers_cache: None) -> Iterator[Any]:
    # A lost worker's semaphore leases expire after 2 s instead of 30.
    settings = {
        "distributed.scheduler.locks.lease-timeout": "2s",
        "distributed.scheduler.locks.lease-validation-interval": "0.5s",
        "distributed.scheduler.worker-ttl": None,
    }
    with (
        dask_config.set(settings),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
            dashboard_address=None, silence_logs=40,
        ) as c,
    ):  # fmt: skip
        yield c


@pytest.fixture(scope="module", autouse=True)
def _workers_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The worker processes keep their journals in a cache folder of the test's own."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("workers-cache")))
        yield


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for _ in write_sessions(root, 6, series=2, instances=4):
        pass
    return root


def options(batches: int = 4, workers: int = 4, **kw: Any) -> ManyOptions:
    rest = RestOptions(num_batches=batches, upload_workers=workers)
    return ManyOptions(rest=rest, **kw)


def test_sessions_land_once_under_one_cluster_wide_cap(
    cluster: Any,
    sandbox: Sandbox,
    sources: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logins = count_logins(sandbox, monkeypatch)
    specs = read_manifest(manifest(tmp_path / "m.csv", rows(sources)))
    with CountingProxy(sandbox.port) as proxy:
        config = XnatConfig(f"http://127.0.0.1:{proxy.port}", "admin", "admin")
        result = upload_many(
            specs, server=config, options=options(max_connections=3, max_sessions=4),
            dask=cluster.scheduler_address,
        )  # fmt: skip
    assert [o.status for o in result.outcomes] == ["landed"] * 6, [
        o.errors for o in result.outcomes
    ]
    assert proxy.gauge.peak <= 3, f"{proxy.gauge.peak} connections at once with a cap of 3"
    workers = {o.worker for o in result.outcomes}
    assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)
    # One login in this process (the pre-flight), one per worker process that ran sessions.
    assert len(logins) == 1 + len(workers)
    for i in range(6):
        assert len(stored(sandbox, "P1", f"SUB{i}", f"E{i}")) == 8
    # The sessions' journals came back to this process.
    assert all(o.journal and Path(o.journal).is_file() for o in result.outcomes)


def _kill_when_half_sent(
    cluster: Any, victim: str, seen: threading.Event, killed: list[int]
) -> Callable[[ManyEvent], None]:
    """A progress callback that kills the worker running ``victim`` once a batch landed."""
    client = distributed.Client(cluster.scheduler_address, set_as_default=False)

    def on_event(event: ManyEvent) -> None:
        e = event.event
        if seen.is_set() or event.session != victim or e is None:
            return
        if e.phase == "uploading" and e.current >= 1:
            seen.set()
            threading.Thread(target=kill, daemon=True).start()

    def kill() -> None:
        index = int(victim.rsplit("E", 1)[1]) + 1  # tasks are numbered in plan order
        for address, keys in client.processing().items():
            if any(str(k).endswith(f"-{index}") for k in keys):
                pid = client.run(os.getpid, workers=[address])[address]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        client.close()

    return on_event


def test_a_killed_worker_s_session_is_run_again_elsewhere_and_lands_once(
    cluster: Any, sandbox: Sandbox, sources: Path, tmp_path: Path
) -> None:
    # One file per batch, one batch at a time, 0.2 s per stored file: a session takes about
    # 1.6 s, and the kill comes after its first batch.
    sandbox.faults.file_delay = 0.2
    specs = read_manifest(manifest(tmp_path / "m.csv", rows(sources)))
    victim = "P1/SUB1/E1"
    seen, killed = threading.Event(), list[int]()
    result = upload_many(
        specs,
        server=XnatConfig(sandbox.url, "admin", "admin"),
        options=options(batches=8, workers=1, max_connections=4, max_sessions=2),
        dask=cluster.scheduler_address,
        progress_callback=_kill_when_half_sent(cluster, victim, seen, killed),
        run_journal=tmp_path / "run.jsonl",
    )
    assert seen.is_set() and killed, "the victim's worker was not killed"
    by_key = {o.key: o for o in result.outcomes}
    assert [o.status for o in result.outcomes] == ["landed"] * 6, [
        o.errors for o in result.outcomes
    ]
    again = by_key[victim]
    assert again.attempts == 2
    # The second attempt found what the first delivered (the prearchive is the safety net)
    # and sent only the rest.
    assert again.already_present >= 1 and again.files_sent + again.already_present == 8
    for i in range(6):
        assert len(stored(sandbox, "P1", f"SUB{i}", f"E{i}")) == 8  # every instance once
    records = (tmp_path / "run.jsonl").read_text().splitlines()
    finals = [r for r in records if '"type":"session"' in r and '"status":"started"' not in r]
    assert len(finals) == 6  # one outcome per session in the run journal
