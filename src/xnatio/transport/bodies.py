"""Streaming tar and zip request bodies with an exact length known before the first byte.

The REST uploader sends each batch as one archive straight into an HTTP request body
(``POST /data/services/import``, see docs/xnat-behaviour.md §3.2). XNAT needs a
``Content-Length`` for tar bodies, so the length of the whole archive is computed up front from the
entry names and sizes alone; the bytes are then produced while they are sent, through one reusable
buffer per body, without temporary files.

Formats
-------
tar
    POSIX.1-1988 ustar headers; a POSIX.1-2001 (PAX) extended header carries names that are not
    ASCII or do not fit the ustar name/prefix fields, and sizes of 8 GiB or more.
zip
    STORED entries (PKWARE APPNOTE 6.3) with CRC-32 and sizes in the local header, the UTF-8 name
    flag (bit 11) for non-ASCII names, and zip64 records when a size, offset or entry count does
    not fit the classic fields. There is deliberately **no data descriptor** (flag bit 3): XNAT
    reads zip bodies with ``java.util.zip.ZipInputStream``, which rejects STORED entries that use
    one ("only DEFLATED entries can have EXT descriptor"). Instead the CRC is computed while a
    member is read into the output buffer, behind a gap that its header then fills; a member
    larger than the buffer is read twice (a CRC pass, then the data pass, which must agree).

A member whose bytes on disk no longer match its declared size (or, for large zip members, its CRC)
raises :class:`ArchiveError` mid-stream, so a wrong archive is never completed silently.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

from xnatio.errors import XnatioError

__all__ = [
    "ArchiveBody",
    "ArchiveError",
    "ArchiveMember",
    "make_body",
    "member_from_path",
    "tar_body",
    "zip_body",
]

DEFAULT_CHUNK_SIZE = 1 << 20

_BLOCK = 512
_TAR_END = 2 * _BLOCK
# Largest value in an 11-digit octal ustar field (size, mtime): 8 GiB - 1.
_USTAR_MAX_NUMBER = 8**11 - 1
_ZIP32_MAX = 0xFFFFFFFF
_ZIP16_MAX = 0xFFFF

_LFH = struct.Struct("<IHHHHHIIIHH")
_CDH = struct.Struct("<IHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<IHHHHIIH")
_EOCD64 = struct.Struct("<IQHHIIQQQQ")
_EOCD64_LOCATOR = struct.Struct("<IIQI")
_ZIP64_LOCAL_EXTRA = struct.Struct("<HHQQ")
_ZIP_VERSION = 20
_ZIP64_VERSION = 45
_ZIP_MADE_BY = (3 << 8) | _ZIP64_VERSION  # Unix, so external attributes carry a file mode
_ZIP_UTF8_FLAG = 0x800
_ZIP_EXTERNAL_ATTR = (0o100644 << 16) & 0xFFFFFFFF


class ArchiveError(XnatioError):
    """An archive could not be produced correctly (bad entry name, or a file changed on disk)."""


@dataclass(frozen=True, slots=True)
class ArchiveMember:
    """One entry of an archive body.

    Parameters
    ----------
    name
        Entry name inside the archive (``/``-separated, UTF-8; may be long or non-ASCII).
    size
        The exact number of bytes ``open()`` yields. A mismatch while streaming raises
        :class:`ArchiveError`.
    open
        Opens the member's bytes from the start; called once per iteration of the body (twice for
        zip members larger than the chunk size). The returned object is closed after use.
    mtime
        Modification time in seconds since the epoch, stored in the entry header.
    compressible
        False for bytes that would not shrink (pixel data already compressed): a compressing
        body stores them as they are (:mod:`xnatio.transport.zipstream`).
    source
        Where the bytes come from, as the user knows it (the file's path); errors name it
        rather than the entry name, which the user never chose. Empty: the entry name.
    """

    name: str
    size: int
    open: Callable[[], BinaryIO]
    mtime: int = 0
    compressible: bool = True
    source: str = ""

    @property
    def label(self) -> str:
        """The member as errors name it: its source path, else its entry name."""
        return self.source or self.name


def member_from_path(name: str, path: str | os.PathLike[str]) -> ArchiveMember:
    """Build a member for a file on disk, taking its size and mtime from ``os.stat`` now.

    Parameters
    ----------
    name
        Entry name inside the archive.
    path
        The file to read when the body is streamed.

    Returns
    -------
    ArchiveMember
        A member that opens ``path`` unbuffered (the body reads into its own buffer).
    """
    st = os.stat(path)
    fspath = os.fspath(path)

    def _open() -> BinaryIO:
        return open(fspath, "rb", buffering=0)

    return ArchiveMember(
        name=name, size=st.st_size, open=_open, mtime=int(st.st_mtime), source=fspath
    )


class ArchiveBody:
    """An archive produced on demand: an iterable of ``bytes`` with a known total length.

    Pass it to httpx as ``content=body`` with ``headers={"Content-Length": str(body.length),
    "Content-Type": body.content_type}``. Every iteration streams the whole archive again from the
    start, so a retried request can reuse the same body. Iterations use their own buffer, so two may
    run at once.

    Attributes
    ----------
    content_type
        ``"application/x-tar"`` or ``"application/zip"`` (the types XNAT's import service maps to
        TAR and ZIP).
    length
        The exact number of bytes one full iteration yields.
    member_count
        Number of entries in the archive.
    """

    __slots__ = ("_produce", "content_type", "length", "member_count")

    def __init__(
        self,
        content_type: str,
        length: int,
        member_count: int,
        produce: Callable[[], Iterator[bytes]],
        on_bytes: Callable[[int], None] | None,
    ) -> None:
        self.content_type = content_type
        self.length = length
        self.member_count = member_count
        self._produce = _checked(produce, length, on_bytes)

    def __iter__(self) -> Iterator[bytes]:
        """Stream the archive from its first byte; ``on_bytes`` sees each chunk once consumed."""
        return self._produce()

    def __repr__(self) -> str:
        return (
            f"ArchiveBody(content_type={self.content_type!r}, length={self.length}, "
            f"members={self.member_count})"
        )


def _checked(
    produce: Callable[[], Iterator[bytes]],
    length: int | None,
    on_bytes: Callable[[int], None] | None,
) -> Callable[[], Iterator[bytes]]:
    # One wrapper keeps the progress callback and the final length check out of the format code.
    def run() -> Iterator[bytes]:
        sent = 0
        chunks = produce()
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            except OSError as exc:  # a read failed mid-file: name the problem, keep one type
                raise ArchiveError(f"reading a file for the archive failed: {exc}") from exc
            sent += len(chunk)
            yield chunk
            if on_bytes is not None:
                on_bytes(len(chunk))
        if length is not None and sent != length:  # pragma: no cover - a bug in the lengths
            raise ArchiveError(f"archive produced {sent} bytes but {length} were announced")

    return run


class _Writer:
    """A fixed output buffer; full chunks leave as ``bytes`` copies so the buffer can be reused."""

    __slots__ = ("buf", "capacity", "pos", "view")

    def __init__(self, capacity: int) -> None:
        self.buf = bytearray(capacity)
        self.view = memoryview(self.buf)
        self.capacity = capacity
        self.pos = 0

    def take(self) -> bytes:
        chunk = bytes(self.view[: self.pos])
        self.pos = 0
        return chunk

    def put(self, data: bytes) -> Iterator[bytes]:
        off, n = 0, len(data)
        while off < n:
            if self.pos == self.capacity:
                yield self.take()
            k = min(self.capacity - self.pos, n - off)
            self.view[self.pos : self.pos + k] = data[off : off + k]
            self.pos += k
            off += k

    def zeros(self, n: int) -> Iterator[bytes]:
        while n:
            if self.pos == self.capacity:
                yield self.take()
            k = min(self.capacity - self.pos, n)
            self.view[self.pos : self.pos + k] = bytes(k)
            self.pos += k
            n -= k

    def copy(
        self, f: BinaryIO, size: int, name: str, crc: int | None
    ) -> Generator[bytes, None, int | None]:
        """Copy exactly ``size`` bytes of ``f``; return the CRC-32 via ``StopIteration``."""
        remaining = size
        while remaining:
            if self.pos == self.capacity:
                yield self.take()
            k = min(self.capacity - self.pos, remaining)
            region = self.view[self.pos : self.pos + k]
            _fill(f, region, name, size)
            if crc is not None:
                crc = zlib.crc32(region, crc)
            self.pos += k
            remaining -= k
        _expect_eof(f, name, size)
        return crc


def _open(member: ArchiveMember) -> BinaryIO:
    try:
        return member.open()
    except OSError as exc:
        raise ArchiveError(f"{member.label}: cannot open: {exc}") from exc


def _fill(f: BinaryIO, region: memoryview, name: str, size: int) -> None:
    got, n = 0, len(region)
    while got < n:
        r = f.readinto(region[got:] if got else region)  # type: ignore[attr-defined]
        if not r:
            raise ArchiveError(
                f"{name}: file ended before its expected {size} bytes; "
                "it changed after it was listed - scan the source again"
            )
        got += r


def _expect_eof(f: BinaryIO, name: str, size: int) -> None:
    if f.read(1):
        raise ArchiveError(
            f"{name}: file is longer than its expected {size} bytes; "
            "it changed after it was listed - scan the source again"
        )


def _encode_name(name: str) -> bytes:
    if not name or "\x00" in name:
        raise ArchiveError(f"invalid archive entry name {name!r}: empty or contains NUL")
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ArchiveError(f"archive entry name {name!r} is not valid Unicode: {exc}") from None


def _check_size(member: ArchiveMember) -> None:
    if member.size < 0:
        raise ArchiveError(f"{member.label}: negative size {member.size}")


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < _BLOCK:
        raise ValueError(f"chunk_size must be at least {_BLOCK}, got {chunk_size}")


# ---------------------------------------------------------------------------------------------
# tar


def _pad512(n: int) -> int:
    return -n % _BLOCK


def _octal(value: int, width: int) -> bytes:
    # width includes the terminating NUL
    return b"%0*o\x00" % (width - 1, value)


def _ustar_split(name_b: bytes) -> tuple[bytes, bytes] | None:
    """Return (prefix, name) if ``name_b`` fits the ustar fields, else None."""
    if len(name_b) <= 100:
        return b"", name_b
    if len(name_b) > 256:
        return None
    # Split at the last '/' that leaves a prefix of at most 155 bytes and a name of at most 100.
    cut = name_b.rfind(b"/", 0, 156)
    while cut > 0:
        if len(name_b) - cut - 1 <= 100:
            return name_b[:cut], name_b[cut + 1 :]
        cut = name_b.rfind(b"/", 0, cut)
    return None


def _ustar_header(
    name: bytes, prefix: bytes, size: int, *, mtime: int, typeflag: bytes, big_size: bool = False
) -> bytes:
    # Sizes past 8 GiB use GNU base-256 for readers that skip PAX; the PAX "size" is authoritative.
    size_field = b"\x80" + size.to_bytes(11, "big") if big_size else _octal(size, 12)
    header = b"".join(
        (
            name.ljust(100, b"\x00"),
            b"0000644\x00",
            b"0000000\x00",
            b"0000000\x00",
            size_field,
            _octal(mtime, 12),
            b" " * 8,
            typeflag,
            b"\x00" * 100,  # linkname
            b"ustar\x0000",
            b"\x00" * 64,  # uname, gname
            b"0000000\x00" * 2,  # devmajor, devminor
            prefix.ljust(155, b"\x00"),
            b"\x00" * 12,
        )
    )
    chksum = b"%06o\x00 " % sum(header)
    return header[:148] + chksum + header[156:]


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode("ascii") + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode("ascii") + body


def _ascii_fallback(name: str) -> bytes:
    safe = "".join(c if " " <= c < "\x7f" else "_" for c in name)
    return safe.encode("ascii")[-100:]


def _tar_member_header(member: ArchiveMember) -> bytes:
    """Header bytes (PAX extended header if needed, then ustar) that precede the member's data."""
    name_b = _encode_name(member.name)
    mtime = min(max(member.mtime, 0), _USTAR_MAX_NUMBER)
    big_size = member.size > _USTAR_MAX_NUMBER
    split = _ustar_split(name_b) if name_b.isascii() else None
    records = []
    if split is None:
        records.append(_pax_record("path", name_b))
    if big_size:
        records.append(_pax_record("size", str(member.size).encode("ascii")))
    if not records:
        prefix, short = split  # type: ignore[misc]  # split is not None when no path record
        return _ustar_header(short, prefix, member.size, mtime=mtime, typeflag=b"0")
    pax_data = b"".join(records)
    fallback = _ascii_fallback(member.name) if split is None else split[1]
    prefix = b"" if split is None else split[0]
    pax_name = (b"PaxHeader/" + fallback)[:100]
    return b"".join(
        (
            _ustar_header(pax_name, b"", len(pax_data), mtime=mtime, typeflag=b"x"),
            pax_data,
            bytes(_pad512(len(pax_data))),
            _ustar_header(
                fallback, prefix, member.size, mtime=mtime, typeflag=b"0", big_size=big_size
            ),
        )
    )


def tar_body(
    members: Sequence[ArchiveMember],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_bytes: Callable[[int], None] | None = None,
) -> ArchiveBody:
    """Build a streaming POSIX tar (ustar + PAX) body for ``members``.

    Parameters
    ----------
    members
        The entries, in archive order.
    chunk_size
        Size of the output buffer and of the chunks yielded (the last chunk may be shorter).
    on_bytes
        Called with the size of each chunk after the consumer has taken it (for progress). A
        repeated iteration reports its bytes again.

    Returns
    -------
    ArchiveBody
        Content type ``application/x-tar``; ``length`` is exact and includes the two end blocks.

    Raises
    ------
    ArchiveError
        An entry name is empty, contains NUL or is not encodable; a size is negative. While
        streaming: a file's length differs from its member's ``size``.
    """
    _check_chunk_size(chunk_size)
    members = list(members)
    length = _TAR_END
    for m in members:
        _check_size(m)
        # Headers are rebuilt while streaming rather than kept, so memory stays flat per body.
        length += len(_tar_member_header(m)) + m.size + _pad512(m.size)

    def produce() -> Iterator[bytes]:
        w = _Writer(chunk_size)
        for m in members:
            yield from w.put(_tar_member_header(m))
            with _open(m) as f:
                yield from w.copy(f, m.size, m.label, None)
            yield from w.zeros(_pad512(m.size))
        yield from w.zeros(_TAR_END)
        if w.pos:
            yield w.take()

    return ArchiveBody("application/x-tar", length, len(members), produce, on_bytes)


# ---------------------------------------------------------------------------------------------
# zip


@dataclass(frozen=True, slots=True)
class _ZipEntry:
    member: ArchiveMember
    name: bytes
    flags: int
    offset: int
    zip64_local: bool
    dos_time: int
    dos_date: int

    @property
    def header_length(self) -> int:
        return _LFH.size + len(self.name) + (_ZIP64_LOCAL_EXTRA.size if self.zip64_local else 0)

    def local_header(self, crc: int) -> bytes:
        size = self.member.size
        if self.zip64_local:
            extra = _ZIP64_LOCAL_EXTRA.pack(0x0001, 16, size, size)
            stored_size, version = _ZIP32_MAX, _ZIP64_VERSION
        else:
            extra, stored_size, version = b"", size, _ZIP_VERSION
        fixed = _LFH.pack(
            0x04034B50,
            version,
            self.flags,
            0,  # STORED
            self.dos_time,
            self.dos_date,
            crc,
            stored_size,
            stored_size,
            len(self.name),
            len(extra),
        )
        return fixed + self.name + extra

    def central_extra(self, force: bool) -> tuple[bytes, bool, bool]:
        """Return the zip64 extra field and whether size/offset overflow into it."""
        big_size = force or self.member.size >= _ZIP32_MAX
        big_offset = force or self.offset >= _ZIP32_MAX
        values = []
        if big_size:
            values += [self.member.size, self.member.size]
        if big_offset:
            values.append(self.offset)
        if not values:
            return b"", False, False
        extra = struct.pack(f"<HH{len(values)}Q", 0x0001, 8 * len(values), *values)
        return extra, big_size, big_offset

    def central_header(self, crc: int, force: bool) -> bytes:
        extra, big_size, big_offset = self.central_extra(force)
        size = _ZIP32_MAX if big_size else self.member.size
        fixed = _CDH.pack(
            0x02014B50,
            _ZIP_MADE_BY,
            _ZIP64_VERSION if extra else _ZIP_VERSION,
            self.flags,
            0,
            self.dos_time,
            self.dos_date,
            crc,
            size,
            size,
            len(self.name),
            len(extra),
            0,  # comment length
            0,  # disk number start
            0,  # internal attributes
            _ZIP_EXTERNAL_ATTR,
            _ZIP32_MAX if big_offset else self.offset,
        )
        return fixed + self.name + extra


def _dos_datetime(mtime: int) -> tuple[int, int]:
    # DOS timestamps cover 1980-2107 with 2-second resolution; UTC keeps bodies reproducible.
    t = time.gmtime(min(max(mtime, 315532800), 4354819198))
    dos_time = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    dos_date = ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    return dos_time, dos_date


def _zip_end_records(count: int, cd_offset: int, cd_size: int, force: bool) -> bytes:
    zip64 = force or count >= _ZIP16_MAX or cd_offset >= _ZIP32_MAX or cd_size >= _ZIP32_MAX
    out = b""
    if zip64:
        eocd64_offset = cd_offset + cd_size
        out += _EOCD64.pack(
            0x06064B50,
            _EOCD64.size - 12,
            _ZIP_MADE_BY,
            _ZIP64_VERSION,
            0,
            0,
            count,
            count,
            cd_size,
            cd_offset,
        )
        out += _EOCD64_LOCATOR.pack(0x07064B50, 0, eocd64_offset, 1)
    # Fields that overflow (or all of them, when forced) hold the "see zip64 record" marker.
    count16 = _ZIP16_MAX if force or count >= _ZIP16_MAX else count
    out += _EOCD.pack(
        0x06054B50,
        0,
        0,
        count16,
        count16,
        _ZIP32_MAX if force or cd_size >= _ZIP32_MAX else cd_size,
        _ZIP32_MAX if force or cd_offset >= _ZIP32_MAX else cd_offset,
        0,
    )
    return out


def zip_body(
    members: Sequence[ArchiveMember],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_bytes: Callable[[int], None] | None = None,
    force_zip64: bool = False,
) -> ArchiveBody:
    """Build a streaming zip body of STORED entries for ``members``.

    Parameters
    ----------
    members, on_bytes
        As for :func:`tar_body`.
    chunk_size
        Size of the output buffer and of the chunks yielded. Members up to this size (with their
        header) are read once; larger members are read twice (CRC pass, then data pass).
    force_zip64
        Write zip64 extra fields and end records even when nothing needs them (for tests and for
        readers that want them). They are written automatically when needed.

    Returns
    -------
    ArchiveBody
        Content type ``application/zip``; ``length`` is exact.

    Raises
    ------
    ArchiveError
        An entry name is empty, contains NUL, is not encodable or is longer than 65,535 bytes; a
        size is negative. While streaming: a file's length differs from its member's ``size``, or a
        large file's content changed between the CRC pass and the data pass.
    """
    _check_chunk_size(chunk_size)
    entries: list[_ZipEntry] = []
    offset = 0
    for m in members:
        _check_size(m)
        name_b = _encode_name(m.name)
        if len(name_b) > _ZIP16_MAX:
            raise ArchiveError(f"archive entry name is too long for zip ({len(name_b)} bytes)")
        dos_time, dos_date = _dos_datetime(m.mtime)
        entry = _ZipEntry(
            member=m,
            name=name_b,
            flags=0 if name_b.isascii() else _ZIP_UTF8_FLAG,
            offset=offset,
            zip64_local=force_zip64 or m.size >= _ZIP32_MAX,
            dos_time=dos_time,
            dos_date=dos_date,
        )
        entries.append(entry)
        offset += entry.header_length + m.size
    cd_offset = offset
    cd_size = sum(_CDH.size + len(e.name) + len(e.central_extra(force_zip64)[0]) for e in entries)
    length = (
        cd_offset + cd_size + len(_zip_end_records(len(entries), cd_offset, cd_size, force_zip64))
    )

    def produce() -> Iterator[bytes]:
        w = _Writer(chunk_size)
        crcs: list[int] = []
        for e in entries:
            crc = yield from _stored_entry(w, e.member, e.header_length, e.local_header)
            crcs.append(crc)
        for e, crc in zip(entries, crcs, strict=True):
            yield from w.put(e.central_header(crc, force_zip64))
        yield from w.put(_zip_end_records(len(entries), cd_offset, cd_size, force_zip64))
        if w.pos:
            yield w.take()

    return ArchiveBody("application/zip", length, len(entries), produce, on_bytes)


def _stored_entry(
    w: _Writer, m: ArchiveMember, hlen: int, local_header: Callable[[int], bytes]
) -> Generator[bytes, None, int]:
    """Write one stored (uncompressed) zip entry: its local header of ``hlen`` bytes, whose CRC
    is known only after the data, then the data. Returns the CRC. Used by the zip bodies of known
    length and by the streaming zip."""
    if hlen + m.size > w.capacity - w.pos and w.pos:
        yield w.take()
    if hlen + m.size <= w.capacity - w.pos:
        # Read straight into the buffer behind a hole for the header, then fill the hole.
        start = w.pos
        data = w.view[start + hlen : start + hlen + m.size]
        with _open(m) as f:
            _fill(f, data, m.label, m.size)
            _expect_eof(f, m.label, m.size)
        crc = zlib.crc32(data)
        w.view[start : start + hlen] = local_header(crc)
        w.pos = start + hlen + m.size
        return crc
    # Too big for one chunk: the buffer is empty here, use it for a CRC pass first.
    crc = _crc_pass(m, w.view)
    yield from w.put(local_header(crc))
    with _open(m) as f:
        again = yield from w.copy(f, m.size, m.label, 0)
    if again != crc:
        raise ArchiveError(f"{m.label}: changed while it was being sent - scan the source again")
    return crc


def _crc_pass(m: ArchiveMember, scratch: memoryview) -> int:
    crc, total = 0, 0
    with _open(m) as f:
        while True:
            r = f.readinto(scratch)  # type: ignore[attr-defined]
            if not r:
                break
            total += r
            if total > m.size:
                break
            crc = zlib.crc32(scratch[:r], crc)
    if total != m.size:
        raise ArchiveError(
            f"{m.label}: file has {total} bytes, expected {m.size}; "
            "it changed after it was listed - scan the source again"
        )
    return crc


def make_body(
    fmt: Literal["tar", "zip"],
    members: Sequence[ArchiveMember],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_bytes: Callable[[int], None] | None = None,
) -> ArchiveBody:
    """:func:`tar_body` or :func:`zip_body` (``fmt``), with the same other arguments."""
    if fmt == "tar":
        return tar_body(members, chunk_size=chunk_size, on_bytes=on_bytes)
    if fmt == "zip":
        return zip_body(members, chunk_size=chunk_size, on_bytes=on_bytes)
    raise ValueError(f"unknown archive format {fmt!r}; use 'tar' or 'zip'")
