"""Reading request bodies for the sandbox: raw and chunked bodies, multipart forms, archives.

Bodies are read in large chunks straight from the socket. Tar and tar.gz bodies are unpacked as a
stream (``tarfile`` modes ``r|`` and ``r|gz``), so their entries reach the store while the client
is still sending; zip needs random access and is spooled to a temporary file first.
"""

from __future__ import annotations

import io
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, cast

__all__ = [
    "ArchiveEntry",
    "BodyReader",
    "ConnectionLostError",
    "FormFile",
    "MultipartForm",
    "UploadError",
    "archive_format",
    "iter_archive",
    "read_multipart",
    "single_file",
]

CHUNK = 1 << 20  # read and copy size; large reads keep the per-call overhead small


class UploadError(Exception):
    """A request body that the import service refuses (HTTP ``status``, message in ``<h3>``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ConnectionLostError(Exception):
    """The body ended early: the peer went away, or a fault dropped the connection."""


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...
    def readline(self, size: int = ..., /) -> bytes: ...


class _Sink(Protocol):
    def write(self, data: bytes | bytearray, /) -> int: ...


class BodyReader:
    """A file-like view of one request body, with a byte count and an optional drop point.

    Parameters
    ----------
    rfile
        The connection's buffered input.
    length
        The Content-Length, or None for a chunked body.
    drop_after
        Raise :class:`ConnectionLostError` once this many body bytes were read (a fault).
    """

    def __init__(self, rfile: _Readable, length: int | None, drop_after: int | None = None) -> None:
        self._rfile = rfile
        self.length = length
        self.consumed = 0
        self.drop_after = drop_after
        self.dropped = False
        self.lost = False
        self._chunk_left = 0
        self._eof = length == 0

    def close(self) -> None:
        """Nothing to release: the connection outlives the body."""

    def readable(self) -> bool:
        """Always true (file-like protocol)."""
        return True

    @property
    def at_eof(self) -> bool:
        """Whether the whole body has been read."""
        return self._eof

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` body bytes (all that is left if negative); b"" at the end."""
        if self._eof:
            return b""
        if size < 0:
            parts = []
            while not self.at_eof:
                parts.append(self.read(CHUNK))
            return b"".join(parts)
        if self.drop_after is not None:
            left = self.drop_after - self.consumed
            if left <= 0:
                self.dropped = True
                raise ConnectionLostError("connection dropped by fault injection")
            size = min(size, left)
        data = self._read_chunked(size) if self.length is None else self._read_plain(size)
        self.consumed += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read into ``buffer``; returns the byte count."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self, limit: int | None = None) -> bool:
        """Read and discard the rest of the body; False if more than ``limit`` bytes were left."""
        while not self._eof:
            if limit is not None and self.consumed > limit:
                return False
            self.read(CHUNK)
        return True

    def _read_plain(self, size: int) -> bytes:
        assert self.length is not None
        size = min(size, self.length - self.consumed)
        data = self._rfile.read(size) if size > 0 else b""
        if len(data) < size:
            self.lost = True
            raise ConnectionLostError("the client closed the connection before the body ended")
        if self.consumed + len(data) >= self.length:
            self._eof = True
        return data

    def _read_chunked(self, size: int) -> bytes:
        if self._chunk_left == 0:
            line = self._rfile.readline(1024)
            if not line.endswith(b"\n"):
                self.lost = True
                raise ConnectionLostError("chunked body ended early")
            try:
                self._chunk_left = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise UploadError("malformed chunked transfer encoding") from None
            if self._chunk_left == 0:
                while self._rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self._eof = True
                return b""
        data = self._rfile.read(min(size, self._chunk_left))
        if not data:
            self.lost = True
            raise ConnectionLostError("chunked body ended early")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(16)  # the CRLF that closes the chunk
        return data


# -- multipart --------------------------------------------------------------------------------


