"""The C-STORE half of ``xio upload-dicom`` (``--transport dicom-store``)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from xnatio.display import ProgressDisplay, human_bytes
from xnatio.errors import InputError
from xnatio.uploaders.dicom_store import DicomStoreResult, DicomTls, send_dicom_store
from xnatio.uploaders.rest import plan_upload

EXIT_OK, EXIT_PARTIAL = 0, 1


def _env(value: str | None, key: str) -> str | None:
    return value if value is not None else (os.environ.get(key) or None)


def _result_dict(result: DicomStoreResult) -> dict[str, Any]:
    data = asdict(result)
    data["outcomes"] = [o for o in data.get("outcomes", []) if o.get("status") != 0]
    return data


def run_dicom_store(
    *,
    project: str,
    subject: str,
    session: str,
    source: Path,
    num_batches: int,
    allow_multiple_studies: bool,
    server: str | None,
    user: str | None,
    password_stdin: bool,
    insecure: bool,
    env_name: str | None,
    dicom_host: str | None,
    dicom_port: int | None,
    dicom_called_aet: str | None,
    dicom_calling_aet: str | None,
    dicom_tls: bool,
    dicom_tls_ca: Path | None,
    dicom_tls_cert: Path | None,
    dicom_tls_key: Path | None,
    routing_tags: bool,
    verify: bool,
    dry_run: bool,
    as_json: bool,
    progress_mode: str,
    quiet: bool,
) -> int:
    """Run a C-STORE upload from parsed options; return the exit code."""
    from xnatio.commands.upload_dicom import load_config

    config = None
    if server or os.environ.get("XNAT_SERVER") or not dry_run:
        config = load_config(
            server=server,
            user=user,
            password_stdin=password_stdin,
            insecure=insecure,
            env_name=env_name,
            required=False,
        )
    host = _env(dicom_host, "XNAT_DICOM_HOST")
    if host is None and config is not None:
        host = urlsplit(config.server).hostname
    if host is None:
        raise InputError("no DICOM host: pass --dicom-host, set XNAT_DICOM_HOST, or give --server")
    port_text = _env(str(dicom_port) if dicom_port else None, "XNAT_DICOM_PORT") or "8104"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InputError(f"DICOM port {port_text!r} is not a port number (1-65535)")
    called = _env(dicom_called_aet, "XNAT_DICOM_CALLED_AET") or "XNAT"
    calling = _env(dicom_calling_aet, "XNAT_DICOM_CALLING_AET") or "XNATIO"
    tls = DicomTls(ca=dicom_tls_ca, cert=dicom_tls_cert, key=dicom_tls_key) if dicom_tls else None

    with ProgressDisplay(progress_mode if not as_json else "none", unit="instances") as display:
        plan = plan_upload(
            source,
            project=project,
            subject=subject,
            session=session,
            num_batches=num_batches,
            allow_multiple_studies=allow_multiple_studies,
            progress_callback=display,
        )
        if dry_run:
            plan.inventory.source.close()
            n = min(num_batches, len(plan.inventory.files))
            summary = {
                "files": len(plan.inventory.files),
                "bytes": plan.inventory.total_bytes,
                "associations": n,
                "receiver": f"{called}@{host}:{port_text}",
                "skipped": [{"path": s.path, "reason": s.reason} for s in plan.inventory.skipped],
            }
            if as_json:
                click.echo(json.dumps(summary, indent=2))
            else:
                click.echo(
                    f"{summary['files']} DICOM files, {human_bytes(plan.inventory.total_bytes)}, "
                    f"{n} associations to {summary['receiver']}; "
                    f"{len(plan.inventory.skipped)} files skipped"
                )
                for s in plan.inventory.skipped[:50]:
                    click.echo(f"  skipped {s.path}: {s.reason}")
                click.echo("dry run: nothing was sent")
            return EXIT_OK
        try:
            result = send_dicom_store(
                inventory=plan.inventory,
                host=host,
                port=int(port_text),
                called_aet=called,
                calling_aet=calling,
                num_batches=num_batches,
                project=project,
                subject=subject,
                session=session,
                routing_tags=routing_tags,
                tls=tls,
                progress_callback=display,
            )
        finally:
            plan.inventory.source.close()
    if as_json:
        click.echo(json.dumps(_result_dict(result), indent=2, default=str))
    elif not (quiet and result.success):
        verdict = "OK" if result.success else "INCOMPLETE"
        rate = result.bytes_sent / result.duration if result.duration > 0 else 0.0
        click.echo(
            f"{verdict}: {result.sent} of {result.total_files} instances stored "
            f"({result.warned} with warnings, {result.failed} failed) in {result.duration:.1f} s, "
            f"{human_bytes(rate)}/s"
        )
        for err in result.errors[:100]:
            click.echo(f"error: {err}", err=True)
    del verify  # verification after C-STORE arrives with the verify command (issue 6)
    return EXIT_OK if result.success else EXIT_PARTIAL
