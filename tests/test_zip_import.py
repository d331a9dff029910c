"""Zip request bodies at the sandbox's import service, read as XNAT reads them (ZipInputStream).

The sandbox reads an in-body zip entry by entry while it arrives (src/xnatio/sandbox/bodies.py),
so it must accept and refuse exactly what java.util.zip.ZipInputStream does: each body here goes
to the sandbox over HTTP (chunked, without a Content-Length) and, when a JDK is present, through
tests/java/ZipCheck.java, and both must agree.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

import httpx
import pytest

from tests.test_zipstream import (
    JAVA_SOURCE,
    java_reader,  # noqa: F401  (fixture)
)
from xnatio.sandbox import Sandbox
from xnatio.sandbox.bodies import BodyReader, iter_archive
from xnatio.synth import write_session
from xnatio.transport.bodies import ArchiveMember, member_from_path
from xnatio.transport.zipstream import streaming_zip_body

assert JAVA_SOURCE.exists()

IMPORT = "/data/services/import"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[ArchiveMember]:
    out = tmp_path_factory.mktemp("z") / "session"
    write_session(out, series=1, instances=4, rows=64, columns=64, seed=9, content="realistic")
    paths = sorted(out.rglob("*.dcm"))
    return [member_from_path(f"{i}.dcm", p) for i, p in enumerate(paths)]


def chunked(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), 7000):
        yield data[i : i + 7000]


def post(sb: Sandbox, data: bytes, session: str) -> httpx.Response:
    params = {
        "import-handler": "DICOM-zip",
        "inbody": "true",
        "PROJECT_ID": "P1",
        "SUBJECT_ID": "S1",
        "EXPT_LABEL": session,
        "prevent_auto_commit": "true",
    }
    return httpx.post(
        f"{sb.url}{IMPORT}",
        params=params,
        content=chunked(data),
        headers={"Content-Type": "application/zip"},
        auth=("admin", "admin"),
        timeout=60,
    )


def java_ok(cmd: list[str], data: bytes) -> bool:
    import subprocess

    return subprocess.run(cmd, input=data, capture_output=True, check=False).returncode == 0


def variants(members: list[ArchiveMember]) -> dict[str, tuple[bytes, bool]]:
    """Bodies and whether ZipInputStream (and so XNAT) accepts them."""
    flip = iter([True, False, True, False])
    mixed = b"".join(streaming_zip_body(members, deflate=lambda _: next(flip)))
    deflated = b"".join(streaming_zip_body(members, deflate=lambda _: True))
    stored = b"".join(streaming_zip_body(members, deflate=lambda _: False))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:  # Python's own writer
        for m in members:
            with m.open() as fh:
                zf.writestr(m.name, fh.read())
    stored_with_descriptor = bytearray(stored)
    struct.pack_into("<H", stored_with_descriptor, 6, 8)
    bad_crc = bytearray(deflated)
    # The first descriptor's CRC: find it after the first entry's deflate stream.
    nlen = struct.unpack_from("<H", deflated, 26)[0]
    inflate = zlib.decompressobj(-15)
    inflate.decompress(deflated[30 + nlen :])
    at = len(deflated) - len(inflate.unused_data)
    bad_crc[at + 4] ^= 0xFF
    truncated = deflated[: len(deflated) // 2]
    return {
        "mixed": (mixed, True),
        "deflated": (deflated, True),
        "stored": (stored, True),
        "python-zipfile": (out.getvalue(), True),
        "stored-with-descriptor": (bytes(stored_with_descriptor), False),
        "wrong-crc-in-descriptor": (bytes(bad_crc), False),
        "truncated": (truncated, False),
    }


def test_sandbox_and_zipinputstream_agree(
    sandbox: Sandbox,
    files: list[ArchiveMember],
    java_reader: list[str],  # noqa: F811
) -> None:
    for i, (name, (data, accepted)) in enumerate(variants(files).items()):
        assert java_ok(java_reader, data) is accepted, name
        response = post(sandbox, data, f"E{i}")
        if accepted:
            assert response.status_code == 200, (name, response.text)
            assert response.text.strip().endswith(f"/E{i}"), name
        else:
            assert response.status_code == 400, (name, response.status_code)
            assert "unable to read data from file" in response.text, name


@pytest.mark.parametrize("size", [1, 2, 3, 5, 29, 31, 4093])
def test_chunk_boundaries_anywhere_in_a_header(files: list[ArchiveMember], size: int) -> None:
    # A read of a chunked body stops at the end of a chunk: headers split across chunks (as
    # 64 KiB chunks split one header in ~2,000 of a 15,000-file upload) must still be read.
    data, _ = variants(files)["mixed"]
    framed = b"".join(
        b"%x\r\n" % len(data[i : i + size]) + data[i : i + size] + b"\r\n"
        for i in range(0, len(data), size)
    )
    body = cast(IO[bytes], BodyReader(io.BytesIO(framed + b"0\r\n\r\n"), None))
    entries = []
    for e in iter_archive(body, "ZIP", Path("/nonexistent")):
        assert e.stream is not None, e.error
        entries.append((e.name, e.stream.read()))
    assert [n for n, _ in entries] == [m.name for m in files]
    for (_, got), m in zip(entries, files, strict=True):
        with m.open() as fh:
            assert got == fh.read()


def test_sandbox_imports_a_chunked_deflated_zip_without_java(
    sandbox: Sandbox, files: list[ArchiveMember], tmp_path: Path
) -> None:
    data, _ = variants(files)["deflated"]
    response = post(sandbox, data, "E1")
    assert response.status_code == 200, response.text
    listing = httpx.get(
        f"{sandbox.url}/data/prearchive/projects/P1",
        params={"format": "json"},
        auth=("admin", "admin"),
    )
    assert listing.status_code == 200
