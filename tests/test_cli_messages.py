"""Smaller messages, through the real command line: https:// to a plain-HTTP port, a redirect's
Location, a verification mismatch said once, a file that changes during the send named by its
path, and HTTPS_PROXY honoured (a real CONNECT proxy on loopback in front of a TLS sandbox)."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.cli_run import run_process
from xnatio.sandbox import Sandbox


def xio(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return run_process(*args, env=env, cwd=cwd)


def server_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("XNAT", "NO_PROXY"))}
    env = {k: v for k, v in env.items() if not k.lower().endswith("_proxy")}
    env.update({"XNAT_SERVER": url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"})
    env.update(extra)
    return env


def test_https_to_a_plain_http_port_says_what_to_do(sandbox: Sandbox) -> None:
    wrong = "https://" + sandbox.url.removeprefix("http://")
    proc = xio("ping", env=server_env(wrong))
    assert proc.returncode == 3
    assert proc.stderr.strip() == (
        f"xio: error: cannot connect to {wrong}: the server answered in plain HTTP, not TLS; "
        f"use {sandbox.url} (or the server's HTTPS port)"
    )
    assert "WRONG_VERSION_NUMBER" not in proc.stderr


class _Redirect(BaseHTTPRequestHandler):
    location: ClassVar[str] = ""

    def do_POST(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def redirecting() -> Iterator[str]:
    """An HTTP server that answers every POST with 302 to https://xnat.example.org/xnat."""
    _Redirect.location = "https://xnat.example.org/xnat/data/JSESSION"
    server = HTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_redirect_shows_its_location(redirecting: str) -> None:
    proc = xio("ping", env=server_env(redirecting))
    assert proc.returncode == 3
    assert proc.stderr.strip() == (
        f"xio: error: {redirecting}/data/JSESSION answered 302 (a redirect to "
        "https://xnat.example.org/xnat/data/JSESSION); use --server https://xnat.example.org/xnat"
    )


