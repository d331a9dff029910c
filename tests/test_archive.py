"""Tests for xnatio.transport.bodies: exact lengths, round trips through stdlib and GNU readers."""

from __future__ import annotations

import http.server
import io
import os
import random
import shutil
import struct
import subprocess
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

import httpx
import pytest

from xnatio.transport.bodies import (
    ArchiveBody,
    ArchiveError,
    ArchiveMember,
    make_body,
    member_from_path,
    tar_body,
    zip_body,
)

BodyFactory = Callable[..., ArchiveBody]
FORMATS = [pytest.param(tar_body, id="tar"), pytest.param(zip_body, id="zip")]


def mem(name: str, data: bytes, mtime: int = 1_700_000_000) -> ArchiveMember:
    return ArchiveMember(name=name, size=len(data), open=lambda: io.BytesIO(data), mtime=mtime)


def tricky_members() -> list[ArchiveMember]:
    rng = random.Random(4)
    return [
        mem("series1/1.2.840.1.dcm", rng.randbytes(1000)),
        mem("série 2/ñame with spaces ü.dcm", rng.randbytes(6000)),
        mem("empty.dcm", b""),
        mem("a" * 230 + ".dcm", rng.randbytes(513)),  # too long for ustar, no '/' to split at
        mem("dir/" * 40 + "deep.dcm", rng.randbytes(511)),  # 168 bytes: fits the ustar prefix
        mem("长" * 80 + "/x.dcm", rng.randbytes(3)),  # long and non-ASCII
        mem("big.dcm", rng.randbytes(70_000)),
    ]


def read_back(kind: str, data: bytes) -> list[tuple[str, bytes]]:
    if kind == "tar":
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            out = []
            for ti in tf.getmembers():
                f = tf.extractfile(ti)
                assert f is not None
                out.append((ti.name, f.read()))
            return out
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None  # checks every CRC
        return [(zi.filename, zf.read(zi)) for zi in zf.infolist()]


def expected(members: list[ArchiveMember]) -> list[tuple[str, bytes]]:
    return [(m.name, m.open().read()) for m in members]


@pytest.mark.parametrize("factory", FORMATS)
@pytest.mark.parametrize("chunk_size", [512, 4096, 1 << 20])
def test_round_trip_exact_length_and_reiteration(factory: BodyFactory, chunk_size: int) -> None:
    members = tricky_members()
    body = factory(members, chunk_size=chunk_size)
    chunks = list(body)
    data = b"".join(chunks)
    assert len(data) == body.length
    assert all(0 < len(c) <= chunk_size for c in chunks)
    assert b"".join(body) == data  # a second iteration gives the same bytes (retries)
    kind = "tar" if factory is tar_body else "zip"
    assert read_back(kind, data) == expected(members)
    assert body.member_count == len(members)
    assert body.content_type == ("application/x-tar" if kind == "tar" else "application/zip")


@pytest.mark.parametrize("factory", FORMATS)
def test_many_files_random_sizes(factory: BodyFactory) -> None:
    rng = random.Random(8)
    members = [
        mem(f"s{i % 7}/{i:05d}.dcm", rng.randbytes(rng.choice([0, 1, 511, 512, 513, 3000])))
        for i in range(1500)
    ]
    body = factory(members, chunk_size=64 * 1024)
    data = b"".join(body)
    assert len(data) == body.length
    kind = "tar" if factory is tar_body else "zip"
    assert read_back(kind, data) == expected(members)


@pytest.mark.parametrize("factory", FORMATS)
def test_empty_archive(factory: BodyFactory) -> None:
    body = factory([])
    data = b"".join(body)
    assert len(data) == body.length
    kind = "tar" if factory is tar_body else "zip"
    assert read_back(kind, data) == []


def test_zip_utf8_flag_only_for_non_ascii_names() -> None:
    data = b"".join(zip_body([mem("plain.dcm", b"a"), mem("ümlaut.dcm", b"b")]))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        flags = [zi.flag_bits for zi in zf.infolist()]
    assert flags[0] & 0x800 == 0
    assert flags[1] & 0x800
    # No data descriptor (bit 3): java.util.zip.ZipInputStream refuses it on STORED entries.
    assert all(f & 0x8 == 0 for f in flags)
    assert data[:4] == b"PK\x03\x04"


