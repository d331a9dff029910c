"""Servers the benchmarks start for themselves: the sandbox, DCMTK ``storescp`` and Orthanc.

Each runs as a separate process, so that the client being measured never shares an interpreter
(or a GIL) with the server, and each run can start from an empty data folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = [
    "ORTHANC",
    "STORESCP",
    "STORESCU",
    "OrthancProcess",
    "ProxyProcess",
    "SandboxProcess",
    "StorescpProcess",
    "find_tool",
    "free_port",
    "tool_available",
]

STORESCP = "storescp"
STORESCU = "storescu"
ORTHANC = "Orthanc"

_REPO = Path(__file__).resolve().parent.parent


def tool_available(name: str) -> bool:
    """Whether an executable is on ``PATH`` (or in ``/usr/sbin``, where Debian puts Orthanc).

    Parameters
    ----------
    name
        The executable's name.

    Returns
    -------
    bool
        True when it can be run.
    """
    return _which(name) is not None


def _which(name: str) -> str | None:
    # Not from the virtualenv's bin: pynetdicom installs Python apps named storescp/storescu
    # there, which take other options than DCMTK's and would shadow them on PATH.
    venv_bin = os.path.abspath(os.path.dirname(sys.executable))
    dirs = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and os.path.abspath(d) != venv_bin
    ]
    return shutil.which(name, path=os.pathsep.join([*dirs, "/usr/sbin", "/usr/local/sbin"]))


def find_tool(name: str) -> str | None:
    """The path of an external tool (DCMTK, Orthanc), never the virtualenv's Python apps.

    Parameters
    ----------
    name
        The executable's name.

    Returns
    -------
    str or None
        Its path, or None when it is not installed.
    """
    return _which(name)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Returns
    -------
    int
        The port number.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _Managed:
    """Start/stop plumbing shared by the server wrappers (context manager)."""

    def __init__(self, keep_data: bool = False) -> None:
        self.data = Path(tempfile.mkdtemp(prefix=f"xio-bench-{type(self).__name__.lower()}-"))
        self._keep = keep_data
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> _Managed:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the process and remove its data folder."""
        _stop(self._proc)
        self._proc = None
        if not self._keep:
            shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self) -> _Managed:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SandboxProcess(_Managed):
    """``xio sandbox`` in a subprocess, with a fresh data folder and no background timers.

    Parameters
    ----------
    project
        The project created at start.
    dicom
        Also run the sandbox's DICOM SCP.
    keep_data
        Leave the data folder in place after :meth:`stop`.

    Attributes
    ----------
    url
        Base URL once started.
    dicom_port
        The SCP's port, or None.
    """

    def __init__(self, project: str = "P1", *, dicom: bool = False, keep_data: bool = False):
        super().__init__(keep_data)
        self.project = project
        self.dicom = dicom
        self.url = ""
        self.dicom_port: int | None = None
        self.aet = "XNAT"

    def start(self) -> SandboxProcess:
        """Start the server and wait for its first stdout line.

        Returns
        -------
        SandboxProcess
            Itself.
        """
        cmd = [
            sys.executable,
            "-m",
            "xnatio",
            "sandbox",
            "--port",
            "0",
            "--dicom-port",
            "0" if self.dicom else "-1",
            "--project",
            self.project,
            "--data",
            str(self.data / "sandbox"),
            # Runs are short; keep background builds and auto-archive out of the measurement.
            "--ticker-interval",
            "3600",
            "--idle-interval",
            "3600",
        ]
        env = {**os.environ, "PYTHONPATH": str(_REPO / "src")}
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=self.data
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if not line.startswith("sandbox "):
            self.stop()
            raise RuntimeError(f"the sandbox did not start (said {line!r})")
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        self.url = fields["url"]
        if fields.get("dicom-port", "none") != "none":
            self.dicom_port = int(fields["dicom-port"])
        self.aet = fields.get("aet", "XNAT")
        return self

    @property
    def port(self) -> int:
        """The HTTP port."""
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])


