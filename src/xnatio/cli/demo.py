"""``xio demo``: the whole job on an embedded sandbox, with nothing to install or configure.

Starts the sandbox (REST and DICOM) on free ports, writes a synthetic session, uploads it over
REST and again over C-STORE, checks both sessions against the local files, prints a summary with
throughput, and shuts everything down (or, with ``--keep``, leaves the sandbox running).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import click

from xnatio.cli.app import HELP_SETTINGS, configure_logging
from xnatio.cli.display import ProgressDisplay, human_bytes
from xnatio.config import XnatConfig
from xnatio.sandbox import Sandbox, SandboxConfig
from xnatio.synth import PRESETS, write_session
from xnatio.upload import send_dicom_store, upload_dicom_parallel_rest

PROJECT = "DEMO"
USER, PASSWORD = "admin", "admin"


@click.command(context_settings=HELP_SETTINGS)
@click.option(
    "--size",
    type=click.Choice(sorted(PRESETS)),
    default="small",
    show_default=True,
    help="Synthetic session size.",
)
@click.option("--keep", is_flag=True, help="Leave the sandbox running afterwards (Ctrl-C stops).")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="Sandbox data folder (default: temp).",
)
@click.option("-q", "--quiet", is_flag=True, help="Only the summary.")
@click.pass_context
def command(ctx: click.Context, size: str, keep: bool, data: Path | None, quiet: bool) -> None:
    """Upload a synthetic session to an embedded sandbox over REST and C-STORE, then verify both."""
    configure_logging(0, True)
    work = Path(tempfile.mkdtemp(prefix="xio-demo-"))

    def say(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    sandbox = Sandbox(
        SandboxConfig(
            data_dir=data or work / "sandbox",
            port=0,
            dicom_port=0,
            projects=(PROJECT,),
            ticker_interval=0.5,
            idle_interval=2.0,
        )
    )
    try:
        sandbox.start()
        # C-STORE sessions are archived automatically once idle, as on a site set to auto-archive.
        sandbox.store.set_prearchive_code(PROJECT, 4)
        say(f"sandbox: {sandbox.url} (DICOM {sandbox.aet}@127.0.0.1:{sandbox.dicom_port})")
        source = _write_source(work / "session", size, say)
        failures = 0 if _demo_rest(sandbox, source, quiet) else 1
        say("C-STORE: sending, then waiting for the sandbox to build and archive ...")
        failures += 0 if _demo_dicom(sandbox, source, quiet) else 1
        if keep:
            _keep_running(sandbox, source)
    finally:
        sandbox.stop()
        shutil.rmtree(work, ignore_errors=True)
    ctx.exit(0 if failures == 0 else 1)


def _write_source(source: Path, size: str, say: Callable[[str], None]) -> Path:
    preset = PRESETS[size]
    summary = write_session(
        source,
        series=preset.series,
        instances=preset.instances,
        rows=preset.rows,
        columns=preset.columns,
        seed=1,
    )
    size_text = human_bytes(summary.total_bytes)
    say(f"synthetic session: {summary.file_count} files, {size_text} in {source}")
    return source


def _demo_rest(sandbox: Sandbox, source: Path, quiet: bool) -> bool:
    """Upload over REST; print one line; True when it landed and verified."""
    with ProgressDisplay("none" if quiet else "auto") as display:
        rest = upload_dicom_parallel_rest(
            server=sandbox.url,
            username=USER,
            password=PASSWORD,
            source_dir=source,
            project=PROJECT,
            subject="SUBJ01",
            session="SUBJ01_REST",
            progress_callback=display,
        )
    ok = rest.success and rest.verification is not None and rest.verification.ok
    click.echo(
        f"REST:     {'OK' if ok else 'FAILED'}  {rest.files_sent}/{rest.total_files} "
        f"files in {rest.send_duration:.2f} s ({rest.send_rate / 1e6:.1f} MB/s), "
        f"{rest.batches_succeeded} batches, verified "
        f"{rest.verification.matched if rest.verification else 0}/{rest.total_files}"
    )
    for err in rest.errors[:10]:
        click.echo(f"  error: {err}", err=True)
    return ok


def _demo_dicom(sandbox: Sandbox, source: Path, quiet: bool) -> bool:
    """Send over C-STORE, wait for the sandbox to archive, verify; True when all is there."""
    assert sandbox.dicom_port is not None
    with ProgressDisplay("none" if quiet else "auto", unit="instances") as display:
        dicom = send_dicom_store(
            source_dir=source,
            host="127.0.0.1",
            port=sandbox.dicom_port,
            called_aet=sandbox.aet,
            project=PROJECT,
            subject="SUBJ01",
            session="SUBJ01_DICOM",
            progress_callback=display,
            server=XnatConfig(sandbox.url, USER, PASSWORD),
            wait=60.0,
            journal=False,
        )
    report = dicom.verification
    check = report.comparison if report is not None else None
    ok = dicom.success and check is not None and check.ok
    verified = f"{check.matched}/{check.expected}" if check is not None else "0"
    click.echo(
        f"C-STORE:  {'OK' if ok else 'FAILED'}  {dicom.sent}/{dicom.total_files} "
        f"instances in {dicom.send_duration:.2f} s ({dicom.send_rate / 1e6:.1f} MB/s), "
        f"{dicom.associations} associations, verified {verified}"
    )
    for err in dicom.errors[:10]:
        click.echo(f"  error: {err}", err=True)
    for line in (report.problems() if report is not None else [])[:10]:
        click.echo(f"  {line}", err=True)
    return ok


def _keep_running(sandbox: Sandbox, source: Path) -> None:
    click.echo(
        "\nThe sandbox keeps running. Point the other commands at it:\n"
        f"  export XNAT_SERVER={sandbox.url} XNAT_USERNAME={USER}"
        f" XNAT_PASSWORD={PASSWORD}\n"
        f"  xio upload-dicom {PROJECT} SUBJ02 SUBJ02_MR {source}\n"
        f"  xio upload-dicom {PROJECT} SUBJ03 SUBJ03_MR {source} --transport dicom-store "
        f"--dicom-host 127.0.0.1 --dicom-port {sandbox.dicom_port}\n"
        "Press Ctrl-C to stop it."
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        while not stop.wait(0.5):
            pass
