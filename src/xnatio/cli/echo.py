"""``xio echo``: a C-ECHO to the DICOM receiver, with the options of ``--transport dicom-store``.

The same check an upload with ``--transport dicom-store`` makes before it sends anything: one
association, one C-ECHO (DICOM PS3.7 §9.1.5), released. Exit 0 when the receiver answered
success, 3 when it cannot be reached, refuses the association or answers a failure, 2 for bad
input.
"""

from __future__ import annotations

import json
import time

import click

from xnatio.cli.app import HELP_SETTINGS, configure_logging
from xnatio.cli.options import (
    DicomFlags,
    ServerOptions,
    dicom_options,
    server_options,
    timeout_option,
)
from xnatio.errors import XnatioError
from xnatio.transport.dicom_store import check_receiver

__all__ = ["command"]


@click.command(context_settings=HELP_SETTINGS)
@dicom_options
@server_options
@timeout_option(60.0, "Seconds allowed to connect and for the answer, as for C-STORE uploads.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("-v", "--verbose", count=True, help="Log the association to stderr (-vv: debug).")
def command(
    creds: ServerOptions,
    dicom: DicomFlags,
    timeout: float,
    as_json: bool,
    verbose: int,
) -> None:
    """Send a C-ECHO to the DICOM receiver (XNAT's, or any Storage SCP).

    The receiver comes from --dicom-host/--dicom-port/--dicom-called-aet, the XNAT_DICOM_*
    variables, or the profile, as for 'xio upload-dicom --transport dicom-store'; the host
    defaults to the XNAT server's. No password is needed.
    """
    configure_logging(verbose, quiet=False)
    receiver = dicom.receiver(creds.settings())
    where = f"{receiver.called_aet}@{receiver.host}:{receiver.port}"
    start = time.monotonic()
    try:
        check_receiver(
            host=receiver.host,
            port=receiver.port,
            called_aet=receiver.called_aet,
            calling_aet=receiver.calling_aet,
            tls=receiver.tls,
            timeout=timeout,
        )
    except XnatioError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "receiver": where, "error": exc.message}))
        raise
    seconds = time.monotonic() - start
    tls = " over TLS" if receiver.tls else ""
    if as_json:
        data = {
            "ok": True,
            "receiver": where,
            "calling_aet": receiver.calling_aet,
            "tls": receiver.tls is not None,
            "seconds": round(seconds, 3),
        }
        click.echo(json.dumps(data))
    else:
        click.echo(
            f"OK: C-ECHO from {receiver.calling_aet} to {where}{tls} answered in {seconds:.2f} s"
        )
