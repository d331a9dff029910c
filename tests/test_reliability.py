"""Faults matrix: every fault on both transports ends with nothing lost and nothing doubled.

Each case runs the real ``xio upload-dicom`` command line (in this process, so the sandbox's
fault switches and hooks can be used, or as a subprocess where a process must die) and ends in
one of two ways:

* exit 0 and every instance of the source present exactly once on the server; or
* exit 1, and the per-file ``--report`` lists as not landed exactly the instances the server
  does not hold; ``--resume`` then completes the session, every instance exactly once.

Receivers: the sandbox over HTTP (REST), the sandbox's SCP and a pynetdicom Storage SCP in this
process (C-STORE). The matrix of case x transport x outcome is written to
``docs/reliability.md`` at the end of a full run of this module (see :func:`_write_matrix`).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.cli_run import Run, run_cli
from xnatio.sandbox import Sandbox, SandboxConfig
from xnatio.sandbox.store import ImportBatch
from xnatio.synth import write_session
from xnatio.transport import rest

SERIES, INSTANCES = 3, 4
TOTAL = SERIES * INSTANCES
DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"

REST, SCP, PYNET = "REST (sandbox)", "C-STORE (sandbox SCP)", "C-STORE (pynetdicom SCP)"
COMPLETE = "exit 0; every instance exactly once"
LISTED = "exit 1; the report lists exactly what did not land; --resume completes it"
EITHER = "either of the above, depending on timing"
KILLED = "killed: nothing doubled; --resume completes it"
TERMINATED = "exit 143, one line saying what was sent and what was not; --resume completes it"

# (case, fault as injected) -> {transport: expected outcome}; the rows of docs/reliability.md.
MATRIX: list[tuple[str, str, dict[str, str]]] = [
    (
        "connection dropped mid-body",
        "server closes the connection after a random number of body bytes, twice; "
        "SCP: association aborted after a random number of instances",
        {REST: COMPLETE, SCP: COMPLETE, PYNET: COMPLETE},
    ),
    (
        "HTTP 500 / 502 / 503",
        "the next two import requests answer the status",
        {REST: COMPLETE},
    ),
    (
        "504 while the server carries on",
        "proxy answers 504 after 0.2 s while the import keeps writing",
        {REST: COMPLETE},
    ),
    (
        "request slower than --timeout",
        "every write slower than --timeout on every attempt, then normal",
        {REST: LISTED, PYNET: LISTED},
    ),
    (
        "session expiry mid-run",
        "every HTTP session ends after the first import",
        {REST: COMPLETE, SCP: COMPLETE},
    ),
    (
        "sandbox restarted mid-upload",
        "`xio sandbox` SIGKILLed after a random number of progress events and started again "
        "on the same ports and --data folder",
        {REST: EITHER, SCP: EITHER},
    ),
    (
        "server disk full",
        "every write fails with ENOSPC from the second import on, then space is freed",
        {REST: LISTED, SCP: LISTED},
    ),
    (
        "SCP abort mid-association",
        "the SCP aborts the association on a chosen instance",
        {SCP: COMPLETE, PYNET: COMPLETE},
    ),
    (
        "status 0xA700 (out of resources)",
        "the SCP answers 0xA700 twice",
        {SCP: COMPLETE, PYNET: COMPLETE},
    ),
    (
        "status 0xC000 (cannot understand)",
        "the SCP answers 0xC000 for some instances (a permanent status: each is sent once), "
        "then stores",
        {SCP: LISTED, PYNET: LISTED},
    ),
    (
        "client SIGKILLed mid-run",
        "`xio upload-dicom` SIGKILLed after a random number of progress events",
        {REST: KILLED, SCP: KILLED},
    ),
    (
        "client SIGTERMed mid-run",
        "`xio upload-dicom` sent SIGTERM after a random number of progress events",
        {REST: TERMINATED, SCP: TERMINATED},
    ),
]

_RESULTS: dict[tuple[str, str], list[str]] = {}

# Verification cases (tests/test_verify_*.py): what the exit code rests on. Rendered after the
# matrix so that a regenerated docs/reliability.md keeps them.
_VERIFICATION = [
    "## Verification: what the exit code rests on",
    "",
    "Tested in `tests/test_verify_identity.py`, `tests/test_verify_content.py` and",
    "`tests/test_verify_listings.py` against the sandbox, and against a misbehaving server (a",
    "proxy in front of it that lies in its listings or refuses listing routes). Stored files are",
    "matched to local instances by SOP Instance UID per scan, whatever their names.",
    "",
    "| Case | What the server holds or says | Outcome |",
    "|---|---|---|",
    "| another client's file names | the session was imported with entry paths such as "
    "`S001/IM00001.dcm` | `xio verify` exits 0 (the headers of those files are read from the "
    "server); `--overwrite append` and `--resume` (both transports) send nothing |",
    "| one instance under two names | an instance stored again under another name | exit 1: "
    "present more than once |",
    "| extra files | files that hold no instance of the source (another instance, a non-DICOM "
    "file) | exit 0; listed as notes |",
    "| listed size too small | `Size: 12` for a 32 kB image | exit 1: content differs (too few "
    "bytes for its pixel data) |",
    "| wrong digest | an MD5 that is not the file's, where the sizes are equal | exit 1: content "
    "differs (the download that settles it shows the MD5 of what the server sent) |",
    "| changed data element | a stored file whose PatientName differs from the local one | same "
    "length: exit 1 (digest); another length: exit 0 by default (a rewrite by XNAT could explain "
    "the size), exit 1 with `--deep`, naming (0010,0010) |",
    "| file listing not offered | 404 or 501 for `scans/{id}/files`, then `scans/ALL/files` | "
    "falls back to `scans/ALL/files`, then to per-resource listings; when none answers, exit 1 "
    "with one line |",
    "",
]
# Damaged and unreadable sources, and C-STORE failure statuses (tests/test_strict_source.py,
# tests/test_inventory.py, tests/test_dicom_store_scp.py, tests/test_dicom_store_receivers.py).
_SOURCES = [
    "## Bad sources and C-STORE refusals",
    "",
    "Tested end to end against the sandbox (both transports) in `tests/test_strict_source.py`,",
    "the archive cases one by one in `tests/test_inventory.py`, the statuses against a pynetdicom",
    "SCP in `tests/test_dicom_store_scp.py` and against a default Orthanc in",
    "`tests/test_dicom_store_receivers.py`.",
    "",
    "| Case | Fault injected | Outcome |",
    "|---|---|---|",
    "| damaged `.tar.gz` | 16 bytes overwritten in the middle of a 400-file session; a bad gzip "
    "CRC or length; a truncated file | exit 2 before anything is sent, one line naming the "
    "archive and the offset; nothing on the server |",
    "| damaged `.tar` | a bad checksum in the header of the member halfway; cut at a header, "
    "inside a header or inside data; two archives joined | exit 2 before anything is sent, one "
    "line naming the archive, the byte offset and the member before it |",
    "| damaged `.zip` | a bad CRC in the member halfway | exit 2 before anything is sent, one line "
    "naming the member; `--resume` completes once the archive is fixed |",
    "| zip member damaged while sending | the archive changes after the inventory checked it | "
    "its batch fails naming the member (exit 1), the others land; `--resume` completes once the "
    "archive is fixed |",
    "| unreadable folder | `chmod 000` on a series folder, read by an unprivileged user | exit 2 "
    "listing the folder, for `xio upload-dicom` and `xio verify`; with `--skip-unreadable` the "
    "rest is sent and the summary counts the folder as unreadable, apart from not DICOM |",
    "| permanent C-STORE status | 0xC000, 0xA900, 0x0122, 0x0124 for an instance | one attempt, "
    "exit 1 listing it; the other associations are not disturbed |",
    "| transient C-STORE status | 0xA700 for some instances | retried after a backoff while the "
    "association goes on with the next instance; at most `max_attempts` attempts |",
    "| data set the receiver would misread | implicit VR data under an explicit VR or JPEG "
    "transfer syntax (pydicom's test files) | sent in the native syntax its bytes are in; not "
    "sent when none can carry it (no 60 s wait for an answer that never comes) |",
    "",
]
_TRANSPORTS = (REST, SCP, PYNET)


def record(case: str, transport: str, outcome: str) -> None:
    """Note that ``case`` passed on ``transport`` with ``outcome`` (one of the three above)."""
    expected = next(row[2] for row in MATRIX if row[0] == case)[transport]
    if expected != EITHER:
        assert outcome == expected, f"{case} / {transport}: {outcome}"
    _RESULTS.setdefault((case, transport), []).append(outcome)


def _render() -> str:
    lines = [
        "# Reliability matrix",
        "",
        "Generated by `tests/test_reliability.py` (do not edit by hand). Each fault is injected",
        "into a real upload with `xio upload-dicom`; the outcome is checked against the server's",
        "own index: either every instance is present exactly once, or the command exits 1, its",
        "`--report` lists as not landed exactly the instances the server lacks, and",
        "`--resume` then completes the session with every instance exactly once. Cases whose",
        "timing matters run with several random seeds. `n/a`: the fault does not exist on that",
        "transport (C-STORE sends no HTTP requests; the verification after it does, and is",
        "covered by the session-expiry row).",
        "",
        "Receivers: the sandbox over HTTP on loopback (REST), the sandbox's DICOM SCP, and a",
        "pynetdicom Storage SCP with injected faults (for a receiver that is not XNAT, an",
        "instance counts once per SOP Instance UID: storing the same UID again replaces it).",
        "",
        "| Case | Fault injected | " + " | ".join(_TRANSPORTS) + " |",
        "|---|---|" + "---|" * len(_TRANSPORTS),
    ]
    for case, fault, expected in MATRIX:
        cells = []
        for transport in _TRANSPORTS:
            if transport not in expected:
                cells.append("n/a")
                continue
            runs = _RESULTS[(case, transport)]
            seeds = f" ({len(runs)} runs)" if len(runs) > 1 else ""
            cells.append(f"pass{seeds}: {expected[transport]}")
        lines.append(f"| {case} | {fault} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Outcomes:",
        "",
        f"- *{COMPLETE}*: the client retried (new association, fresh login, backoff) on its own.",
        f"- *{LISTED}*: the fault outlasted the retries; nothing was doubled, and the resume",
        "  sent only what the journal and the server's listings did not confirm.",
        f"- *{EITHER}*: whichever ending a seed gave, it was checked as above.",
        f"- *{KILLED}*: the server held a subset of the source, nothing twice, and one",
        "  `--resume` completed it.",
        f"- *{TERMINATED}*: SIGTERM is handled like Ctrl-C (exit 130): the sender stops, keeps",
        "  what the server confirmed in the journal and writes the report; nothing was doubled.",
        "",
    ]
    lines += _VERIFICATION
    lines += _SOURCES
    return "\n".join(lines)


@pytest.fixture(scope="module", autouse=True)
def _write_matrix(request: pytest.FixtureRequest) -> Iterator[None]:
    """Write docs/reliability.md when every cell of the matrix passed and no test failed."""
    _RESULTS.clear()
    failed_before = request.session.testsfailed
    yield
    wanted = {(case, t) for case, _, expected in MATRIX for t in expected}
    if wanted <= set(_RESULTS) and request.session.testsfailed == failed_before:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(_render(), encoding="utf-8")


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "session"
    write_session(out, series=SERIES, instances=INSTANCES, rows=16, columns=16, seed=11)
    return out


@pytest.fixture(scope="module")
def uids(source: Path) -> dict[str, str]:
    """SOP Instance UID -> path relative to the source."""
    return {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): str(p.relative_to(source))
        for p in sorted(source.rglob("*.dcm"))
    }


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """REST retries back off for a tenth of the time (0.1 s doubling; same retry logic)."""
    monkeypatch.setattr(
        rest, "_backoff", lambda attempt, retry_after=None: 0.1 * 2 ** (attempt - 1)
    )


@pytest.fixture
def xio(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Run]:
    """Run ``xio ARGS`` in this process; returns the exit code and captured output."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    for key in ("XNAT_SERVER", "XNAT_USERNAME", "XNAT_PASSWORD", "XNAT_VERIFY_TLS"):
        monkeypatch.delenv(key, raising=False)

    def run(*args: str, env: dict[str, str] | None = None) -> Run:
        with monkeypatch.context() as m:
            for key, value in (env or {}).items():
                m.setenv(key, value)
            return run_cli(capsys, [*args, "--progress", "none"])

    return run