class StorescpProcess(_Managed):
    """DCMTK ``storescp --fork`` writing to a fresh folder, with ``TCP_NODELAY=1`` set.

    Parameters
    ----------
    aet
        The receiver's AE title.
    """

    def __init__(self, aet: str = "STORESCP") -> None:
        super().__init__()
        self.aet = aet
        self.port = 0

    def start(self) -> StorescpProcess:
        """Start storescp and wait until it listens.

        Returns
        -------
        StorescpProcess
            Itself.
        """
        exe = _which(STORESCP)
        if exe is None:
            raise RuntimeError("storescp is not installed")
        self.port = free_port()
        out = self.data / "in"
        out.mkdir()
        # +xa: accept every transfer syntax; -od: where files go; --fork: one process per
        # association, as XNAT's receiver serves associations in parallel (without it storescp
        # takes one association at a time). TCP_NODELAY=1 makes DCMTK disable Nagle's algorithm
        # on its sockets (otherwise delayed ACKs dominate small PDUs).
        cmd = [exe, "--fork", "-aet", self.aet, "+xa", "-od", str(out), str(self.port)]
        env = {**os.environ, "TCP_NODELAY": "1"}
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        _wait_port(self.port, self._proc, 10.0, "storescp")
        return self

    def received(self) -> int:
        """Number of files written so far."""
        return sum(1 for p in (self.data / "in").rglob("*") if p.is_file())


class OrthancProcess(_Managed):
    """Orthanc with its default settings, apart from ports and storage folders.

    Parameters
    ----------
    aet
        Orthanc's AE title (the default is ``ORTHANC``).
    """

    def __init__(self, aet: str = "ORTHANC") -> None:
        super().__init__()
        self.aet = aet
        self.port = 0
        self.http_port = 0

    def start(self) -> OrthancProcess:
        """Start Orthanc and wait until its DICOM port listens.

        Returns
        -------
        OrthancProcess
            Itself.
        """
        exe = _which(ORTHANC)
        if exe is None:
            raise RuntimeError("Orthanc is not installed")
        self.port = free_port()
        self.http_port = free_port()
        config = {
            "Name": "xio-bench",
            "StorageDirectory": str(self.data / "storage"),
            "IndexDirectory": str(self.data / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            # No plugins: the Debian package would otherwise load whatever is installed.
            "Plugins": [],
        }
        path = self.data / "orthanc.json"
        path.write_text(json.dumps(config))
        self._proc = subprocess.Popen(
            [exe, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.data
        )
        _wait_port(self.port, self._proc, 30.0, "Orthanc")
        return self

    def received(self) -> int:
        """Number of instances Orthanc holds (asked over its REST API)."""
        import httpx

        r = httpx.get(f"http://127.0.0.1:{self.http_port}/statistics", timeout=30)
        r.raise_for_status()
        count: int = r.json()["CountInstances"]
        return count


class ProxyProcess(_Managed):
    """:mod:`bench.proxy` in its own process, so shaping does not compete with the client's GIL.

    Parameters
    ----------
    target_port
        The port on 127.0.0.1 to forward to.
    delay_ms
        One-way delay in milliseconds.
    rate
        Bytes per second per connection and direction (0: no cap).
    total_rate
        Bytes per second for all connections together, per direction (0: no total cap).
    """

    def __init__(
        self,
        target_port: int,
        *,
        delay_ms: float = 20.0,
        rate: float = 1e6,
        total_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.target_port = target_port
        self.delay_ms = delay_ms
        self.rate = rate
        self.total_rate = total_rate
        self.port = 0

    def start(self) -> ProxyProcess:
        """Start the proxy and read the port it listens on.

        Returns
        -------
        ProxyProcess
            Itself.
        """
        cmd = [
            sys.executable,
            "-m",
            "bench.proxy",
            "--target",
            f"127.0.0.1:{self.target_port}",
            "--delay-ms",
            str(self.delay_ms),
            "--rate",
            str(self.rate),
            "--total-rate",
            str(self.total_rate),
        ]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=_REPO
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if not line.startswith("proxy port="):
            self.stop()
            raise RuntimeError(f"the proxy did not start (said {line!r})")
        self.port = int(line.split("=", 1)[1])
        return self
