"""Compression, adaptive workers and --bwlimit in real uploads to the sandbox over loopback.

Timing-sensitive properties (that ``auto`` picks no compression on loopback and saves time on a
capped link) are shown by the benchmarks (docs/parallel-uploads.md); these tests check what can
fail deterministically: every instance lands once with every setting, compressed bodies are
smaller, deflate is chosen on a link that is slow per connection, the shared budget is the one
the controller drives, overload answers make it back off, ``auto`` cuts a large session into
smaller batches, and the rate limit is a floor on time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bench.proxy import ShapingProxy

from tests.test_rest_upload import assert_exactly_once, upload
from xnatio.budget import LocalBudget
from xnatio.config import XnatConfig
from xnatio.options import RestOptions
from xnatio.sandbox import Sandbox
from xnatio.synth import write_session
from xnatio.transport.link import Link
from xnatio.transport.rest import shared_link
from xnatio.upload.rest_flow import run_rest
from xnatio.upload.steps import Target
from xnatio.xnat.session import XnatSession


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session whose pixel data compresses about as real MR does (~2x with zlib level 1)."""
    out = tmp_path_factory.mktemp("real") / "session"
    write_session(out, series=2, instances=12, rows=128, columns=128, seed=3, content="realistic")
    return out


@pytest.fixture(scope="module")
def rle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rle") / "session"
    write_session(out, series=1, instances=6, rows=64, columns=64, seed=4, transfer_syntax="rle")
    return out


def sent(result: Any) -> int:
    return sum(b.sent for b in result.batches)


@pytest.mark.parametrize("compress", ["deflate", "auto", "none"])
def test_every_setting_lands_every_instance_once(
    sandbox: Sandbox, realistic: Path, compress: str
) -> None:
    result = upload(sandbox, realistic, compress=compress, upload_workers="auto:4")
    assert result.success, result.errors
    assert result.verification is not None and result.verification.ok
    assert_exactly_once(sandbox, 24)
    assert result.adaptive["compress"].startswith(compress)
    assert result.adaptive["workers"].startswith("auto:")


def test_deflate_sends_fewer_bytes_and_keeps_compressed_pixels_stored(
    sandbox: Sandbox, realistic: Path, rle: Path
) -> None:
    plain = upload(sandbox, realistic, session="E1", compress="none")
    deflated = upload(sandbox, realistic, session="E2", compress="deflate")
    assert plain.success and deflated.success
    assert sent(deflated) < 0.7 * sent(plain)
    assert sent(plain) > plain.bytes_sent  # tar framing on top of the files
    # RLE pixel data is already compressed: stored, so the body is the files plus zip framing.
    encapsulated = upload(sandbox, rle, session="E3", compress="deflate", num_batches=1)
    assert encapsulated.success, encapsulated.errors
    assert sent(encapsulated) > encapsulated.bytes_sent


