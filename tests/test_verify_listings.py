"""Listing fallbacks (issue 15) and header reads with and without HTTP Range.

A server that does not offer a file listing route answers 404 or 501 (tests/misbehaving.py
plays it, in front of a real sandbox). Verification then asks for ``scans/ALL/files``, then for
each scan's resources and their ``files`` listings, before it gives up.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.misbehaving import MisbehavingXnat
from xnatio.errors import ServerResponseError
from xnatio.sandbox import Sandbox
from xnatio.synth import write_session
from xnatio.uploaders import upload_dicom_parallel_rest
from xnatio.verify import VerifyReport, verify_session

SERIES, INSTANCES = 2, 4
TOTAL = SERIES * INSTANCES
PER_SCAN = re.compile(r".*/scans/(?!ALL/)[^/]+/files")
ALL_SCANS = re.compile(r".*/scans/ALL/files")
RESOURCES = re.compile(r".*/scans/[^/]+/resources(/[^/]+/files)?")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lsrc") / "session"
    write_session(out, series=SERIES, instances=INSTANCES, rows=16, columns=16, seed=41)
    return out


@pytest.fixture
def bad(sandbox: Sandbox, source: Path) -> Iterator[MisbehavingXnat]:
    result = upload_dicom_parallel_rest(
        server=sandbox.url,
        username="admin",
        password="admin",
        source_dir=source,
        project="P1",
        subject="S1",
        session="E1",
        num_batches=2,
        journal=False,
    )
    assert result.success, result.errors
    with MisbehavingXnat(sandbox.url) as proxy:
        yield proxy


def check(url: str, src: Path) -> VerifyReport:
    return verify_session(
        server=url,
        username="admin",
        password="admin",
        project="P1",
        subject="S1",
        session="E1",
        source_dir=src,
    )


def refuse(status: int, *patterns: re.Pattern[str]) -> Callable[[str], int | None]:
    return lambda path: status if any(p.fullmatch(path) for p in patterns) else None


def listed(bad: MisbehavingXnat, pattern: re.Pattern[str]) -> list[int]:
    return [s.status for s in bad.requests() if pattern.fullmatch(s.path)]


def test_the_per_scan_listing_is_used_first(bad: MisbehavingXnat, source: Path) -> None:
    assert check(bad.url, source).ok
    assert listed(bad, PER_SCAN) == [200] * SERIES
    assert listed(bad, ALL_SCANS) == []


@pytest.mark.parametrize("status", [404, 501])
def test_falls_back_to_all_scans(bad: MisbehavingXnat, source: Path, status: int) -> None:
    bad.faults.status_for = refuse(status, PER_SCAN)
    report = check(bad.url, source)
    assert report.ok, report.problems()
    assert report.comparison is not None and report.comparison.matched == TOTAL
    assert status in listed(bad, PER_SCAN)
    assert listed(bad, ALL_SCANS) == [200]


def test_falls_back_to_per_resource_listings(bad: MisbehavingXnat, source: Path) -> None:
    bad.faults.status_for = refuse(501, PER_SCAN, ALL_SCANS)
    report = check(bad.url, source)
    assert report.ok, report.problems()
    assert report.comparison is not None and report.comparison.matched == TOTAL
    assert listed(bad, ALL_SCANS) == [501]
    assert listed(bad, RESOURCES) == [200] * (2 * SERIES)  # resources, then DICOM/files


def test_gives_up_with_one_line(bad: MisbehavingXnat, source: Path) -> None:
    bad.faults.status_for = refuse(404, PER_SCAN, ALL_SCANS, RESOURCES)
    with pytest.raises(ServerResponseError, match="offers none of the file listings"):
        check(bad.url, source)
    env = {**os.environ, "XNAT_SERVER": bad.url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"}
    proc = subprocess.run(
        [sys.executable, "-m", "xnatio", "verify", "P1", "S1", "E1", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xio: error: listing the files of P1/S1/E1")
    assert "scans/{id}/files (404), scans/ALL/files (404)" in lines[0]


def foreign_names(sb: Sandbox, src: Path) -> None:
    """Store the session again under another client's entry names (replacing ours)."""
    body = io.BytesIO()
    with zipfile.ZipFile(body, "w") as zf:
        for p in sorted(src.rglob("*.dcm")):
            zf.writestr(f"{p.parent.name}/{p.name}", p.read_bytes())
    response = httpx.post(
        f"{sb.url}/data/services/import",
        params={
            "import-handler": "DICOM-zip",
            "dest": "/archive/projects/P1/subjects/S1/experiments/E2",
        },
        content=body.getvalue(),
        headers={"Content-Type": "application/zip"},
        auth=("admin", "admin"),
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("honour_range", [True, False])
def test_headers_are_read_with_range_or_by_closing_early(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path, honour_range: bool
) -> None:
    src = tmp_path / "big"
    write_session(src, series=1, instances=3, rows=512, columns=512, seed=3)  # 512 kB images
    sb = make_sandbox()
    foreign_names(sb, src)
    with MisbehavingXnat(sb.url) as bad:
        bad.faults.honour_range = honour_range
        report = verify_session(
            server=bad.url,
            username="admin",
            password="admin",
            project="P1",
            subject="S1",
            session="E2",
            source_dir=src,
        )
        assert report.ok, report.problems()
        assert report.comparison is not None and report.comparison.headers_read == 3
        reads = [s for s in bad.requests() if "/files/" in s.path]
        assert len(reads) == 3
        if honour_range:
            assert all(s.status == 206 and s.sent == 65536 for s in reads)
        else:
            assert all(s.status == 200 for s in reads)