def creds(url: str) -> dict[str, str]:
    return {"XNAT_SERVER": url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"}


def report_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


NOT_LANDED = {"failed", "missing", "not-sent"}


def judge(run: Run, landed: Counter[str], uids: dict[str, str], report: Path) -> str:
    """Check the invariant for one run; return which outcome it was."""
    assert "Traceback" not in run.err, run.err
    assert max(landed.values(), default=1) == 1, f"duplicates: {landed}"
    assert set(landed) <= set(uids)
    if run.code == 0:
        assert set(landed) == set(uids), f"exit 0 but missing {set(uids) - set(landed)}"
        return COMPLETE
    assert run.code == 1, (run.code, run.err)
    rows = [r for r in report_rows(report) if r["sop_instance_uid"]]
    assert len(rows) == len(uids)
    listed = {r["sop_instance_uid"] for r in rows if r["outcome"] in NOT_LANDED}
    # A request that timed out has an unknown outcome: the receiver may have stored it after all.
    unknown = {
        r["sop_instance_uid"] for r in rows if r["outcome"] in NOT_LANDED and "time" in r["reason"]
    }
    assert listed - unknown == set(uids) - set(landed) - unknown, (listed, set(landed))
    assert set(uids) - set(landed) <= listed
    assert listed, "exit 1 with nothing listed"
    said = run.err if not run.out.startswith("{") else json.dumps(run.json().get("errors"))
    assert "error" in said or "missing" in said, said
    return LISTED


def sandbox_landed(sb: Sandbox, session: str) -> Counter[str]:
    per_scan = sb.store.scan_file_uids("P1", "S1", session)
    return Counter(uid for scan in per_scan.values() for uid in scan)


def finish_with_resume(
    run_once: Callable[[list[str]], Run],
    args: list[str],
    landed: Callable[[], Counter[str]],
    uids: dict[str, str],
) -> None:
    """Resume until done; every instance exactly once, and a further resume sends nothing."""
    resumed = run_once([*args, "--resume", "--json"])
    assert resumed.code == 0, resumed.err + resumed.out
    assert resumed.json()["success"] is True
    counts = landed()
    assert counts == Counter(dict.fromkeys(uids, 1)), counts
    again = run_once([*args, "--resume"])
    assert again.code == 0, again.err
    assert "nothing to send" in again.out


def rest_case(
    xio: Callable[..., Run],
    sb: Sandbox,
    session: str,
    source: Path,
    uids: dict[str, str],
    tmp_path: Path,
    *extra: str,
    heal: Callable[[], None] = lambda: None,
) -> str:
    """One REST upload with the armed fault, judged; then heal and resume if it failed."""
    report = tmp_path / f"{session}.jsonl"
    args = ["upload-dicom", "P1", "S1", session, str(source), "--num-batches", "3"]
    args += ["--upload-workers", "3", "--journal", str(tmp_path / f"{session}.journal"), *extra]
    env = creds(sb.url)
    run = xio(*args, "--report", str(report), env=env)
    outcome = judge(run, sandbox_landed(sb, session), uids, report)
    heal()
    if outcome == LISTED:
        finish_with_resume(
            lambda a: xio(*a, env=env), args, lambda: sandbox_landed(sb, session), uids
        )
    return outcome


def scp_case(
    xio: Callable[..., Run],
    sb: Sandbox,
    session: str,
    source: Path,
    uids: dict[str, str],
    tmp_path: Path,
    *extra: str,
    heal: Callable[[], None] = lambda: None,
) -> str:
    """One C-STORE upload into the sandbox SCP (auto-archived), judged; heal and resume."""
    report = tmp_path / f"{session}.jsonl"
    args = ["upload-dicom", "P1", "S1", session, str(source), "--transport", "dicom-store"]
    args += ["--dicom-port", str(sb.dicom_port), "--num-batches", "2", "--wait", "30"]
    args += ["--journal", str(tmp_path / f"{session}.journal"), *extra]
    env = creds(sb.url)
    run = xio(*args, "--report", str(report), env=env)
    outcome = judge(run, sandbox_landed(sb, session), uids, report)
    heal()
    if outcome == LISTED:
        finish_with_resume(
            lambda a: xio(*a, env=env), args, lambda: sandbox_landed(sb, session), uids
        )
    return outcome


@pytest.fixture
def scp_sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    sb = make_sandbox(dicom_port=0)
    sb.store.set_prearchive_code("P1", 4)  # the SCP's sessions are archived once built
    return sb


# -- REST ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_retries")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rest_connection_dropped_mid_body(
    xio: Callable[..., Run], sandbox: Sandbox, source: Path, uids: dict[str, str],
    tmp_path: Path, seed: int,
) -> None:  # fmt: skip
    sandbox.faults.drop_connection(after_bytes=random.Random(seed).randint(1, 6000), count=2)
    outcome = rest_case(xio, sandbox, f"D{seed}", source, uids, tmp_path)
    assert sandbox.faults.snapshot()["drop_connection"] == []  # both drops happened
    record("connection dropped mid-body", REST, outcome)