@dataclass
class FormFile:
    """A file part of a multipart form, spooled to ``path``."""

    filename: str
    path: Path
    content_type: str


@dataclass
class MultipartForm:
    """Fields and file parts of a ``multipart/form-data`` body."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[FormFile] = field(default_factory=list)


def single_file(form: MultipartForm) -> FormFile:
    """The one file part of a form where XNAT takes exactly one (import, configuration).

    Raises
    ------
    UploadError
        "Unable to identify upload format." without a file part, "Importer is limited to one
        uploaded resource at a time." with several.
    """
    if not form.files:
        raise UploadError("Unable to identify upload format.")
    if len(form.files) > 1:
        raise UploadError("Importer is limited to one uploaded resource at a time.")
    return form.files[0]


_DISPOSITION_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _parse_disposition(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, raw in _DISPOSITION_PARAM.findall(value):
        text = raw.strip()
        if text.startswith('"') and text.endswith('"'):
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        params[key.lower()] = text
    return params


class _Scanner:
    """Reads a body and splits it at a delimiter without holding more than a chunk in memory."""

    def __init__(self, reader: BodyReader) -> None:
        self._reader = reader
        self._buf = bytearray()
        self._done = False

    def _fill(self) -> bool:
        if self._done:
            return False
        data = self._reader.read(CHUNK)
        if not data:
            self._done = True
            return False
        self._buf += data
        return True

    def read_until(self, delim: bytes, sink: _Sink | None, limit: int | None = None) -> bool:
        """Copy bytes up to ``delim`` into ``sink`` and consume the delimiter; False if absent."""
        written = 0
        while True:
            pos = self._buf.find(delim)
            if pos >= 0:
                if sink is not None:
                    sink.write(self._buf[:pos])
                del self._buf[: pos + len(delim)]
                return True
            keep = len(delim) - 1
            if len(self._buf) > keep:
                cut = len(self._buf) - keep
                if sink is not None:
                    sink.write(self._buf[:cut])
                written += cut
                del self._buf[:cut]
                if limit is not None and written > limit:
                    raise UploadError("multipart header or field too large")
            if not self._fill():
                return False

    def peek(self, n: int) -> bytes:
        while len(self._buf) < n and self._fill():
            pass
        return bytes(self._buf[:n])

    def skip(self, n: int) -> None:
        del self._buf[:n]


def read_multipart(reader: BodyReader, content_type: str, spool_dir: Path) -> MultipartForm:
    """Parse a ``multipart/form-data`` body; file parts are written to files in ``spool_dir``.

    The caller owns the spooled files and must delete them.

    Raises
    ------
    UploadError
        On a malformed body or a file part without a file name.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise UploadError("multipart body without a boundary")
    boundary = match.group(1).encode("latin-1")
    scanner = _Scanner(reader)
    form = MultipartForm()
    try:
        if not scanner.read_until(b"--" + boundary, None):
            raise UploadError("multipart body without any part")
        delim = b"\r\n--" + boundary
        while True:
            if scanner.peek(2) == b"--":
                break
            if not scanner.read_until(b"\r\n", None, limit=1024):
                raise UploadError("multipart body ended early")
            head = _BytesSink()
            if not scanner.read_until(b"\r\n\r\n", head, limit=16384):
                raise UploadError("multipart body ended early")
            headers = _parse_part_headers(bytes(head.data))
            disposition = _parse_disposition(headers.get("content-disposition", ""))
            name = disposition.get("name", "")
            if "filename" in disposition:
                filename = disposition["filename"]
                if not filename:
                    raise UploadError(
                        "multi-part form posts must contain the file name of the uploaded file."
                    )
                handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open across parts
                    dir=spool_dir, prefix="part-", delete=False
                )
                entry = FormFile(filename, Path(handle.name), headers.get("content-type", ""))
                form.files.append(entry)
                with handle:
                    complete = scanner.read_until(delim, handle)
            else:
                value = _BytesSink()
                complete = scanner.read_until(delim, value, limit=1 << 20)
                form.fields.setdefault(name, []).append(value.data.decode("utf-8", "replace"))
            if not complete:
                raise UploadError("multipart body ended early")
        reader.drain()
    except BaseException:
        for entry in form.files:
            entry.path.unlink(missing_ok=True)
        raise
    return form


