"""The sandbox: an XNAT-compatible HTTP server and DICOM SCP over a :class:`SandboxStore`.

This module is the life cycle of it all: the store, the HTTP server
(:mod:`xnatio.sandbox.web`, which follows docs/xnat-behaviour.md §1-§4, §7 and §9), the DICOM
receiver (:mod:`xnatio.sandbox.scp`), the background ticker, authentication and fault injection.
The data model and its rules live in :mod:`xnatio.sandbox.store`.

Examples
--------
>>> with Sandbox(SandboxConfig(data_dir=tmp_path)) as sandbox:  # doctest: +SKIP
...     httpx.get(sandbox.url + "/data/projects", auth=("admin", "admin"))
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from xnatio.sandbox.auth import AuthManager
from xnatio.sandbox.faults import Faults
from xnatio.sandbox.ingest import IngestModel, ingest_profile
from xnatio.sandbox.settings import SandboxConfig
from xnatio.sandbox.stats import Gauge, SandboxStats
from xnatio.sandbox.store import SandboxStore, StoreFaults
from xnatio.sandbox.web.connection import HttpServer
from xnatio.sandbox.web.routes import iter_routes

__all__ = ["Sandbox", "SandboxConfig", "iter_routes"]

log = logging.getLogger(__name__)


class Sandbox:
    """A running XNAT-compatible server: HTTP, optional DICOM SCP, background ticker.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Works in a thread of the
    calling process (tests) and as the body of ``xio sandbox`` (a separate process).

    Parameters
    ----------
    config
        The settings.

    Attributes
    ----------
    store
        The data model (available after :meth:`start`).
    faults
        Fault switches; change them at any time.
    auth
        Users, sessions and lockout.
    http_connections, http_requests, dicom_associations
        Gauges of what is open at once (read them all with :meth:`stats`).
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.auth = AuthManager(
            {config.user: config.password},
            session_timeout=config.session_timeout,
            max_failed_logins=config.max_failed_logins,
            lockout_seconds=config.lockout_seconds,
            alias_token_timeout=config.alias_token_timeout,
        )
        self._store_faults = StoreFaults()
        self.faults = Faults(self._store_faults, self.auth.expire_all)
        self._store: SandboxStore | None = None
        self._http: HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._scp: Any = None  # xnatio.sandbox.scp.DicomReceiver, imported only when used
        self._ingest: IngestModel | None = None
        self.http_connections = Gauge()
        self.http_requests = Gauge()
        self.dicom_associations = Gauge()
        self.spool_dir = self.data_dir / ".http-spool"

    def __repr__(self) -> str:
        state = "running" if self._http is not None else "stopped"
        return f"Sandbox({state}, url={self.url if self._http else None!r}, config={self.config!r})"

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def store(self) -> SandboxStore:
        """The store; raises if the sandbox is not running."""
        if self._store is None:
            raise RuntimeError("the sandbox is not running")
        return self._store

    @property
    def ingest(self) -> IngestModel | None:
        """The ingest model while running with ``ingest_profile``, else None."""
        return self._ingest

    @property
    def url(self) -> str:
        """Base URL, for example ``http://127.0.0.1:8080``."""
        if self._http is None:
            raise RuntimeError("the sandbox is not running")
        host, port = self._http.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{text}]" if ":" in text else text
        return f"http://{shown}:{port}"

    @property
    def port(self) -> int:
        """The HTTP port."""
        if self._http is None:
            raise RuntimeError("the sandbox is not running")
        return int(self._http.server_address[1])

    @property
    def dicom_port(self) -> int | None:
        """The SCP's port, or None without an SCP."""
        return None if self._scp is None else int(self._scp.port)

    @property
    def aet(self) -> str:
        """The SCP's AE title."""
        return self.config.dicom_aet

    def start(self) -> Sandbox:
        """Open the store, create the projects, start HTTP, the SCP and the ticker."""
        if self._http is not None:
            raise RuntimeError("the sandbox is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.spool_dir, ignore_errors=True)
        self.spool_dir.mkdir()
        self._stopping.clear()
        store = SandboxStore(
            self.data_dir, idle_interval=self.config.idle_interval, faults=self._store_faults
        )
        self._store = store
        try:
            for project in self.config.projects:
                store.create_project(project)
            if self.config.faults:
                self.faults.apply(self.config.faults)
            if self.config.ingest_profile is not None:
                self._ingest = IngestModel(ingest_profile(self.config.ingest_profile))
            self._http = HttpServer((self.config.host, self.config.port), self)
            self._http_thread = threading.Thread(
                target=self._http.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="sandbox-http",
                daemon=True,
            )
            self._http_thread.start()
            if self.config.dicom_port is not None:
                from xnatio.sandbox.scp import DicomReceiver

                self._scp = DicomReceiver(self, self.config.host, self.config.dicom_port)
                self._scp.start()
            self._ticker = threading.Thread(target=self._tick_loop, name="sandbox-ticker")
            self._ticker.daemon = True
            self._ticker.start()
        except BaseException:
            self.stop()
            raise
        log.info("sandbox listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop everything and close the store; connections still open are cut."""
        self._stopping.set()
        if self._ingest is not None:
            self._ingest.close()  # imports still running finish at the sandbox's own speed
        if self._scp is not None:
            self._scp.stop()
            self._scp = None
        if self._http is not None:
            self._http.shutdown()
            self._http.close_all()
            self._http.server_close()
            if self._http_thread is not None:
                self._http_thread.join()
            self._http = None
            self._http_thread = None
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        self._ingest = None
        if self._store is not None:
            self._store.close()
            self._store = None
        shutil.rmtree(self.spool_dir, ignore_errors=True)

    def stats(self) -> SandboxStats:
        """What is open now, the peaks and totals since the last :meth:`reset_stats`, and the
        ingest model's load (``GET /sandbox/stats`` answers the same)."""
        return SandboxStats(
            http_connections=self.http_connections.reading(),
            http_requests=self.http_requests.reading(),
            dicom_associations=self.dicom_associations.reading(),
            ingest=None if self._ingest is None else self._ingest.stats(),
        )

    def reset_stats(self) -> SandboxStats:
        """Start a new measurement: every peak becomes the current count, totals zero.

        Returns
        -------
        SandboxStats
            The readings right after the reset.
        """
        for gauge in (self.http_connections, self.http_requests, self.dicom_associations):
            gauge.reset()
        if self._ingest is not None:
            self._ingest.reset()
        return self.stats()

    def tick(self) -> None:
        """Run one background tick now (what the ticker thread does every interval)."""
        self.store.tick()

    def _tick_loop(self) -> None:
        while not self._stopping.wait(self.config.ticker_interval):
            try:
                self.store.tick()
            except Exception:
                log.exception("sandbox ticker failed")
