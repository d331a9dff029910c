"""The settings of one sandbox: addresses, the account, timers and limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xnatio.sandbox.ingest import IngestProfile

__all__ = ["SandboxConfig"]


@dataclass(frozen=True)
class SandboxConfig:
    """Settings of one sandbox; every timer and limit of docs/xnat-behaviour.md §10.

    Parameters
    ----------
    data_dir
        Folder for the store (files plus a SQLite index); created if missing.
    host, port
        HTTP address; port 0 picks a free port.
    dicom_port
        DICOM SCP port; 0 picks a free port; None runs no SCP.
    dicom_aet
        The SCP's AE title; associations calling another title are rejected.
    user, password
        The one account (the password never appears in a repr or a log).
    projects
        Projects created at start.
    ticker_interval
        Seconds between background ticks (prearchive rebuild, auto-archive, Direct-Archive).
    idle_interval
        Seconds without new files before a session counts as complete (XNAT: 300).
    session_timeout
        Idle seconds before an HTTP session ends (XNAT: 900).
    max_failed_logins, lockout_seconds
        Account lockout (XNAT: 20 failures, one hour); ``max_failed_logins=0`` disables it.
    faults
        Faults armed at start, in the form of :meth:`xnatio.sandbox.faults.Faults.apply`.
    request_timeout
        Seconds a connection may sit idle (between or inside requests) before it is closed.
    alias_token_timeout
        Seconds an alias token from ``/data/services/tokens/issue`` stays valid (XNAT: 2 days).
    ingest_profile
        None (the default): import as fast as the sandbox can. ``"xnat"`` or an
        :class:`~xnatio.sandbox.ingest.IngestProfile`: model a real XNAT's import costs and
        limits, so that too many parallel requests queue, get 503 or a proxy's 504
        (:mod:`xnatio.sandbox.ingest`).
    """

    data_dir: Path | str
    host: str = "127.0.0.1"
    port: int = 0
    dicom_port: int | None = None
    dicom_aet: str = "XNAT"
    user: str = "admin"
    password: str = field(default="admin", repr=False)
    projects: tuple[str, ...] = ("P1",)
    ticker_interval: float = 60.0
    idle_interval: float = 300.0
    session_timeout: float = 900.0
    max_failed_logins: int = 20
    lockout_seconds: float = 3600.0
    faults: Mapping[str, Any] | None = None
    request_timeout: float = 300.0
    alias_token_timeout: float = 172800.0
    ingest_profile: str | IngestProfile | None = None