@pytest.mark.usefixtures("fast_retries")
@pytest.mark.parametrize("status", [500, 502, 503])
def test_rest_server_errors(
    xio: Callable[..., Run], sandbox: Sandbox, source: Path, uids: dict[str, str],
    tmp_path: Path, status: int,
) -> None:  # fmt: skip
    sandbox.faults.http_error(status, count=2, path="/data/services/import")
    outcome = rest_case(xio, sandbox, f"H{status}", source, uids, tmp_path)
    assert sandbox.faults.snapshot()["http_error"] == []
    record("HTTP 500 / 502 / 503", REST, outcome)


@pytest.mark.usefixtures("fast_retries")
@pytest.mark.parametrize("seed", [1, 2])
def test_rest_gateway_timeout_while_server_continues(
    xio: Callable[..., Run], sandbox: Sandbox, source: Path, uids: dict[str, str],
    tmp_path: Path, seed: int,
) -> None:  # fmt: skip
    sandbox.faults.file_delay = 0.03 * seed
    sandbox.faults.gateway_timeout(after_seconds=0.2, count=2)
    outcome = rest_case(xio, sandbox, f"G{seed}", source, uids, tmp_path)
    assert sandbox.faults.snapshot()["gateway_timeout"] == []
    record("504 while the server carries on", REST, outcome)