def test_on_bytes_reports_every_byte_once_per_iteration() -> None:
    seen: list[int] = []
    body = tar_body(tricky_members(), chunk_size=4096, on_bytes=seen.append)
    chunks = [len(c) for c in body]
    assert seen == chunks
    assert sum(seen) == body.length
    list(body)
    assert sum(seen) == 2 * body.length


def test_files_on_disk_via_member_from_path(tmp_path: Path) -> None:
    rng = random.Random(1)
    members = []
    for i in range(20):
        p = tmp_path / f"f {i}.dcm"
        p.write_bytes(rng.randbytes(rng.randrange(0, 200_000)))
        members.append(member_from_path(f"é/{p.name}", p))
    for kind in ("tar", "zip"):
        body = make_body(kind, members, chunk_size=100_000)
        data = b"".join(body)
        assert len(data) == body.length
        got = read_back(kind, data)
        assert got == [(f"é/f {i}.dcm", (tmp_path / f"f {i}.dcm").read_bytes()) for i in range(20)]


def test_make_body_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown archive format"):
        make_body("rar", [])  # type: ignore[arg-type]


@pytest.mark.parametrize("factory", FORMATS)
@pytest.mark.parametrize("name", ["", "a\x00b", "bad\udc80surrogate"])
def test_bad_names_rejected_up_front(factory: BodyFactory, name: str) -> None:
    with pytest.raises(ArchiveError):
        factory([mem(name, b"x")])


def test_negative_size_rejected() -> None:
    with pytest.raises(ArchiveError, match="negative"):
        tar_body([ArchiveMember("a", -1, io.BytesIO)])


# --- files that change on disk -----------------------------------------------------------------


@pytest.mark.parametrize("factory", FORMATS)
@pytest.mark.parametrize("actual", [0, 99, 101, 5000], ids=["empty", "shorter", "longer", "much"])
@pytest.mark.parametrize("chunk_size", [512, 1 << 20], ids=["large-path", "small-path"])
def test_size_change_raises(factory: BodyFactory, actual: int, chunk_size: int) -> None:
    declared = 100 if chunk_size == 1 << 20 else 1000  # 1000 > 512 takes the zip CRC-pass path
    if actual == 99:
        actual = declared - 1
    elif actual == 101:
        actual = declared + 1
    data = b"\x01" * actual
    member = ArchiveMember("x.dcm", declared, lambda: io.BytesIO(data))
    body = factory([mem("ok.dcm", b"fine"), member], chunk_size=chunk_size)
    with pytest.raises(ArchiveError, match=r"x\.dcm"):
        b"".join(body)


@pytest.mark.parametrize("factory", FORMATS)
def test_unreadable_files_raise_archive_error(factory: BodyFactory, tmp_path: Path) -> None:
    path = tmp_path / "gone.dcm"
    path.write_bytes(b"abc")
    member = member_from_path("gone.dcm", path)
    path.unlink()
    with pytest.raises(ArchiveError, match=r"gone\.dcm: cannot open"):
        b"".join(factory([member]))

    def broken() -> BinaryIO:
        raise_on_read = io.BytesIO(b"abc")
        raise_on_read.readinto = _raise_eio  # type: ignore[method-assign]
        return raise_on_read

    with pytest.raises(ArchiveError, match="Input/output error"):
        b"".join(factory([ArchiveMember("eio.dcm", 3, broken)]))


def _raise_eio(_buffer: object) -> int:
    raise OSError(5, "Input/output error")


def test_zip_large_member_changed_between_passes() -> None:
    opened = []

    def opener() -> BinaryIO:
        opened.append(1)
        return io.BytesIO(b"a" * 2000 if len(opened) == 1 else b"b" * 2000)

    body = zip_body([ArchiveMember("x.dcm", 2000, opener)], chunk_size=512)
    with pytest.raises(ArchiveError, match="changed while"):
        b"".join(body)


