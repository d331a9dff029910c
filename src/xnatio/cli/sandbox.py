"""``xio sandbox``: run an XNAT-compatible server until SIGINT or SIGTERM.

The first line on stdout is ``sandbox url=<URL> dicom-port=<PORT> aet=<AET>`` so that scripts
and benchmarks can start it as a subprocess and read where it listens.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from xnatio.cli.options import seconds_option
from xnatio.errors import InputError

if TYPE_CHECKING:
    from xnatio.sandbox.ingest import IngestProfile

PASSWORD_ENV = "XNATIO_SANDBOX_PASSWORD"  # noqa: S105 - the variable name, not a password


@click.command(name="sandbox")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data folder (kept). Default: a new temporary folder, removed at exit.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", type=int, default=8080, show_default=True, help="HTTP port; 0 picks a free one."
)
@click.option(
    "--dicom-port",
    type=int,
    default=8104,
    show_default=True,
    help="DICOM SCP port; 0 picks a free one; -1 runs no SCP.",
)
@click.option("--dicom-aet", default="XNAT", show_default=True, help="The SCP's AE title.")
@click.option(
    "--user",
    default="admin",
    show_default=True,
    help=f"User name; the password is 'admin' unless {PASSWORD_ENV} is set.",
)
@click.option(
    "--project",
    "projects",
    multiple=True,
    help="Project to create at start (repeatable). Default: P1.",
)
@seconds_option("--ticker-interval", 60.0, "Seconds between background runs (build, auto-archive).")
@seconds_option(
    "--idle-interval", 300.0, "Seconds without new files before a session counts as complete."
)
@click.option(
    "--ingest-profile",
    type=click.Choice(["xnat"]),
    default=None,
    help="Model a real XNAT's import costs and limits (per-file cost, session lock, threads, "
    "database pool, a proxy's 504), so that too many parallel requests overload it. "
    "Default: import as fast as the sandbox can.",
)
@click.option(
    "--ingest-time-scale",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Sandbox seconds per modelled XNAT second (default 0.2: five times as fast).",
)
@seconds_option(
    "--ingest-proxy-timeout",
    None,
    "The modelled proxy's read timeout in XNAT seconds (default 100; 0: no proxy).",
)
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-vv: every request).")
def command(
    data_dir: Path | None,
    host: str,
    port: int,
    dicom_port: int,
    dicom_aet: str,
    user: str,
    projects: tuple[str, ...],
    ticker_interval: float,
    idle_interval: float,
    ingest_profile: str | None,
    ingest_time_scale: float | None,
    ingest_proxy_timeout: float | None,
    verbose: int,
) -> None:
    """Run an XNAT-compatible server for tests and trials (stops on Ctrl-C or SIGTERM)."""
    from xnatio.cli.app import configure_logging
    from xnatio.sandbox import Sandbox, SandboxConfig
    from xnatio.sandbox.store import ClientError

    configure_logging(verbose, quiet=False)
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be between 0 and 65535 (got {port})")
    if not -1 <= dicom_port <= 65535:
        raise InputError(f"--dicom-port must be between -1 and 65535 (got {dicom_port})")
    if ticker_interval <= 0 or idle_interval < 0:
        raise InputError("--ticker-interval must be positive and --idle-interval not negative")
    profile = _ingest(ingest_profile, ingest_time_scale, ingest_proxy_timeout)
    password = os.environ.get(PASSWORD_ENV, "admin")
    temporary = data_dir is None
    folder = Path(tempfile.mkdtemp(prefix="xio-sandbox-")) if data_dir is None else data_dir

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    sandbox = Sandbox(
        SandboxConfig(
            data_dir=folder,
            host=host,
            port=port,
            dicom_port=None if dicom_port < 0 else dicom_port,
            dicom_aet=dicom_aet,
            user=user,
            password=password,
            projects=projects or ("P1",),
            ticker_interval=ticker_interval,
            idle_interval=idle_interval,
            ingest_profile=profile,
        )
    )
    try:
        try:
            sandbox.start()
        except OSError as exc:
            raise InputError(f"cannot start the sandbox on {host}: {exc.strerror or exc}") from exc
        except (ValueError, ClientError) as exc:
            raise InputError(f"cannot start the sandbox: {exc}") from exc
        shown_port = sandbox.dicom_port if sandbox.dicom_port is not None else "none"
        sys.stdout.write(f"sandbox url={sandbox.url} dicom-port={shown_port} aet={sandbox.aet}\n")
        sys.stdout.flush()
        logging.getLogger(__name__).info(
            "data in %s%s; user %s", folder, " (temporary)" if temporary else "", user
        )
        while not stop.wait(1.0):
            pass
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)


def _ingest(
    name: str | None, scale: float | None, proxy_timeout: float | None
) -> IngestProfile | None:
    """The ingest profile the options ask for, or None."""
    import dataclasses

    from xnatio.sandbox.ingest import ingest_profile

    if name is None:
        if scale is not None or proxy_timeout is not None:
            raise InputError("--ingest-time-scale and --ingest-proxy-timeout need --ingest-profile")
        return None
    try:
        profile = ingest_profile(name, time_scale=scale)
    except ValueError as exc:
        raise InputError(f"--ingest-time-scale: {exc}") from None
    if proxy_timeout is not None:
        profile = dataclasses.replace(profile, proxy_read_timeout=proxy_timeout or None)
    return profile
