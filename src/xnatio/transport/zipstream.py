"""A zip request body of unknown length, sent chunked, whose entries may be DEFLATE-compressed.

This is XNAT's "streaming compressed upload": ``application/zip`` is the one body type its import
service accepts without a ``Content-Length`` (docs/xnat-behaviour.md §3.2, §8 item 6), and it
reads such bodies with ``java.util.zip.ZipInputStream``. Every detail below is what that reader
needs (PKWARE APPNOTE 6.3 for the format):

- **DEFLATED entries** (method 8, raw deflate) set flag bit 3 and are followed by a data
  descriptor (signature ``PK\\x07\\x08``, CRC-32, compressed and uncompressed size), because their
  compressed size is known only after the last byte. The local header holds zeros for CRC and
  sizes; ``ZipInputStream`` ignores them when bit 3 is set, inflates until the deflate stream's
  last block, then checks the descriptor against what it inflated. It reads 8-byte descriptor
  sizes only when more than 0xFFFFFFFF bytes were read or written, so members of 2 GiB or more
  are never deflated here: they are STORED, and every descriptor has 4-byte sizes.
- **STORED entries** (method 0) must *not* have a data descriptor (``ZipInputStream`` refuses
  "only DEFLATED entries can have EXT descriptor"): their CRC and sizes go into the local header,
  read behind a gap the header then fills, as in :func:`xnatio.transport.bodies.zip_body`.
  Members that would not shrink (already compressed pixel data) are stored, and so is every
  member when the caller's ``deflate`` callback says so: the method is chosen entry by entry as
  the body is produced, which is how ``--compress auto`` switches during an upload.
- Names are UTF-8 with flag bit 11 when not ASCII; no encryption, no extra fields in local
  headers except the zip64 one of a stored member of 4 GiB or more.
- The central directory and end records follow the last entry (``ZipInputStream`` stops at the
  first central header; other readers, such as Python's :mod:`zipfile`, use the directory), with
  zip64 fields and end records where a size, offset or count needs them.

The body is deterministic: the same members, choices and level give the same bytes, so a retried
request re-sends exactly what the first attempt sent up to where it stopped.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from xnatio.transport.bodies import (
    ArchiveError,
    ArchiveMember,
    _check_chunk_size,
    _check_size,
    _checked,
    _dos_datetime,
    _encode_name,
    _expect_eof,
    _fill,
    _open,
    _stored_entry,
    _Writer,
    _zip_end_records,
    _ZipEntry,
)

__all__ = ["DEFLATE_MAX_SIZE", "StreamStats", "StreamingBody", "streaming_zip_body"]

#: Members of this size or more are stored, never deflated (see the module notes).
DEFLATE_MAX_SIZE = 1 << 31

# Small chunks keep what one connection has produced but not yet sent small (a fraction of a
# second on a slow link), so per-connection measurements and a change of method act quickly.
STREAM_CHUNK_SIZE = 1 << 16

_ZIP32_MAX = 0xFFFFFFFF
_ZIP16_MAX = 0xFFFF
_LFH = struct.Struct("<IHHHHHIIIHH")
_CDH = struct.Struct("<IHHHHHHIIIHHHHHII")
_DESCRIPTOR = struct.Struct("<IIII")
_DESCRIPTOR_SIG = 0x08074B50
_FLAG_DESCRIPTOR = 0x08
_FLAG_UTF8 = 0x800
_DEFLATED = 8
_VERSION = 20
_ZIP64_VERSION = 45
_MADE_BY = (3 << 8) | _ZIP64_VERSION
_EXTERNAL_ATTR = (0o100644 << 16) & 0xFFFFFFFF
_READ_SIZE = 1 << 16


@dataclass
class StreamStats:
    """What one iteration of a streaming body has done so far (read by a monitoring thread).

    Attributes
    ----------
    payload
        Member bytes read from the source files.
    produced
        Body bytes produced (headers and compressed data included), whether or not the consumer
        has taken them yet.
    deflate_in, deflate_out
        Member bytes that went through the compressor, and what came out.
    deflate_cpu
        Thread CPU seconds spent compressing.
    deflated, stored
        Entries written with each method.
    """

    payload: int = 0
    produced: int = 0
    deflate_in: int = 0
    deflate_out: int = 0
    deflate_cpu: float = 0.0
    deflated: int = 0
    stored: int = 0

    @property
    def ratio(self) -> float:
        """Payload bytes per body byte produced so far (1.0 before anything is produced)."""
        return self.payload / self.produced if self.produced else 1.0


class StreamingBody:
    """A zip body produced on demand whose length is known only at its end: send it chunked.

    Every iteration streams the whole archive again from the start (a retried request reuses
    the body); iterations use their own buffers.

    Attributes
    ----------
    content_type
        ``"application/zip"``.
    length
        Always None.
    member_count
        Number of entries.
    """

    __slots__ = ("_produce", "content_type", "length", "member_count")

    def __init__(
        self,
        member_count: int,
        produce: Callable[[], Iterator[bytes]],
        on_bytes: Callable[[int], None] | None,
    ) -> None:
        self.content_type = "application/zip"
        self.length: int | None = None
        self.member_count = member_count
        self._produce = _checked(produce, None, on_bytes)

    def __iter__(self) -> Iterator[bytes]:
        """Stream the archive from its first byte."""
        return self._produce()

    def __repr__(self) -> str:
        return f"StreamingBody(content_type='application/zip', members={self.member_count})"


@dataclass(slots=True)
class _Written:
    """What the central directory needs to know about an entry once it is written."""

    name: bytes
    flags: int
    method: int
    dos_time: int
    dos_date: int
    crc: int
    csize: int
    size: int
    offset: int

    def central_header(self) -> bytes:
        values: list[int] = []
        if self.size >= _ZIP32_MAX or self.csize >= _ZIP32_MAX:
            values += [self.size, self.csize]
        if self.offset >= _ZIP32_MAX:
            values.append(self.offset)
        extra = b""
        if values:
            extra = struct.pack(f"<HH{len(values)}Q", 0x0001, 8 * len(values), *values)
        big_sizes = bool(values) and (self.size >= _ZIP32_MAX or self.csize >= _ZIP32_MAX)
        fixed = _CDH.pack(
            0x02014B50,
            _MADE_BY,
            _ZIP64_VERSION if extra else _VERSION,
            self.flags,
            self.method,
            self.dos_time,
            self.dos_date,
            self.crc,
            _ZIP32_MAX if big_sizes else self.csize,
            _ZIP32_MAX if big_sizes else self.size,
            len(self.name),
            len(extra),
            0,
            0,
            0,
            _EXTERNAL_ATTR,
            _ZIP32_MAX if self.offset >= _ZIP32_MAX else self.offset,
        )
        return fixed + self.name + extra


@dataclass
class _Producer:
    """Writes entries into a :class:`_Writer`, counting every byte for offsets and stats."""

    w: _Writer
    stats: StreamStats
    level: int
    written: list[_Written] = field(default_factory=list)
    offset: int = 0
    scratch: memoryview = field(default_factory=lambda: memoryview(bytearray(_READ_SIZE)))

    def put(self, data: bytes) -> Iterator[bytes]:
        self.offset += len(data)
        self.stats.produced += len(data)
        yield from self.w.put(data)

    def deflated(self, m: ArchiveMember, name: bytes, flags: int) -> Iterator[bytes]:
        dos_time, dos_date = _dos_datetime(m.mtime)
        start = self.offset
        flags |= _FLAG_DESCRIPTOR
        # CRC and sizes are zero here: with flag bit 3 readers take them from the descriptor.
        header = _LFH.pack(
            0x04034B50, _VERSION, flags, _DEFLATED, dos_time, dos_date, 0, 0, 0, len(name), 0
        )
        yield from self.put(header + name)
        stats = self.stats
        comp = zlib.compressobj(self.level, zlib.DEFLATED, -15)
        crc = csize = size = 0
        view = self.scratch
        with _open(m) as f:
            while size < m.size:
                region = view[: min(len(view), m.size - size)]
                _fill(f, region, m.label, m.size)
                crc = zlib.crc32(region, crc)
                size += len(region)
                stats.payload += len(region)
                t = time.thread_time()
                out = comp.compress(region)
                stats.deflate_cpu += time.thread_time() - t
                if out:
                    csize += len(out)
                    yield from self.put(out)
            _expect_eof(f, m.label, m.size)
        t = time.thread_time()
        out = comp.flush()
        stats.deflate_cpu += time.thread_time() - t
        csize += len(out)
        stats.deflate_in += size
        stats.deflate_out += csize
        stats.deflated += 1
        yield from self.put(out)
        yield from self.put(_DESCRIPTOR.pack(_DESCRIPTOR_SIG, crc, csize, size))
        self.written.append(
            _Written(name, flags, _DEFLATED, dos_time, dos_date, crc, csize, size, start)
        )

    def stored(self, m: ArchiveMember, name: bytes, flags: int) -> Iterator[bytes]:
        dos_time, dos_date = _dos_datetime(m.mtime)
        entry = _ZipEntry(m, name, flags, self.offset, m.size >= _ZIP32_MAX, dos_time, dos_date)
        hlen = entry.header_length
        crc = yield from _stored_entry(self.w, m, hlen, entry.local_header)
        self.offset += hlen + m.size
        self.stats.produced += hlen + m.size
        self.stats.payload += m.size
        self.stats.stored += 1
        self.written.append(
            _Written(name, flags, 0, dos_time, dos_date, crc, m.size, m.size, entry.offset)
        )

    def finish(self) -> Iterator[bytes]:
        cd_offset = self.offset
        for e in self.written:
            yield from self.put(e.central_header())
        cd_size = self.offset - cd_offset
        yield from self.put(_zip_end_records(len(self.written), cd_offset, cd_size, False))
        if self.w.pos:
            yield self.w.take()


def streaming_zip_body(
    members: Sequence[ArchiveMember],
    *,
    deflate: Callable[[ArchiveMember], bool],
    level: int = 1,
    chunk_size: int = STREAM_CHUNK_SIZE,
    on_bytes: Callable[[int], None] | None = None,
    stats: Callable[[], StreamStats] | None = None,
) -> StreamingBody:
    """Build a zip body of unknown length whose entries are deflated or stored as they come.

    Parameters
    ----------
    members
        The entries, in archive order.
    deflate
        Called as each entry starts: True deflates it, False stores it. Members with
        ``compressible=False`` and members of :data:`DEFLATE_MAX_SIZE` or more are stored
        without asking.
    level
        zlib compression level (1 is the fastest; see docs/parallel-uploads.md for measurements).
    chunk_size
        Size of the output buffer and of the chunks yielded.
    on_bytes
        Called with the size of each chunk after the consumer has taken it (wire bytes).
    stats
        Called once per iteration for the :class:`StreamStats` that iteration updates.

    Returns
    -------
    StreamingBody
        Content type ``application/zip``, ``length`` None: send it chunked, without a
        Content-Length.

    Raises
    ------
    ArchiveError
        An entry name is empty, contains NUL, is not encodable or is longer than 65,535 bytes; a
        size is negative. While streaming: a file's length differs from its member's ``size``.
    """
    _check_chunk_size(chunk_size)
    if not 0 <= level <= 9:
        raise ValueError(f"compression level must be 0-9, not {level}")
    names: list[tuple[ArchiveMember, bytes, int]] = []
    for m in members:
        _check_size(m)
        name = _encode_name(m.name)
        if len(name) > _ZIP16_MAX:
            raise ArchiveError(f"archive entry name is too long for zip ({len(name)} bytes)")
        names.append((m, name, 0 if name.isascii() else _FLAG_UTF8))

    def produce() -> Iterator[bytes]:
        p = _Producer(_Writer(chunk_size), stats() if stats is not None else StreamStats(), level)
        for m, name, flags in names:
            if m.compressible and m.size < DEFLATE_MAX_SIZE and deflate(m):
                yield from p.deflated(m, name, flags)
            else:
                yield from p.stored(m, name, flags)
        yield from p.finish()

    return StreamingBody(len(names), produce, on_bytes)
