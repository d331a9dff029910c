"""The chunked zip body (xnatio.transport.zipstream) read back by Python's zipfile and by Java's
java.util.zip.ZipInputStream, the reader XNAT's import service uses (tests/java/ZipCheck.java,
compiled here when a JDK is on the machine)."""

from __future__ import annotations

import dataclasses
import io
import random
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path
from typing import cast

import pytest

from tests.test_archive import SparseFile, expected, mem, stream_keeping_ends, zero_member
from xnatio.transport import zipstream
from xnatio.transport.bodies import ArchiveBody, ArchiveError, ArchiveMember
from xnatio.transport.zipstream import StreamStats, streaming_zip_body

JAVA_SOURCE = Path(__file__).parent / "java" / "ZipCheck.java"


@pytest.fixture(scope="module")
def java_reader(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The command that runs ZipCheck (a zip on stdin, one line per entry on stdout)."""
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("no JDK (javac/java) on PATH")
    out = tmp_path_factory.mktemp("java")
    subprocess.run(["javac", "-d", str(out), str(JAVA_SOURCE)], check=True)
    return ["java", "-Xshare:auto", "-cp", str(out), "ZipCheck"]


def java_entries(cmd: list[str], data: bytes) -> list[tuple[str, int, int, int]]:
    """(name, size, CRC-32, method) per entry as ZipInputStream reads ``data``."""
    done = subprocess.run(cmd, input=data, capture_output=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    rows = []
    for line in done.stdout.decode("utf-8").splitlines():
        name, size, crc, method = line.split("\t")
        rows.append((name, int(size), int(crc, 16), int(method)))
    return rows


def java_error(cmd: list[str], data: bytes) -> str:
    done = subprocess.run(cmd, input=data, capture_output=True, check=False, timeout=120)
    assert done.returncode != 0, "ZipInputStream accepted the body"
    return done.stderr.decode(errors="replace")


def members() -> list[ArchiveMember]:
    rng = random.Random(3)
    pixels = bytes(40_000) + rng.randbytes(30_000) + bytes(50_000)  # compresses, not trivially
    return [
        mem("1.2.3.1.dcm", pixels),
        mem("série/ñ ü.dcm", rng.randbytes(5_000)),  # non-ASCII: UTF-8 flag
        mem("empty.dcm", b""),
        mem("big.dcm", pixels * 20),  # larger than the output buffer and the read size
        dataclasses.replace(mem("jpeg.dcm", rng.randbytes(3_000)), compressible=False),
        mem("tiny.dcm", b"x" * 50),
    ]


def python_entries(data: bytes) -> list[tuple[str, bytes, int]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None  # every CRC
        return [(zi.filename, zf.read(zi), zi.compress_type) for zi in zf.infolist()]


def body_bytes(choice: list[bool] | bool, chunk_size: int = 4096) -> tuple[bytes, StreamStats]:
    ms = members()
    picks = iter(choice) if isinstance(choice, list) else None
    stats = StreamStats()

    def deflate(_: ArchiveMember) -> bool:
        return next(picks) if picks is not None else bool(choice)

    body = streaming_zip_body(ms, deflate=deflate, chunk_size=chunk_size, stats=lambda: stats)
    assert body.length is None and body.content_type == "application/zip"
    chunks = list(body)
    assert all(0 < len(c) <= chunk_size for c in chunks)
    return b"".join(chunks), stats


@pytest.mark.parametrize(
    "choice",
    [True, False, [True, False, True, False, True], [False, True, False, True, True]],
    ids=["all-deflated", "all-stored", "alternating", "alternating-other"],
)
def test_python_and_java_read_every_entry(
    java_reader: list[str], choice: list[bool] | bool
) -> None:
    data, stats = body_bytes(choice)
    want = expected(members())
    got = python_entries(data)
    assert [(n, d) for n, d, _ in got] == want
    # Asked per entry, except for the member marked incompressible (never asked, never deflated).
    asked = [True] * 5 if choice is True else [False] * 5 if choice is False else choice
    methods = [*asked[:4], False, *asked[4:]]
    assert [m for _, _, m in got] == [8 if d else 0 for d in methods]
    assert java_entries(java_reader, data) == [
        (n, len(d), zlib.crc32(d), 8 if deflated else 0)
        for (n, d), deflated in zip(want, methods, strict=True)
    ]
    assert stats.payload == sum(len(d) for _, d in want)
    assert stats.produced == len(data)
    assert stats.deflated == sum(methods) and stats.stored == len(methods) - sum(methods)


def test_deflated_entries_shrink_and_the_body_repeats_exactly() -> None:
    stored, _ = body_bytes(False)
    deflated, stats = body_bytes(True)
    assert len(deflated) < len(stored) / 2
    assert stats.deflate_in > stats.deflate_out > 0 and stats.deflate_cpu > 0
    again, _ = body_bytes(True, chunk_size=1 << 20)  # other buffer size, same bytes
    assert again == deflated


def test_deflated_entries_carry_a_descriptor_and_stored_ones_never(java_reader: list[str]) -> None:
    data, _ = body_bytes([True, False, True, False, True])
    pos, seen = 0, []
    while struct.unpack_from("<I", data, pos)[0] == 0x04034B50:
        _, _, flags, method, _, _, crc, csize, size, nlen, xlen = struct.unpack_from(
            "<IHHHHHIIIHH", data, pos
        )
        seen.append((method, bool(flags & 8)))
        start = pos + 30 + nlen + xlen
        if method == 0:
            pos = start + csize
        else:
            assert (crc, csize, size) == (0, 0, 0)  # known only at the end: in the descriptor
            inflate = zlib.decompressobj(-15)
            inflate.decompress(data[start:])
            pos = len(data) - len(inflate.unused_data)
            sig, _, dcsize, _ = struct.unpack_from("<IIII", data, pos)
            assert sig == 0x08074B50 and dcsize == pos - start
            pos += 16
    assert seen == [(8, True), (0, False), (8, True), (0, False), (0, False), (8, True)]


def test_java_refuses_a_stored_entry_with_a_descriptor(java_reader: list[str]) -> None:
    # The rule this module exists for: set the descriptor flag on the first (stored) entry.
    data, _ = body_bytes(False)
    bad = bytearray(data)
    struct.pack_into("<H", bad, 6, struct.unpack_from("<H", data, 6)[0] | 8)
    assert "only DEFLATED entries can have EXT descriptor" in java_error(java_reader, bytes(bad))


def test_java_refuses_a_wrong_crc(java_reader: list[str]) -> None:
    data, _ = body_bytes(False)
    bad = bytearray(data)
    bad[14] ^= 0xFF  # first entry's CRC in the local header
    assert "invalid entry CRC" in java_error(java_reader, bytes(bad))


def test_members_from_the_size_limit_up_are_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    # Deflated entries must stay far below 4 GiB (ZipInputStream picks the descriptor's width from
    # the byte counts); the limit is lowered here so that the rule can be watched cheaply.
    monkeypatch.setattr(zipstream, "DEFLATE_MAX_SIZE", 1000)
    body = streaming_zip_body(
        [mem("small", b"a" * 999), mem("large", b"a" * 1000)], deflate=lambda _: True
    )
    got = python_entries(b"".join(body))
    assert [(n, m) for n, _, m in got] == [("small", 8), ("large", 0)]


def test_a_file_that_changed_size_stops_the_body() -> None:
    short = ArchiveMember("short.dcm", 100, lambda: io.BytesIO(b"x" * 60))
    long = ArchiveMember("long.dcm", 100, lambda: io.BytesIO(b"x" * 160))
    for m in (short, long):
        for deflate in (True, False):
            body = streaming_zip_body([m], deflate=lambda _, d=deflate: d)  # type: ignore[misc]
            with pytest.raises(ArchiveError, match="changed after it was listed"):
                b"".join(body)


@pytest.mark.slow
def test_zip64_stored_member_over_4gib_then_deflated_entries(java_reader: list[str]) -> None:
    big = (1 << 32) + 10
    ms = [
        mem("before.dcm", b"hello" * 100),
        zero_member("huge.dcm", big),
        mem("after.dcm", b"z" * 99),
    ]
    body = streaming_zip_body(ms, deflate=lambda _: True)
    head, tail, total = stream_keeping_ends(cast(ArchiveBody, body), keep=64 * 1024)
    with zipfile.ZipFile(SparseFile(head, tail, total)) as zf:
        infos = {zi.filename: zi for zi in zf.infolist()}
        assert infos["huge.dcm"].compress_type == 0 and infos["huge.dcm"].file_size == big
        assert infos["after.dcm"].compress_type == 8 and infos["after.dcm"].header_offset > 1 << 32
        assert zf.read("after.dcm") == b"z" * 99 and zf.read("before.dcm") == b"hello" * 100
    # ZipInputStream reads the whole 4 GiB body from a pipe, entry after entry.
    with subprocess.Popen(java_reader, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        for chunk in streaming_zip_body(ms, deflate=lambda _: True):
            proc.stdin.write(chunk)
        proc.stdin.close()
        out = proc.stdout.read().decode()
    assert proc.returncode == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert [(r[0], int(r[1]), r[3]) for r in rows] == [
        ("before.dcm", 500, "8"),
        ("huge.dcm", big, "0"),
        ("after.dcm", 99, "8"),
    ]