@pytest.mark.usefixtures("fast_retries")
def test_rest_request_slower_than_timeout(
    xio: Callable[..., Run], sandbox: Sandbox, source: Path, uids: dict[str, str], tmp_path: Path
) -> None:
    sandbox.faults.file_delay = 0.5  # 4 files per batch: 2 s per request, --timeout 0.5 s

    def heal() -> None:
        sandbox.faults.file_delay = 0.0

    outcome = rest_case(
        xio, sandbox, "T1", source, uids, tmp_path, "--timeout", "0.5", "--no-verify", heal=heal
    )
    record("request slower than --timeout", REST, outcome)


@pytest.mark.usefixtures("fast_retries")
def test_rest_session_expiry_mid_run(
    xio: Callable[..., Run], sandbox: Sandbox, source: Path, uids: dict[str, str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    fired = after_first_import(monkeypatch, sandbox.faults.expire_sessions)
    outcome = rest_case(xio, sandbox, "X1", source, uids, tmp_path, "--upload-workers", "1")
    assert fired.is_set()
    record("session expiry mid-run", REST, outcome)


@pytest.mark.usefixtures("fast_retries")
def test_rest_disk_full(
    xio: Callable[..., Run], sandbox: Sandbox, source: Path, uids: dict[str, str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    filled = after_first_import(monkeypatch, lambda: setattr(sandbox.faults, "disk_full", True))

    def heal() -> None:
        sandbox.faults.disk_full = False

    # One worker: the batches go one after another, so the disk fills after the first one
    # whatever the timing (with three at once, all could be written before it fills).
    outcome = rest_case(
        xio, sandbox, "F1", source, uids, tmp_path, "--upload-workers", "1", heal=heal
    )
    assert filled.is_set()
    record("server disk full", REST, outcome)


def after_first_import(
    monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]
) -> threading.Event:
    """Run ``action`` once, as soon as the first import (request or instance) is stored."""
    fired = threading.Event()
    original = ImportBatch.__exit__

    def hooked(self: ImportBatch, *exc: object) -> None:
        original(self, *exc)
        if not fired.is_set():
            fired.set()
            action()

    monkeypatch.setattr(ImportBatch, "__exit__", hooked)
    return fired


# -- C-STORE into the sandbox SCP ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_scp_abort_mid_association(
    xio: Callable[..., Run], scp_sandbox: Sandbox, source: Path, uids: dict[str, str],
    tmp_path: Path, seed: int,
) -> None:  # fmt: skip
    after = random.Random(seed).randint(0, TOTAL // 2 - 1)
    scp_sandbox.faults.scp_abort(after_instances=after, count=1)
    outcome = scp_case(xio, scp_sandbox, f"A{seed}", source, uids, tmp_path)
    assert scp_sandbox.faults.snapshot()["scp_abort"] is None
    record("SCP abort mid-association", SCP, outcome)
    record("connection dropped mid-body", SCP, outcome)


def test_scp_out_of_resources(
    xio: Callable[..., Run], scp_sandbox: Sandbox, source: Path, uids: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    scp_sandbox.faults.scp_status(0xA700, count=2)
    outcome = scp_case(xio, scp_sandbox, "R1", source, uids, tmp_path)
    assert scp_sandbox.faults.snapshot()["scp_status"] is None
    record("status 0xA700 (out of resources)", SCP, outcome)


def test_scp_cannot_understand(
    xio: Callable[..., Run], scp_sandbox: Sandbox, source: Path, uids: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    # 0xC000 for the first 3 requests of one association run: the first three instances, each
    # refused once (a permanent status is not sent again).
    scp_sandbox.faults.scp_status(0xC000, count=3)
    outcome = scp_case(xio, scp_sandbox, "U1", source, uids, tmp_path, "--num-batches", "1")
    record("status 0xC000 (cannot understand)", SCP, outcome)


def test_scp_disk_full(
    xio: Callable[..., Run], scp_sandbox: Sandbox, source: Path, uids: dict[str, str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    faults = scp_sandbox.faults
    filled = after_first_import(monkeypatch, lambda: setattr(faults, "disk_full", True))

    def heal() -> None:
        faults.disk_full = False

    outcome = scp_case(xio, scp_sandbox, "F2", source, uids, tmp_path, "--wait", "3", heal=heal)
    assert filled.is_set()
    record("server disk full", SCP, outcome)


def test_scp_disk_full_from_the_start(
    xio: Callable[..., Run], scp_sandbox: Sandbox, source: Path, uids: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    scp_sandbox.faults.disk_full = True

    def heal() -> None:
        scp_sandbox.faults.disk_full = False

    scp_case(xio, scp_sandbox, "F3", source, uids, tmp_path, "--wait", "2", heal=heal)


def test_scp_session_expiry_mid_run(
    xio: Callable[..., Run], scp_sandbox: Sandbox, source: Path, uids: dict[str, str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    fired = after_first_import(monkeypatch, scp_sandbox.faults.expire_sessions)
    outcome = scp_case(xio, scp_sandbox, "X2", source, uids, tmp_path)
    assert fired.is_set()
    record("session expiry mid-run", SCP, outcome)


# -- C-STORE into a pynetdicom SCP (not XNAT) -----------------------------------------------


class FaultyScp:
    """A pynetdicom Storage SCP on loopback; ``behaviour(uid, n)`` picks each answer."""

    def __init__(self) -> None:
        self.behaviour: Callable[[str, int], int | str | float] = lambda uid, n: 0
        self.stored: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        ae = AE(ae_title="XNAT")
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        assert server is not None
        self._server = server
        self.port = int(self._server.server_address[1])

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self.requests[uid] += 1
            n = self.requests[uid]
        action = self.behaviour(uid, n)
        if action == "abort":
            event.assoc.abort()
            return 0xA700
        if isinstance(action, float):
            threading.Event().wait(action)  # a receiver busy for this long
            action = 0
        assert isinstance(action, int)
        if action < 0xA000:
            with self._lock:
                self.stored[uid] += 1
        return action

    def distinct(self) -> Counter[str]:
        with self._lock:
            return Counter(dict.fromkeys(self.stored, 1))

    def stop(self) -> None:
        self._server.shutdown()


@pytest.fixture
def pynet() -> Iterator[FaultyScp]:
    scp = FaultyScp()
    yield scp
    scp.stop()


def pynet_case(
    xio: Callable[..., Run],
    scp: FaultyScp,
    name: str,
    source: Path,
    uids: dict[str, str],
    tmp_path: Path,
    *extra: str,
    heal: Callable[[], None] = lambda: None,
) -> str:
    report = tmp_path / f"{name}.jsonl"
    args = ["upload-dicom", "P1", "S1", name, str(source), "--transport", "dicom-store"]
    args += ["--dicom-host", "127.0.0.1", "--dicom-port", str(scp.port), "--num-batches", "2"]
    args += ["--no-verify", "--journal", str(tmp_path / f"{name}.journal"), *extra]
    run = xio(*args, "--report", str(report))
    outcome = judge(run, scp.distinct(), uids, report)
    heal()
    if outcome == LISTED:
        before = sum(scp.requests.values())
        resumed = xio(*args, "--resume", "--json")
        assert resumed.code == 0, resumed.err
        assert scp.distinct() == Counter(dict.fromkeys(uids, 1))
        # Only what was not confirmed was sent again.
        assert sum(scp.requests.values()) - before == resumed.json()["sent"]
        assert resumed.json()["already_present"] == TOTAL - resumed.json()["sent"]
    return outcome


@pytest.mark.parametrize("seed", [1, 2])
def test_pynetdicom_abort(
    xio: Callable[..., Run], pynet: FaultyScp, source: Path, uids: dict[str, str],
    tmp_path: Path, seed: int,
) -> None:  # fmt: skip
    victim = random.Random(seed).choice(sorted(uids))
    pynet.behaviour = lambda uid, n: "abort" if uid == victim and n == 1 else 0
    outcome = pynet_case(xio, pynet, f"PA{seed}", source, uids, tmp_path)
    assert pynet.requests[victim] == 2
    record("SCP abort mid-association", PYNET, outcome)
    record("connection dropped mid-body", PYNET, outcome)


def test_pynetdicom_out_of_resources(
    xio: Callable[..., Run], pynet: FaultyScp, source: Path, uids: dict[str, str], tmp_path: Path
) -> None:
    first_two = sorted(uids)[:2]
    pynet.behaviour = lambda uid, n: 0xA700 if uid in first_two and n == 1 else 0
    outcome = pynet_case(xio, pynet, "PR", source, uids, tmp_path)
    assert all(pynet.requests[u] == 2 for u in first_two)
    record("status 0xA700 (out of resources)", PYNET, outcome)


def test_pynetdicom_cannot_understand(
    xio: Callable[..., Run], pynet: FaultyScp, source: Path, uids: dict[str, str], tmp_path: Path
) -> None:
    bad = set(sorted(uids)[3:5])
    pynet.behaviour = lambda uid, n: 0xC000 if uid in bad else 0

    def heal() -> None:
        pynet.behaviour = lambda uid, n: 0

    outcome = pynet_case(xio, pynet, "PC", source, uids, tmp_path, heal=heal)
    assert all(pynet.requests[u] == 1 + 1 for u in bad)  # permanent: once, then the resume
    record("status 0xC000 (cannot understand)", PYNET, outcome)


def test_pynetdicom_slower_than_timeout(
    xio: Callable[..., Run], pynet: FaultyScp, source: Path, uids: dict[str, str], tmp_path: Path
) -> None:
    slow = sorted(uids)[0]
    healed = threading.Event()
    pynet.behaviour = lambda uid, n: 1.5 if uid == slow and not healed.is_set() else 0

    def heal() -> None:
        healed.set()

    outcome = pynet_case(xio, pynet, "PT", source, uids, tmp_path, "--timeout", "0.5", heal=heal)
    assert pynet.requests[slow] >= 3
    record("request slower than --timeout", PYNET, outcome)


# -- processes that die: the sandbox restarted, the client SIGKILLed ---------------------------

FIRST_LINE = re.compile(r"sandbox url=(http://127\.0\.0\.1:(\d+)) dicom-port=(\d+) aet=\S+")


class SandboxProcess:
    """``xio sandbox`` as a subprocess over one --data folder, restartable on the same ports."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = "0"
        self.dicom_port = "0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xnatio", "sandbox", "--port", self.port, "--dicom-port",
             self.dicom_port, "--project", "P1", "--data", str(self.data),
             "--ticker-interval", "0.2", "--idle-interval", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            text=True, env={**os.environ, "XNATIO_SANDBOX_PASSWORD": "admin"},
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = FIRST_LINE.fullmatch(line.rstrip("\n"))
        assert match, f"unexpected first line {line!r}"
        self.url, self.port, self.dicom_port = match.groups()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def faults(self, spec: dict[str, Any]) -> None:
        r = httpx.put(f"{self.url}/sandbox/faults", json=spec, auth=("admin", "admin"))
        assert r.status_code == 200, r.text

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def xio_subprocess(args: list[str], env: dict[str, str]) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "xnatio", *args, "--progress", "none"],
        capture_output=True, text=True, timeout=180, env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return Run(proc.returncode, proc.stdout, proc.stderr)


def run_until(
    args: list[str], env: dict[str, str], events: int, action: Callable[[], None]
) -> subprocess.Popen[str]:
    """Start xio with JSON progress; call ``action`` after ``events`` uploading events."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "xnatio", *args, "--progress", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, **env},
    )  # fmt: skip
    assert proc.stderr is not None
    seen = 0
    for line in proc.stderr:
        if line.startswith("{") and json.loads(line)["phase"] == "uploading":
            seen += 1
            if seen == events:
                action()
                break
    assert seen == events, f"the upload finished after {seen} events"
    return proc


def landed_in(data: Path, session: str) -> Counter[str]:
    """Count what the sandbox's index holds, with an in-process sandbox over the data folder."""
    sb = Sandbox(
        SandboxConfig(host="127.0.0.1", port=0, dicom_port=None, data_dir=data, projects=("P1",))
    )
    with sb:
        return sandbox_landed(sb, session)


@pytest.mark.parametrize(("transport", "seed"), [(REST, 1), (REST, 2), (SCP, 3), (SCP, 4)])
def test_sandbox_restarted_mid_upload(
    source: Path, uids: dict[str, str], tmp_path: Path, transport: str, seed: int
) -> None:
    data = tmp_path / "data"
    server = SandboxProcess(data)
    server.start()
    try:
        server.faults({"file_delay": 0.05})
        session = f"S{seed}"
        report = tmp_path / "r.jsonl"
        args = ["upload-dicom", "P1", "S1", session, str(source), "--journal", str(tmp_path / "j")]
        if transport == REST:
            args += ["--num-batches", "6", "--upload-workers", "2"]
        else:
            r = httpx.put(
                f"{server.url}/data/projects/P1/prearchive_code/4", auth=("admin", "admin")
            )
            assert r.status_code in (200, 201), r.text
            args += ["--transport", "dicom-store", "--dicom-port", server.dicom_port]
            args += ["--num-batches", "2", "--journal-chunk", "4", "--wait", "30"]
        env = creds(server.url)
        events = random.Random(seed).randint(1, 4)

        def restart() -> None:
            server.kill()
            server.start()  # same ports, same data; faults and logins are gone

        proc = run_until([*args, "--report", str(report), "--json"], env, events, restart)
        out, err = proc.communicate(timeout=180)
        run = Run(proc.returncode, out, "\n".join(
            line for line in err.splitlines() if not line.startswith("{")
        ))  # fmt: skip
        if run.code == 0:
            assert run.json()["success"] is True
        server.stop()
        outcome = judge(run, landed_in(data, session), uids, report)
        server.start()
        if outcome == LISTED:
            finish_with_resume(
                lambda a: xio_subprocess(a, env),
                args,
                lambda: _stop_and_count(server, data, session),
                uids,
            )
        record("sandbox restarted mid-upload", transport, outcome)
    finally:
        server.stop()


def test_xnat_unreachable_while_checking_a_cstore_send(
    source: Path, uids: dict[str, str], tmp_path: Path
) -> None:
    """Every instance stored, then XNAT stops answering: exit 1 with the report, one line."""
    server = SandboxProcess(tmp_path / "data")
    server.start()
    try:
        report = tmp_path / "r.jsonl"
        args = ["upload-dicom", "P1", "S1", "U1", str(source), "--transport", "dicom-store",
                "--dicom-port", server.dicom_port, "--wait", "3", "--report", str(report),
                "--progress", "json"]  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "xnatio", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, **creds(server.url)},
        )  # fmt: skip
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("{") and json.loads(line)["phase"] in ("waiting", "verifying"):
                server.kill()  # all instances were stored; the check has begun
                break
        out, err = proc.communicate(timeout=120)
    finally:
        server.stop()
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("{")]
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert any(ln.startswith("error: could not check P1/S1/U1: cannot connect") for ln in lines)
    rows = [r for r in report_rows(report) if r["sop_instance_uid"]]
    assert len(rows) == len(uids) and {r["outcome"] for r in rows} == {"sent"}
    assert f"INCOMPLETE: {len(uids)} of {len(uids)} instances stored" in out, out


def _stop_and_count(server: SandboxProcess, data: Path, session: str) -> Counter[str]:
    server.stop()
    counts = landed_in(data, session)
    server.start()
    return counts


@pytest.mark.parametrize(("transport", "seed"), [(REST, 7), (SCP, 9)])
def test_client_sigkilled_mid_run(
    make_sandbox: Callable[..., Sandbox], source: Path, uids: dict[str, str], tmp_path: Path,
    transport: str, seed: int,
) -> None:  # fmt: skip
    sb = make_sandbox(dicom_port=0)
    sb.store.set_prearchive_code("P1", 4)
    sb.faults.file_delay = 0.03
    session = f"K{seed}"
    args = ["upload-dicom", "P1", "S1", session, str(source), "--journal", str(tmp_path / "j")]
    if transport == REST:
        args += ["--num-batches", "6", "--upload-workers", "2"]
    else:
        args += ["--transport", "dicom-store", "--dicom-port", str(sb.dicom_port)]
        args += ["--num-batches", "2", "--journal-chunk", "4", "--wait", "30"]
    env = creds(sb.url)
    proc = run_until(args, env, random.Random(seed).randint(1, 5), lambda: None)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    sb.faults.file_delay = 0.0
    # Killed: nothing doubled, and what is there is a subset of the source.
    counts = sandbox_landed(sb, session)
    assert max(counts.values(), default=1) == 1 and set(counts) <= set(uids)
    finish_with_resume(
        lambda a: xio_subprocess(a, env), args, lambda: sandbox_landed(sb, session), uids
    )
    record("client SIGKILLed mid-run", transport, KILLED)


@pytest.mark.parametrize(("transport", "seed"), [(REST, 8), (SCP, 10)])
def test_client_sigtermed_mid_run(
    make_sandbox: Callable[..., Sandbox], source: Path, uids: dict[str, str], tmp_path: Path,
    transport: str, seed: int,
) -> None:  # fmt: skip
    sb = make_sandbox(dicom_port=0)
    sb.store.set_prearchive_code("P1", 4)
    sb.faults.file_delay = 0.05
    session = f"T{seed}"
    report = tmp_path / "r.jsonl"
    args = ["upload-dicom", "P1", "S1", session, str(source), "--journal", str(tmp_path / "j")]
    if transport == REST:
        args += ["--num-batches", "6", "--upload-workers", "2"]
    else:
        args += ["--transport", "dicom-store", "--dicom-port", str(sb.dicom_port)]
        args += ["--num-batches", "2", "--journal-chunk", "4", "--wait", "30"]
    env = creds(sb.url)
    proc = run_until(
        [*args, "--report", str(report)], env, random.Random(seed).randint(1, 4), lambda: None
    )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("{")]
    assert len(lines) == 1, err
    (line,) = lines
    assert line.startswith("xio: terminated by SIGTERM: ") and "--resume" in line, line
    said = "instances were sent in" if transport == REST else "instances stored"
    assert f"of {TOTAL} {said}" in line, line
    rows = [r for r in report_rows(report) if r["sop_instance_uid"]]
    assert len(rows) == TOTAL and any(r["outcome"] == "not-sent" for r in rows), rows
    sb.faults.file_delay = 0.0
    counts = sandbox_landed(sb, session)
    assert max(counts.values(), default=1) == 1 and set(counts) <= set(uids)
    finish_with_resume(
        lambda a: xio_subprocess(a, env), args, lambda: sandbox_landed(sb, session), uids
    )
    record("client SIGTERMed mid-run", transport, TERMINATED)