class _BytesSink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes | bytearray) -> int:
        self.data += data
        return len(data)


def _parse_part_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return headers


# -- archives ---------------------------------------------------------------------------------


def archive_format(name: str) -> str:
    """XNAT's archive format for a file name: TAR, TGZ, ZIP, GZ or UNKNOWN (case-sensitive)."""
    if name.endswith((".tar", ".xar")):
        return "TAR"
    if name.endswith((".tgz", ".tar.gz")):
        return "TGZ"
    if name.endswith((".zip", ".zar")):
        return "ZIP"
    if name.endswith(".gz"):
        return "GZ"
    return "UNKNOWN"


@dataclass
class ArchiveEntry:
    """One file inside an upload: its path in the archive and a stream of its bytes.

    ``error`` is set (and ``stream`` is None) for an entry that is refused: links and device
    files. A path with ``..`` or an absolute path is not refused: the name only ever names a
    stored file, once cleaned (docs/xnat-behaviour.md §4.3), as in XNAT.
    """

    name: str
    stream: IO[bytes] | None
    error: str | None = None


ARCHIVE_READ_ERROR = "unable to read data from file"


def _refusal(name: str, *, link: bool, regular: bool) -> str | None:
    """Why an archive entry is refused (a link, not a regular file), or None."""
    if link:
        return "link entries are not accepted"
    if not regular:
        return "not a regular file"
    return None


def iter_archive(
    stream: IO[bytes], fmt: str, spool_dir: Path, *, prefix: str = ""
) -> Iterator[ArchiveEntry]:
    """Yield the files of a TAR, TGZ or ZIP archive in stream order, unpacking nested archives.

    Each entry's stream is valid only until the next entry is requested.

    Raises
    ------
    UploadError
        ``Unsupported format <FMT>`` for anything but TAR, TGZ and ZIP (including a nested
        ``.gz``); ``unable to read data from file`` for a corrupt archive.
    """
    if fmt in ("TAR", "TGZ"):
        yield from _iter_tar(stream, fmt, spool_dir, prefix)
    elif fmt == "ZIP":
        yield from _iter_zip(stream, spool_dir, prefix)
    else:
        raise UploadError(f"Unsupported format {fmt}")


def _iter_tar(stream: IO[bytes], fmt: str, spool_dir: Path, prefix: str) -> Iterator[ArchiveEntry]:
    try:
        if fmt == "TGZ":
            archive = tarfile.open(fileobj=stream, mode="r|gz", bufsize=CHUNK)  # noqa: SIM115
        else:
            archive = tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK)  # noqa: SIM115
    except (tarfile.TarError, zlib.error, EOFError) as exc:
        raise UploadError(ARCHIVE_READ_ERROR) from exc
    with archive:
        while True:
            try:
                member = archive.next()
            except (tarfile.TarError, zlib.error, EOFError) as exc:
                raise UploadError(ARCHIVE_READ_ERROR) from exc
            if member is None:
                return
            name = prefix + member.name
            if member.isdir():
                continue
            link = member.issym() or member.islnk()
            reason = _refusal(member.name, link=link, regular=member.isfile())
            if reason:
                yield ArchiveEntry(name, None, reason)
                continue
            handle = archive.extractfile(member)
            assert handle is not None
            yield from _entry_or_nested(name, handle, spool_dir)