def test_a_verify_mismatch_is_said_once(sandbox: Sandbox, tmp_path: Path) -> None:
    env = server_env(sandbox.url)
    assert xio("synth", "s", "--series", "1", "--instances", "2", "--rows", "16", "--columns",
               "16", env=env, cwd=tmp_path).returncode == 0  # fmt: skip
    proc = xio("verify", "P1", "S1", "NOT_THERE", "s", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert out.count("P1/S1/NOT_THERE is neither archived nor in the prearchive") == 1, out


def test_a_cstore_verify_mismatch_is_said_once(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """Without routing tags the sandbox files the study as Unassigned: the check fails once."""
    sandbox = make_sandbox(dicom_port=0)
    env = server_env(sandbox.url, XNAT_DICOM_HOST="127.0.0.1",
                     XNAT_DICOM_PORT=str(sandbox.dicom_port))  # fmt: skip
    assert xio("synth", "s", "--series", "1", "--instances", "2", "--rows", "16", "--columns",
               "16", env=env, cwd=tmp_path).returncode == 0  # fmt: skip
    proc = xio("upload-dicom", "P1", "S1", "E1", "s", "--transport", "dicom-store",
               "--no-routing-tags", "--wait", "3", "--no-journal", "--progress", "none",
               env=env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert out.count("P1/S1/E1 is") == 1, out
    assert "verified: P1/S1/E1 is" in proc.stdout


# -- a file that changes while it is sent ------------------------------------------------------


def test_a_file_changed_during_the_send_is_named_by_its_path(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Three 512 kB files in one tar at 400 kB/s: the last is cut short while the first goes."""
    env = server_env(sandbox.url)
    assert xio("synth", "s", "--series", "1", "--instances", "3", "--rows", "512", "--columns",
               "512", env=env, cwd=tmp_path).returncode == 0  # fmt: skip
    files = sorted((tmp_path / "s").rglob("*.dcm"))
    args = ["upload-dicom", "P1", "S1", "E1", "s", "--num-batches", "1", "--compress", "none",
            "--bwlimit", "400k", "--progress", "json", "--no-journal"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "xnatio", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    stderr: list[str] = []
    for line in proc.stderr:
        stderr.append(line)
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("phase") == "uploading" and event.get("bytes_sent", 0) > 0:
            with files[-1].open("r+b") as f:
                f.truncate(1000)
            break
    out, rest = proc.communicate(timeout=120)
    text = out + "".join(stderr) + rest
    assert proc.returncode == 1, text
    # Named as the user gave SOURCE (relative here), not by the entry name in the tar.
    assert f"{files[-1].relative_to(tmp_path)}: file ended before its expected" in text, text
    assert "1.2.826" not in "".join(ln for ln in text.splitlines() if "file ended" in ln)


# -- HTTPS_PROXY -------------------------------------------------------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    pair = {a: b, b: a}
    try:
        while True:
            ready, _, _ = select.select(list(pair), [], [], 30)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                pair[s].sendall(data)
    except OSError:
        return
    finally:
        a.close()
        b.close()


class _Listener:
    """Accepts connections on loopback and hands each to ``serve`` in a thread."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.serve = serve
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tls_sandbox(sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The sandbox behind a TLS front on loopback: (https URL, the certificate to trust)."""
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    port = int(sandbox.url.rsplit(":", 1)[1])

    def serve(conn: socket.socket) -> None:
        try:
            tls = context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        _relay(tls, socket.create_connection(("127.0.0.1", port)))

    front = _Listener(serve)
    yield f"https://localhost:{front.port}", cert
    front.close()


@pytest.fixture
def connect_proxy() -> Iterator[tuple[str, list[str]]]:
    """A CONNECT proxy on loopback: (its URL, the targets it tunnelled to)."""
    targets: list[str] = []

    def serve(conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(4096)
            if not data:
                conn.close()
                return
            head += data
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            conn.close()
            return
        targets.append(target)
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        _relay(conn, upstream)

    proxy = _Listener(serve)
    yield f"http://127.0.0.1:{proxy.port}", targets
    proxy.close()


def test_https_proxy_is_honoured(
    tls_sandbox: tuple[str, Path], connect_proxy: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, cert = tls_sandbox
    proxy, targets = connect_proxy
    host = url.removeprefix("https://")
    env = server_env(url, XNAT_VERIFY_TLS=str(cert), HTTPS_PROXY=proxy)
    proc = xio("ping", env=env)
    assert proc.returncode == 0, proc.stderr
    assert targets and set(targets) == {host}
    # A whole upload goes through it, every batch and the verification.
    assert xio("synth", "s", "--series", "2", "--instances", "3", "--rows", "16", "--columns",
               "16", env=env, cwd=tmp_path).returncode == 0  # fmt: skip
    before = len(targets)
    proc = xio("upload-dicom", "P1", "S1", "E1", "s", "-q", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(targets) > before
    # NO_PROXY names the host: straight to the server, the proxy sees nothing.
    before = len(targets)
    proc = xio("ping", env={**env, "NO_PROXY": "localhost"})
    assert proc.returncode == 0, proc.stderr
    assert len(targets) == before
    # Without the proxy variable nothing goes through it either; with a dead proxy, exit 3.
    proc = xio("ping", env={**env, "HTTPS_PROXY": "http://bob:proxypw@127.0.0.1:9"})
    assert proc.returncode == 3
    assert "cannot connect" in proc.stderr and "proxypw" not in proc.stderr


@pytest.mark.parametrize(
    ("proxy", "code", "message"),
    [
        ("socks5://bob:proxypw@127.0.0.1:1080", 2, "socks5://bob:***@127.0.0.1:1080 needs SOCKS"),
        ("ftp://bob:proxypw@127.0.0.1:21", 2, "cannot use the proxy ftp://bob:***@127.0.0.1:21"),
    ],
)
def test_a_proxy_that_cannot_be_used_is_named_without_its_password(
    sandbox: Sandbox, proxy: str, code: int, message: str
) -> None:
    https = "https://" + sandbox.url.removeprefix("http://")
    proc = xio("ping", env=server_env(https, HTTPS_PROXY=proxy))
    if "socks5" in proxy and proc.returncode == 3:
        pytest.skip("httpx's socks extra is installed here")
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr and "proxypw" not in proc.stderr