# --- zip64 and huge members, without writing gigabytes anywhere -------------------------------


class ZeroFile(io.RawIOBase):
    """A file of ``size`` zero bytes, produced on demand."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        out = memoryview(b).cast("B")
        n = min(len(out), self.left)
        for start in range(0, n, len(ZEROS)):
            k = min(len(ZEROS), n - start)
            out[start : start + k] = ZEROS[:k]
        self.left -= n
        return n


ZEROS = bytes(1 << 20)


class SparseFile(io.RawIOBase):
    """Seekable view of a long stream of which only the head and tail are kept (zeros between)."""

    def __init__(self, head: bytes, tail: bytes, length: int) -> None:
        self.head, self.tail, self.length, self.pos = head, tail, length, 0
        self.tail_start = length - len(tail)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.length}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        out = memoryview(b).cast("B")
        n = max(0, min(len(out), self.length - self.pos))
        start, end = self.pos, self.pos + n
        out[:n] = bytes(n)
        # Copy whatever part of [start, end) overlaps the kept head and tail.
        if start < len(self.head):
            k = min(end, len(self.head)) - start
            out[:k] = self.head[start : start + k]
        if end > self.tail_start:
            lo = max(start, self.tail_start)
            out[lo - start : n] = self.tail[lo - self.tail_start : end - self.tail_start]
        self.pos = end
        return n


def zero_member(name: str, size: int) -> ArchiveMember:
    return ArchiveMember(name, size, lambda: cast(BinaryIO, ZeroFile(size)))


def stream_keeping_ends(body: ArchiveBody, keep: int) -> tuple[bytes, bytes, int]:
    """Iterate ``body``; return its first and last ``keep``+ bytes and its total length."""
    head: list[bytes] = []
    tail: list[bytes] = []
    total = 0
    for chunk in body:
        total += len(chunk)
        if total - len(chunk) < keep:
            head.append(chunk)
            continue
        tail.append(chunk)
        while len(tail) > 1 and sum(map(len, tail[1:])) >= keep:
            tail.pop(0)
    return b"".join(head), b"".join(tail), total


def test_zip64_real_sizes_over_4gib() -> None:
    big = (1 << 32) + 10  # over the 32-bit size field; the next entry's offset overflows too
    members = [mem("before.dcm", b"hello"), zero_member("huge.dcm", big), mem("after.dcm", b"bye")]
    body = zip_body(members)
    head, tail, total = stream_keeping_ends(body, keep=64 * 1024)
    assert total == body.length
    with zipfile.ZipFile(SparseFile(head, tail, total)) as zf:
        infos = zf.infolist()
        assert [zi.filename for zi in infos] == ["before.dcm", "huge.dcm", "after.dcm"]
        assert infos[1].file_size == big
        assert infos[2].header_offset > 1 << 32
        assert zf.read("after.dcm") == b"bye"
        assert zf.read("before.dcm") == b"hello"
        with zf.open("huge.dcm") as f:
            assert f.read(16) == bytes(16)
    # The CRC written for the huge entry is the CRC of its zeros.
    crc = 0
    for _ in range(big >> 20):
        crc = zlib.crc32(ZEROS, crc)
    crc = zlib.crc32(bytes(big & 0xFFFFF), crc)
    assert crc == infos[1].CRC
    # Zip64 end-of-central-directory record and locator sit before the classic end record.
    assert tail[-22 - 20 : -22][:4] == b"PK\x06\x07"
    assert tail[-22 - 20 - 56 : -22 - 20][:4] == b"PK\x06\x06"


def test_zip64_forced_small_archive(tmp_path: Path) -> None:
    members = tricky_members()
    body = zip_body(members, force_zip64=True, chunk_size=4096)
    data = b"".join(body)
    assert len(data) == body.length
    assert read_back("zip", data) == expected(members)
    assert data[-22 - 20 : -22][:4] == b"PK\x06\x07"
    # Local headers carry the zip64 extra with the real sizes behind 0xFFFFFFFF markers.
    sig, _ver, _flags, _meth, _t, _d, _crc, csize, usize, nlen, xlen = struct.unpack(
        "<IHHHHHIIIHH", data[:30]
    )
    assert (sig, csize, usize, xlen) == (0x04034B50, 0xFFFFFFFF, 0xFFFFFFFF, 20)
    assert struct.unpack("<HHQQ", data[30 + nlen : 30 + nlen + 20])[2] == members[0].size
    if shutil.which("unzip"):
        path = tmp_path / "z64.zip"
        path.write_bytes(data)
        out = subprocess.run(["unzip", "-t", str(path)], capture_output=True, check=False)
        assert out.returncode == 0, out.stdout.decode(errors="replace")


def test_zip64_from_entry_count() -> None:
    members = [mem(f"{i}", b"") for i in range(0x10000)]  # one more than the 16-bit count field
    body = zip_body(members, chunk_size=1 << 20)
    data = b"".join(body)
    assert len(data) == body.length
    assert data[-22 - 20 : -22][:4] == b"PK\x06\x07"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert len(zf.infolist()) == 0x10000


def test_tar_member_over_8gib_uses_pax_size() -> None:
    big = (8 << 30) + 3
    body = tar_body([zero_member("huge ü.dcm", big)])
    it = iter(body)
    head = next(it)
    it.close()  # type: ignore[attr-defined]  # a generator; closing it closes the member
    end_blocks = 1024
    assert body.length == 512 * 3 + big + (-big % 512) + end_blocks
    sparse = SparseFile(head, bytes(end_blocks), body.length)
    with tarfile.open(fileobj=sparse, mode="r:") as tf:
        infos = tf.getmembers()
    assert [(ti.name, ti.size) for ti in infos] == [("huge ü.dcm", big)]


# --- other readers ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed")
def test_gnu_tar_lists_and_extracts(tmp_path: Path) -> None:
    members = tricky_members()
    path = tmp_path / "b.tar"
    path.write_bytes(b"".join(tar_body(members)))
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    out = subprocess.run(["tar", "-tvf", str(path)], capture_output=True, env=env, check=True)
    assert out.stderr == b""
    assert len(out.stdout.splitlines()) == len(members)
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-xf", str(path), "-C", str(dest)], env=env, check=True)
    for name, data in expected(members):
        assert (dest / name).read_bytes() == data


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip not installed")
def test_unzip_tests_archive(tmp_path: Path) -> None:
    path = tmp_path / "b.zip"
    path.write_bytes(b"".join(zip_body(tricky_members())))
    out = subprocess.run(["unzip", "-t", str(path)], capture_output=True, check=False)
    assert out.returncode == 0, out.stdout.decode(errors="replace")
    assert b"No errors detected" in out.stdout


# --- httpx sends it with the exact Content-Length ---------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        n = int(self.headers["Content-Length"])
        self.received.append((dict(self.headers), self.rfile.read(n)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_httpx_streams_body_with_content_length_twice() -> None:
    _Recorder.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        body = tar_body(tricky_members(), chunk_size=4096)
        headers = {"Content-Length": str(body.length), "Content-Type": body.content_type}
        url = f"http://127.0.0.1:{server.server_address[1]}/data/services/import"
        with httpx.Client() as client:
            for _ in range(2):  # the same body object is sent again, as on a retry
                assert client.post(url, content=body, headers=headers).status_code == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert len(_Recorder.received) == 2
    for got_headers, got_body in _Recorder.received:
        assert "Transfer-Encoding" not in got_headers
        assert got_headers["Content-Type"] == "application/x-tar"
        assert read_back("tar", got_body) == expected(tricky_members())


def test_archive_error_reaches_the_httpx_caller_unwrapped() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.received = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        short = ArchiveMember("short.dcm", 10_000, lambda: io.BytesIO(b"x" * 10))
        body = tar_body([mem("a.dcm", b"a" * 5000), short], chunk_size=4096)
        headers = {"Content-Length": str(body.length), "Content-Type": body.content_type}
        url = f"http://127.0.0.1:{server.server_address[1]}/data/services/import"
        with httpx.Client() as client, pytest.raises(ArchiveError, match=r"short\.dcm"):
            client.post(url, content=body, headers=headers)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
