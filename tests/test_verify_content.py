"""Plausible content by default, exact content on request (issue 11, finding 5, and --deep).

A misbehaving server (tests/misbehaving.py: a real HTTP proxy in front of the sandbox) lists a
``Size`` or an MD5 ``digest`` that does not fit the stored file; the sandbox itself holds files
whose data elements differ from the local ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from tests.misbehaving import MisbehavingXnat, Rows
from xnatio.inventory import DicomFile
from xnatio.sandbox import Sandbox
from xnatio.synth import write_session
from xnatio.verify import VerifyReport, verify_session

SERIES, INSTANCES = 2, 3
TOTAL = SERIES * INSTANCES
PIXELS = 128 * 128 * 2  # 32 kB of pixel data per image


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("csrc") / "session"
    write_session(out, series=SERIES, instances=INSTANCES, rows=128, columns=128, seed=31)
    return out


def env_for(url: str) -> dict[str, str]:
    return {**os.environ, "XNAT_SERVER": url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"}


def xio(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xnatio", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_for(url),
        stdin=subprocess.DEVNULL,
    )


def upload(url: str, src: Path, *extra: str) -> dict[str, object]:
    proc = xio("upload-dicom", "P1", "S1", "E1", str(src), "--json", *extra, url=url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data: dict[str, object] = json.loads(proc.stdout)
    return data


def check(url: str, src: Path, **kw: object) -> VerifyReport:
    return verify_session(
        server=url,
        username="admin",
        password="admin",
        project="P1",
        subject="S1",
        session="E1",
        source_dir=src,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def bad(sandbox: Sandbox) -> Iterator[MisbehavingXnat]:
    with MisbehavingXnat(sandbox.url) as proxy:
        yield proxy


def first_file(src: Path) -> Path:
    return sorted(src.rglob("*.dcm"))[0]


def rewrite(name: str, column: str, value: str) -> Callable[[str, Rows], Rows]:
    def change(path: str, rows: Rows) -> Rows:
        if not path.endswith("/files"):
            return rows
        return [{**r, column: value} if r.get("Name") == name else r for r in rows]

    return change


def test_a_listed_size_that_cannot_hold_the_image_fails(
    sandbox: Sandbox, bad: MisbehavingXnat, source: Path
) -> None:
    upload(sandbox.url, source)
    assert check(bad.url, source).ok  # the proxy itself changes nothing
    victim = first_file(source)
    name = pydicom.dcmread(victim, stop_before_pixels=True).SOPInstanceUID + ".dcm"
    bad.faults.rewrite_rows = rewrite(name, "Size", "12")
    report = check(bad.url, source)
    assert not report.ok
    c = report.comparison
    assert c is not None and c.matched == TOTAL  # present once: the identity is fine
    assert c.checked == "listing"
    [(path, why)] = c.content
    assert path == str(victim.relative_to(source))
    assert (
        why
        == f"the server lists 12 bytes for 1/{name}, too few for its {PIXELS} bytes of pixel data"
    )
    proc = xio("verify", "P1", "S1", "E1", str(source), url=bad.url)
    assert proc.returncode == 1
    assert "error: content differs: " in proc.stderr and "too few" in proc.stderr
    # A size that can hold the pixel data (XNAT may rewrite the header, §3.4) passes.
    bad.faults.rewrite_rows = rewrite(name, "Size", str(PIXELS + 200))
    assert check(bad.url, source).ok


def test_a_wrong_digest_fails(sandbox: Sandbox, bad: MisbehavingXnat, source: Path) -> None:
    upload(sandbox.url, source)
    victim = first_file(source)
    name = pydicom.dcmread(victim, stop_before_pixels=True).SOPInstanceUID + ".dcm"
    bad.faults.rewrite_rows = rewrite(name, "digest", "0" * 32)
    report = check(bad.url, source)
    assert not report.ok
    assert report.comparison is not None
    [(path, why)] = report.comparison.content
    assert path == str(victim.relative_to(source))
    assert f"the server lists MD5 {'0' * 32} for 1/{name}, but the file it sent has MD5" in why
    # Only that file was downloaded to settle it; the other digests matched the local files.
    downloads = [s for s in bad.requests() if "/files/" in s.path]
    assert [s.path.rsplit("/", 1)[1] for s in downloads] == [name]


def test_upload_verification_catches_a_wrong_digest(
    sandbox: Sandbox, bad: MisbehavingXnat, source: Path
) -> None:
    victim = first_file(source)
    name = pydicom.dcmread(victim, stop_before_pixels=True).SOPInstanceUID + ".dcm"
    bad.faults.rewrite_rows = rewrite(name, "digest", "f" * 32)
    proc = xio("upload-dicom", "P1", "S1", "E1", str(source), "--json", url=bad.url)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = json.loads(proc.stdout)["errors"]
    assert len(errors) == 1 and "content differs" in errors[0] and "MD5" in errors[0]


def edited_copy(src: Path, dest: Path, patient_name: str) -> Path:
    """A copy of ``src`` whose first file has another PatientName (same UIDs)."""
    shutil.copytree(src, dest)
    victim = first_file(dest)
    ds = pydicom.dcmread(victim)
    ds.PatientName = patient_name
    ds.save_as(victim, enforce_file_format=True)
    return victim


def test_deep_verification_catches_a_changed_element(
    sandbox: Sandbox, source: Path, tmp_path: Path
) -> None:
    upload(sandbox.url, source)
    report = check(sandbox.url, source, deep=True)
    assert report.ok, report.problems()
    assert report.comparison is not None and report.comparison.checked == "deep"

    # A longer name: the stored file is smaller than the local one, as after a header rewrite,
    # so the listing checks cannot tell; deep verification can.
    longer = tmp_path / "longer"
    victim = edited_copy(source, longer, "Somebody^Else^Entirely")
    assert check(sandbox.url, longer).ok
    deep = check(sandbox.url, longer, deep=True)
    assert not deep.ok
    assert deep.comparison is not None
    [(path, why)] = deep.comparison.content
    assert path == str(victim.relative_to(longer))
    assert why.endswith("(0010,0010) differs")
    proc = xio("verify", "P1", "S1", "E1", str(longer), "--deep", url=sandbox.url)
    assert proc.returncode == 1
    assert "(0010,0010) differs" in proc.stderr

    # The same length: the sizes are equal, so the listing's MD5 is compared, and the download
    # that settles the mismatch names the element.
    same = tmp_path / "same"
    edited_copy(source, same, "Synthetic^Patienx")
    listing = check(sandbox.url, same)
    assert not listing.ok
    assert listing.comparison is not None
    [(_, why)] = listing.comparison.content
    assert why.startswith("the listed MD5 is not the local file's") and "(0010,0010) differs" in why


def test_expected_edits_are_allowed(sandbox: Sandbox, source: Path, tmp_path: Path) -> None:
    anonymised = tmp_path / "anonymised"
    victim = str(edited_copy(source, anonymised, "Anon^Ymous").relative_to(anonymised))
    upload(sandbox.url, anonymised)  # the server holds the edited file
    assert not check(sandbox.url, source, deep=True).ok

    def edits(f: DicomFile) -> dict[int, bytes | None]:
        return {0x00100010: b"Anon^Ymous"} if f.path == victim else {}

    assert check(sandbox.url, source, deep=True, expected_edits=edits).ok

    def wrong(f: DicomFile) -> dict[int, bytes | None]:
        return {0x00100010: b"Someone^Else"} if f.path == victim else {}

    report = check(sandbox.url, source, deep=True, expected_edits=wrong)
    assert report.comparison is not None
    [(path, why)] = report.comparison.content
    assert path == victim and why.endswith("(0010,0010) does not hold the expected value")


@pytest.mark.parametrize("syntax", ["explicit", "implicit", "big-endian", "deflated", "rle"])
def test_upload_with_verify_deep_on_both_transports(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path, syntax: str
) -> None:
    src = tmp_path / "src"
    write_session(src, series=1, instances=3, rows=64, columns=64, seed=7, transfer_syntax=syntax)
    sb = make_sandbox(dicom_port=0)
    sb.store.set_prearchive_code("P1", 4)  # C-STORE sessions are archived once built
    rest = upload(sb.url, src, "--verify", "deep")
    assert rest["verification"]["matched"] == 3  # type: ignore[index]
    proc = xio(
        "upload-dicom", "P1", "S1", "C1", str(src), "--transport", "dicom-store",
        "--dicom-port", str(sb.dicom_port), "--verify", "deep", "--wait", "60", "--json",
        url=sb.url,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verification = json.loads(proc.stdout)["verification"]
    # XNAT's C-STORE routing wrote Patient Comments into every stored file: allowed.
    assert verification["archive"]["checked"] == "deep"
    assert verification["archive"]["content"] == []


def test_verify_options_on_upload(sandbox: Sandbox, source: Path) -> None:
    proc = xio(
        "upload-dicom",
        "P1",
        "S1",
        "E1",
        str(source),
        "--no-verify",
        "--verify",
        "deep",
        url=sandbox.url,
    )
    assert proc.returncode == 2
    assert "--no-verify cannot be combined with --verify deep" in proc.stderr
    data = upload(sandbox.url, source, "--no-verify")
    assert data.get("verification") is None
    proc = xio(
        "upload-dicom", "P1", "S1", "E2", str(source), "--verify", "none", "--json", url=sandbox.url
    )
    assert proc.returncode == 0 and json.loads(proc.stdout).get("verification") is None
