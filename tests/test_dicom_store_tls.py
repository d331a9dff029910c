"""C-STORE over TLS (DICOM PS3.15 annex B.1): ``DicomTls`` and ``--dicom-tls``, real receivers.

A throwaway PKI (CA, server and client certificates) is made with ``cryptography``; the receivers
are DCMTK ``storescp +tls`` (built with OpenSSL) and the sandbox's own SCP with a TLS context.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from xnatio.errors import ConnectionFailedError
from xnatio.sandbox import Sandbox
from xnatio.sandbox.scp import DicomReceiver
from xnatio.synth import write_session
from xnatio.uploaders import DicomTls, send_dicom_store

pytest.importorskip("cryptography", reason="the dev extra installs cryptography")
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

needs_storescp = pytest.mark.skipif(shutil.which("storescp") is None, reason="DCMTK missing")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


def _ca(folder: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    (folder / f"{cn}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _leaf(
    folder: Path,
    name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    server: bool,
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca(folder, "xnatio-test-ca")
    _ca(folder, "unrelated-ca")
    server_cert, server_key = _leaf(folder, "server", ca_key, ca_cert, server=True)
    client_cert, client_key = _leaf(folder, "client", ca_key, ca_cert, server=False)
    return Pki(
        folder / "xnatio-test-ca.pem",
        server_cert,
        server_key,
        client_cert,
        client_key,
        folder / "unrelated-ca.pem",
    )


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tls") / "session"
    write_session(out, series=2, instances=3, rows=32, columns=32)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Storescp:
    port: int
    out: Path
    proc: subprocess.Popen[bytes]

    def stored(self) -> int:
        return sum(1 for p in self.out.iterdir() if p.is_file())


@pytest.fixture
def storescp_tls(pki: Pki, tmp_path: Path) -> Iterator[Callable[..., Storescp]]:
    """storescp +tls on a free port; ``require_client_cert`` asks for our certificate."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*, require_client_cert: bool = True) -> Storescp:
        port = _free_port()
        out = tmp_path / f"storescp-{port}"
        out.mkdir()
        args = ["storescp", "-aet", "XNAT", "-od", str(out), "+tls"]
        args += [str(pki.server_key), str(pki.server_cert), "+cf", str(pki.ca)]
        args += ["-rc" if require_client_cert else "-ic", str(port)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(proc)
        end = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < end, "storescp did not start"
            time.sleep(0.05)
        return Storescp(port, out, proc)

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _send(source: Path, port: int, tls: DicomTls | None, **kw: object) -> object:
    options: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "project": "P1",
        "subject": "S1",
        "session": "E1",
        "num_batches": 2,
        "timeout": 10.0,
        "tls": tls,
    }
    options.update(kw)
    return send_dicom_store(source_dir=source, **options)  # type: ignore[arg-type]


@needs_storescp
def test_dicomtls_with_client_certificate_to_storescp(
    pki: Pki, session: Path, storescp_tls: Callable[..., Storescp]
) -> None:
    scp = storescp_tls(require_client_cert=True)
    tls = DicomTls(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    result = send_dicom_store(
        source_dir=session,
        host="127.0.0.1",
        port=scp.port,
        project="P1",
        subject="S1",
        session="E1",
        num_batches=2,
        timeout=10.0,
        tls=tls,
    )
    assert result.success, result.errors
    assert result.sent == 6
    assert scp.stored() == 6


@needs_storescp
def test_tls_failures_are_one_clear_line_before_sending(
    pki: Pki, session: Path, storescp_tls: Callable[..., Storescp]
) -> None:
    scp = storescp_tls(require_client_cert=True)
    # The receiver's certificate is not signed by the CA we trust.
    with pytest.raises(ConnectionFailedError, match=r"TLS handshake .* failed") as info:
        _send(session, scp.port, DicomTls(ca=pki.other_ca))
    assert "certificate verify failed" in info.value.message
    assert "\n" not in info.value.message
    # Plain TCP to a TLS port: the receiver drops it; no instance is sent either way.
    with pytest.raises(ConnectionFailedError):
        _send(session, scp.port, None)
    assert scp.stored() == 0


@needs_storescp
def test_storescp_requiring_a_client_certificate_refuses_us_without_one(
    pki: Pki, session: Path, storescp_tls: Callable[..., Storescp]
) -> None:
    scp = storescp_tls(require_client_cert=True)
    with pytest.raises(ConnectionFailedError):
        _send(session, scp.port, DicomTls(ca=pki.ca))
    assert scp.stored() == 0
    scp_lenient = storescp_tls(require_client_cert=False)
    result = _send(session, scp_lenient.port, DicomTls(ca=pki.ca))
    assert getattr(result, "success", False)
    assert scp_lenient.stored() == 6


@needs_storescp
def test_cli_dicom_tls_options(
    pki: Pki, session: Path, storescp_tls: Callable[..., Storescp], tmp_path: Path
) -> None:
    scp = storescp_tls(require_client_cert=True)
    args = [sys.executable, "-m", "xnatio", "upload-dicom", "P1", "S1", "E1", str(session)]
    args += ["--transport", "dicom-store", "--dicom-host", "127.0.0.1"]
    args += ["--dicom-port", str(scp.port), "--num-batches", "2", "--no-verify", "--no-journal"]
    args += ["--dicom-tls", "--dicom-tls-ca", str(pki.ca)]
    args += ["--dicom-tls-cert", str(pki.client_cert), "--dicom-tls-key", str(pki.client_key)]
    args += ["--json", "--server", "http://127.0.0.1:9"]
    env = {**os.environ, "XNAT_USERNAME": "u", "XNAT_PASSWORD": "p", "HOME": str(tmp_path)}
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["sent"] == 6
    assert scp.stored() == 6
    # Without --dicom-tls the same receiver cannot be reached: exit 3, one line.
    plain = [a for a in args if a != "--dicom-tls"]
    plain = plain[: plain.index("--dicom-tls-ca")] + plain[plain.index("--json") :]
    failed = subprocess.run(plain, capture_output=True, text=True, timeout=120, env=env)
    assert failed.returncode == 3, failed.stderr


def _server_context(pki: Pki, *, require_client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


@pytest.fixture
def tls_receiver(make_sandbox: Callable[..., Sandbox], pki: Pki) -> Iterator[DicomReceiver]:
    sandbox = make_sandbox()
    receiver = DicomReceiver(
        sandbox, "127.0.0.1", 0, ssl_context=_server_context(pki, require_client_cert=True)
    )
    receiver.start()
    yield receiver
    receiver.stop()


def test_sandbox_scp_over_tls_routes_the_session(
    tls_receiver: DicomReceiver, pki: Pki, session: Path
) -> None:
    tls = DicomTls(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    result = _send(session, tls_receiver.port, tls)
    assert getattr(result, "success", False)
    store = tls_receiver._sandbox.store
    rows = store.prearchive_rows("P1")
    assert [(r["subject"], r["name"]) for r in rows] == [("S1", "E1")]
    assert len(store.prearchive_files("P1", rows[0]["timestamp"], rows[0]["folderName"])) == 6
    # No client certificate, or plain TCP: refused before anything is stored.
    with pytest.raises(ConnectionFailedError):
        _send(session, tls_receiver.port, DicomTls(ca=pki.ca), session="E2")
    with pytest.raises(ConnectionFailedError):
        _send(session, tls_receiver.port, None, session="E3")
    assert [r["name"] for r in store.prearchive_rows("P1")] == ["E1"]