@pytest.mark.slow
def test_auto_deflates_on_a_link_that_is_slow_per_connection(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    source = tmp_path / "session"
    write_session(
        source, series=2, instances=80, rows=256, columns=256, seed=5, content="realistic"
    )
    # 21 MB at 1 MB/s per connection over two connections: the link, not the CPU, limits.
    with ShapingProxy("127.0.0.1", sandbox.port, delay_ms=5, rate_bytes_per_s=1_000_000) as proxy:
        result = upload(
            sandbox,
            source,
            server=f"http://127.0.0.1:{proxy.port}",
            num_batches=4,
            upload_workers=2,
            compress="auto",
        )
    assert result.success, result.errors
    assert result.adaptive["compress"].startswith("auto -> deflate"), result.adaptive
    assert sent(result) < 0.8 * result.bytes_sent, (sent(result), result.adaptive)


def test_bwlimit_is_a_floor_on_the_time(sandbox: Sandbox, realistic: Path) -> None:
    started = time.monotonic()
    result = upload(sandbox, realistic, compress="none", bwlimit="1M")
    took = time.monotonic() - started
    assert result.success
    burst = 1 << 16  # the limiter's burst at 1 MiB/s: a tenth of a second's worth, at least 64 KiB
    assert took >= (sent(result) - burst) / (1 << 20)
    assert result.adaptive["bwlimit"] == "1.05 MB/s"


def test_overload_answers_make_the_controller_back_off(sandbox: Sandbox, realistic: Path) -> None:
    sandbox.faults.apply(
        {"http_error": {"status": 503, "count": 3, "path": "/data/services/import"}}
    )
    result = upload(
        sandbox, realistic, num_batches=12, upload_workers="auto:8", compress="none", max_attempts=5
    )
    assert result.success, result.errors
    assert result.retries == 3
    assert_exactly_once(sandbox, 24)
    assert "at most" in result.adaptive["workers"]


def test_sessions_sharing_a_client_share_one_link_and_one_budget(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sources = []
    for i in range(3):
        out = tmp_path / f"s{i}"
        write_session(out, series=2, instances=6, rows=64, columns=64, seed=10 + i)
        sources.append(out)
    budget = LocalBudget(6)
    config = XnatConfig(server=sandbox.url, username="admin", password="admin")
    options = RestOptions(num_batches=6, upload_workers=6, adaptive_workers=True)
    results: list[Any] = []
    with XnatSession(config, max_connections=10, budget=budget) as client:
        threads = [
            threading.Thread(
                target=lambda src=src, i=i: results.append(
                    run_rest(
                        src,
                        Target("P1", f"S{i}", f"E{i}"),
                        options,
                        config,
                        verify_after=True,
                        journal=False,
                        resume=False,
                        allow_multiple_studies=False,
                        progress_callback=None,
                        client=client,
                        budget=budget,
                    )
                )
            )
            for i, src in enumerate(sources)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        link = shared_link(client, options, None, [])  # type: ignore[arg-type]
    assert [r.success for r in results] == [True] * 3
    assert isinstance(link, Link) and link.controller is not None
    assert link.controller.budget is budget  # the run's budget, not one per session
    assert budget.stats().peak <= 6
    assert budget.capacity == 6  # given back in full once nobody sends


def test_auto_sends_a_large_session_in_smaller_batches(sandbox: Sandbox, tmp_path: Path) -> None:
    source = tmp_path / "session"
    write_session(source, series=2, instances=130, rows=8, columns=8, seed=6)
    fixed = upload(sandbox, source, session="E1", num_batches=2, upload_workers=2)
    assert fixed.success, fixed.errors
    assert len(fixed.sent_batches) == 2
    # 260 files, at least 50 per batch and at most 4 per connection of the ceiling of 2: 5.
    auto = upload(sandbox, source, session="E2", num_batches=2, upload_workers="auto:2")
    assert auto.success, auto.errors
    assert len(auto.sent_batches) == 5
    assert_exactly_once(sandbox, 260, session="E2")
    env = {"XNAT_SERVER": sandbox.url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"}
    args = [sys.executable, "-m", "xnatio", "upload-dicom", "P1", "S1", "E3", str(source)]
    args += ["--num-batches", "2", "--upload-workers", "auto:2", "--dry-run", "--json"]
    done = subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, **env}, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["batches"]) == 5  # the dry run shows what auto sends


def test_cli_options_reach_the_upload(sandbox: Sandbox, realistic: Path, tmp_path: Path) -> None:
    env = {"XNAT_SERVER": sandbox.url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"}
    args = [sys.executable, "-m", "xnatio", "upload-dicom", "P1", "S1", "E9", str(realistic)]
    args += ["--compress", "deflate", "--upload-workers", "auto:3", "--bwlimit", "50M"]
    args += ["--num-batches", "3", "--json", "--progress", "none", "--no-journal"]
    done = subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, **env}, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["adaptive"]["compress"] == "deflate"
    assert summary["adaptive"]["bwlimit"] == "52.43 MB/s"
    assert summary["adaptive"]["workers"].startswith("auto:")
