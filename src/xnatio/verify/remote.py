"""Reading stored files from the server: one header, or the whole file as a stream.

Both read the body as it arrives and never hold more than a chunk of it. A header read asks for
the first 64 KiB with an HTTP ``Range`` (a server that honours it sends no more) and stops reading
once the identifying elements are parsed; leaving a response early closes that connection rather
than downloading the rest, so it works on servers that ignore ``Range`` too.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import BinaryIO, cast

import httpx

from xnatio.inventory import read_header
from xnatio.xnat.session import XnatSession, error_message

__all__ = ["Body", "RemoteReadError", "file_path", "remote_header", "remote_stream"]

_HEADER_BYTES = 65536
_CHUNK = 1 << 16


class RemoteReadError(Exception):
    """A stored file could not be read from the server (status or connection); the message says
    which and why."""


def file_path(uri: str) -> str:
    """The request path of a file listing's ``URI`` (``/data`` in front when it has none)."""
    if uri.startswith(("http://", "https://", "/data/", "/REST/")):
        return uri
    return "/data" + (uri if uri.startswith("/") else "/" + uri)


class Body:
    """A response body as a forward-only binary stream, with its byte count and MD5.

    Parameters
    ----------
    chunks
        The body's chunks (``response.iter_bytes()``).
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._offset = 0
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (fewer at a chunk boundary); ``b""`` only at the end."""
        if self._offset >= len(self._buffer):
            self._buffer = next(self._chunks, b"")
            self._offset = 0
            self.size += len(self._buffer)
            self._md5.update(self._buffer)
            if not self._buffer:
                return b""
        end = len(self._buffer) if size < 0 else self._offset + size
        out = self._buffer[self._offset : end]
        self._offset += len(out)
        return out

    def drain(self) -> None:
        """Read the rest of the body (so that :attr:`size` and :meth:`md5` cover all of it)."""
        self._offset = len(self._buffer)
        for chunk in self._chunks:
            self.size += len(chunk)
            self._md5.update(chunk)
        self._buffer = b""

    def md5(self) -> str:
        """MD5 (hex) of the bytes read so far."""
        return self._md5.hexdigest()

    def stream(self) -> BinaryIO:
        """This object typed as the binary stream the DICOM reader takes (it only calls read)."""
        return cast(BinaryIO, self)


@contextlib.contextmanager
def _get(xnat: XnatSession, uri: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
    what = f"reading {uri}"
    try:
        with xnat.stream(file_path(uri), headers=headers) as response:
            if response.status_code not in (200, 206):
                response.read()
                raise RemoteReadError(
                    f"{what}: {response.status_code} {error_message(response)}".rstrip()
                )
            yield response
    except httpx.HTTPError as exc:
        raise RemoteReadError(f"{what}: {type(exc).__name__}: {exc}") from None


@contextlib.contextmanager
def remote_stream(xnat: XnatSession, uri: str) -> Iterator[Body]:
    """The stored file at ``uri`` as a :class:`Body`, read as it arrives.

    Raises
    ------
    RemoteReadError
        Any status other than 200, or a connection failure (also while reading).
    """
    with _get(xnat, uri, {}) as response:
        yield Body(response.iter_bytes(_CHUNK))


def remote_header(xnat: XnatSession, uri: str) -> dict[str, str] | str:
    """The identifying elements of the stored file at ``uri``, read from its first bytes.

    Returns
    -------
    dict or str
        As :func:`xnatio.inventory.read_header`: the values (``sop_instance``, ``sop_class``,
        ``ts``, ...) or why the file is not a DICOM instance.

    Raises
    ------
    RemoteReadError
        The server did not send the file.
    """
    with _get(xnat, uri, {"Range": f"bytes=0-{_HEADER_BYTES - 1}"}) as response:
        partial = response.status_code == 206
        found = read_header(Body(response.iter_bytes(_CHUNK)).stream())
        total = response.headers.get("content-range", "").rpartition("/")[2]
    if isinstance(found, str) and partial and (not total.isdigit() or int(total) > _HEADER_BYTES):
        # A header longer than the range: read from the start again, without one.
        with _get(xnat, uri, {}) as response:
            found = read_header(Body(response.iter_bytes(_CHUNK)).stream())
    return found