def _iter_zip(stream: IO[bytes], spool_dir: Path, prefix: str) -> Iterator[ArchiveEntry]:
    if isinstance(stream, BodyReader):
        # A request body: read it entry by entry as it arrives, as XNAT's ZipInputStream does.
        yield from _iter_zip_stream(stream, spool_dir, prefix)
        return
    with ExitStack() as stack:
        # Always spool: the body is not seekable, and a nested zip seeks slowly.
        spool = stack.enter_context(tempfile.TemporaryFile(dir=spool_dir, prefix="zip-"))
        shutil.copyfileobj(stream, spool, CHUNK)
        if spool.tell() == 0:
            return  # an empty body: no entries, like an empty ZipInputStream
        spool.seek(0)
        source: IO[bytes] = spool
        try:
            archive = stack.enter_context(zipfile.ZipFile(source))
            infos = archive.infolist()
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
            raise UploadError(ARCHIVE_READ_ERROR) from exc
        for info in infos:
            name = prefix + info.filename
            if info.is_dir():
                continue
            link = stat.S_ISLNK(info.external_attr >> 16)
            reason = _refusal(info.filename, link=link, regular=True)
            if reason:
                yield ArchiveEntry(name, None, reason)
                continue
            try:
                handle = archive.open(info)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError) as exc:
                raise UploadError(ARCHIVE_READ_ERROR) from exc
            with handle:
                yield from _entry_or_nested(name, handle, spool_dir)


def _entry_or_nested(name: str, handle: IO[bytes], spool_dir: Path) -> Iterator[ArchiveEntry]:
    nested = archive_format(name)
    if nested == "UNKNOWN":
        yield ArchiveEntry(name, handle)
    else:
        yield from iter_archive(handle, nested, spool_dir, prefix=name + "/")


# -- zip bodies as a stream (docs/xnat-behaviour.md §3.2) --------------------------------------
#
# XNAT reads a zip request body with java.util.zip.ZipInputStream: local headers in stream order,
# never the central directory. So entries are imported while the body arrives, sizes and CRC come
# from the local header (STORED) or from the data descriptor after a DEFLATED entry, a STORED
# entry with a data descriptor is refused ("only DEFLATED entries can have EXT descriptor"), and
# the first signature that is not a local header ends the entries. Link attributes live only in
# the central directory, so this reader (like XNAT) cannot see them.

_LOC = struct.Struct("<IHHHHHIIIHH")
_LOC_SIG = 0x04034B50
_EXT_SIG = 0x08074B50
_END_SIGS = frozenset({0x02014B50, 0x06054B50, 0x06064B50})
_ZIP64_MAGIC = 0xFFFFFFFF


class _Pushback:
    """A body with a buffer in front, so bytes read past an entry can be given back."""

    def __init__(self, reader: BodyReader) -> None:
        self._reader = reader
        self._buf = b""

    def read(self, n: int) -> bytes:
        if self._buf:
            data, self._buf = self._buf[:n], self._buf[n:]
            return data
        return self._reader.read(n)

    def unread(self, data: bytes) -> None:
        self._buf = data + self._buf

    def upto(self, n: int) -> bytes:
        """``n`` bytes, or fewer only at the end of the body (a read may stop at a chunk's end)."""
        parts, got = [], 0
        while got < n:
            data = self.read(n - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def exact(self, n: int) -> bytes:
        data = self.upto(n)
        if len(data) < n:
            raise UploadError(ARCHIVE_READ_ERROR)
        return data


class _StreamEntry(io.RawIOBase):
    """The bytes of one zip entry, inflated if need be, checked against its CRC and sizes."""

    def __init__(self, src: _Pushback, method: int, flags: int, crc: int, csize: int, size: int):
        self._src, self._method, self._flags = src, method, flags
        self._crc, self._csize, self._size = crc, csize, size
        self._inflate = zlib.decompressobj(-15) if method == 8 else None
        self._read_in = 0  # compressed bytes consumed
        self._out = 0
        self._actual_crc = 0
        self._pending = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._next(len(b))
        b[: len(data)] = data
        return len(data)

    def _next(self, n: int) -> bytes:
        while not self._pending and not self.done:
            self._pending = self._produce()
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def _produce(self) -> bytes:
        if self._inflate is None:
            left = self._csize - self._read_in
            data = self._src.read(min(CHUNK, left)) if left else b""
            if left and not data:
                raise UploadError(ARCHIVE_READ_ERROR)
            self._read_in += len(data)
            self._account(data)
            if self._read_in == self._csize:
                self._finish()
            return data
        raw = self._src.read(CHUNK)
        if not raw:
            raise UploadError(ARCHIVE_READ_ERROR)
        try:
            out = self._inflate.decompress(raw)
        except zlib.error as exc:
            raise UploadError(ARCHIVE_READ_ERROR) from exc
        self._read_in += len(raw)
        self._account(out)
        if self._inflate.eof:
            rest = self._inflate.unused_data
            self._read_in -= len(rest)
            self._src.unread(rest)
            self._finish()
        return out

    def _account(self, data: bytes) -> None:
        self._out += len(data)
        self._actual_crc = zlib.crc32(data, self._actual_crc)

    def _finish(self) -> None:
        self.done = True
        if self._flags & 8:
            big = self._out > _ZIP64_MAGIC or self._read_in > _ZIP64_MAGIC
            width = 8 if big else 4
            head = self._src.exact(4)
            if struct.unpack("<I", head)[0] == _EXT_SIG:
                head = self._src.exact(4)
            rest = self._src.exact(2 * width)
            self._crc = struct.unpack("<I", head)[0]
            self._csize, self._size = struct.unpack("<QQ" if big else "<II", rest)
        if (self._size, self._csize, self._crc) != (self._out, self._read_in, self._actual_crc):
            raise UploadError(ARCHIVE_READ_ERROR)

    def skip(self) -> None:
        """Read the rest of the entry (the caller did not want it)."""
        while not self.done:
            self._pending = b""
            self._pending = self._produce()
        self._pending = b""


def _iter_zip_stream(body: BodyReader, spool_dir: Path, prefix: str) -> Iterator[ArchiveEntry]:
    src = _Pushback(body)
    while True:
        head = src.upto(4)
        if not head:
            return  # an empty body: no entries
        sig = struct.unpack("<I", head)[0] if len(head) == 4 else None
        if sig in _END_SIGS:
            return  # the central directory or an end record: no more entries
        if sig != _LOC_SIG:
            raise UploadError(ARCHIVE_READ_ERROR)  # not a zip (as the spooled reader says too)
        head += src.exact(_LOC.size - 4)
        _, _, flags, method, _, _, crc, csize, size, nlen, xlen = _LOC.unpack(head)
        raw_name = src.exact(nlen)
        extra = src.exact(xlen)
        if flags & 1 or method not in (0, 8) or (flags & 8 and method != 8):
            raise UploadError(ARCHIVE_READ_ERROR)  # encrypted, unknown method, STORED with EXT
        if _ZIP64_MAGIC in (csize, size) and not flags & 8:
            size, csize = _zip64_sizes(extra, size, csize)
        name = raw_name.decode("utf-8", "replace")
        entry = _StreamEntry(src, method, flags, crc, csize, size)
        full = prefix + name
        if not name.endswith("/"):
            reason = _refusal(name, link=False, regular=True)
            if reason:
                yield ArchiveEntry(full, None, reason)
            else:
                with entry:
                    yield from _entry_or_nested(full, cast(IO[bytes], entry), spool_dir)
        entry.skip()


def _zip64_sizes(extra: bytes, size: int, csize: int) -> tuple[int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == 0x0001:
            values = list(struct.unpack_from(f"<{length // 8}Q", extra, pos + 4))
            if size == _ZIP64_MAGIC and values:
                size = values.pop(0)
            if csize == _ZIP64_MAGIC and values:
                csize = values.pop(0)
            break
        pos += 4 + length
    return size, csize
