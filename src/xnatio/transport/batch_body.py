"""The request body of one batch, and the wrapper that reports its progress to the link.

A batch goes out as a tar or zip with a Content-Length (``--compress none``), as a chunked zip
whose entries are deflated or stored one by one (``--compress auto|deflate``,
:mod:`xnatio.transport.zipstream`), or, with the ``gradual-DICOM`` handler, as one multipart file.
:class:`TrackedBody` wraps any of them for one request: it counts what the connection takes for
the link's measurements and the progress bar, waits for ``--bwlimit``, and stops between chunks
once the upload is cancelled.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol

from xnatio.dicom.syntax import ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN, classify
from xnatio.inventory import DicomFile, Inventory
from xnatio.options import ArchiveFormat, ImportHandler
from xnatio.plan import Batch
from xnatio.transport.bodies import ArchiveError, ArchiveMember, make_body
from xnatio.transport.compression import LEVEL
from xnatio.transport.link import Link, Stream
from xnatio.transport.zipstream import StreamStats, streaming_zip_body
from xnatio.xnat.naming import entry_name

__all__ = ["Body", "Cancelled", "TrackedBody", "exact_body", "members", "would_shrink"]

# Each body in flight holds its output buffer and about two copies of a chunk on the way to the
# socket: with 42 connections, 1 MiB chunks cost ~130 MB; 256 KiB ones ~32 MB, at no measurable
# cost in time (a few thousand more socket writes for a 400 MB session).
EXACT_CHUNK_SIZE = 1 << 18


class Body(Protocol):
    """A re-iterable request body; ``length`` None means it is sent chunked."""

    @property
    def content_type(self) -> str:
        """The body's media type."""
        ...

    @property
    def length(self) -> int | None:
        """Bytes in the body, or None when it is sent chunked."""
        ...

    def __iter__(self) -> Iterator[bytes]:
        """The body's bytes, from the first."""
        ...


class Cancelled(Exception):
    """The upload was cancelled while this body was being sent."""


def would_shrink(f: DicomFile) -> bool:
    """Whether deflating ``f`` can pay: not when its pixel data (or whole data set) is already
    compressed (an encapsulated transfer syntax other than Encapsulated Uncompressed, or a
    deflated one)."""
    encoding = classify(f.transfer_syntax_uid)
    if encoding is None:
        return True
    if encoding.deflated:
        return False
    return not (
        encoding.encapsulated
        and f.transfer_syntax_uid != ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN
    )


def members(inventory: Inventory, batch: Batch) -> list[ArchiveMember]:
    """The batch's files as archive members, named ``<SOPInstanceUID>.dcm``; errors name the
    source file (``SOURCE/path``, or ``ARCHIVE/member`` for a zip or tar SOURCE)."""
    root = inventory.source.root
    return [
        ArchiveMember(
            name=entry_name(f),
            size=f.size,
            open=functools.partial(inventory.source.open, f.path),
            compressible=would_shrink(f),
            source=str(root / f.path),
        )
        for f in batch.files
    ]


def exact_body(
    inventory: Inventory,
    batch: Batch,
    archive_format: ArchiveFormat,
    handler: ImportHandler,
    on_bytes: Callable[[int], None] | None = None,
) -> Body:
    """A body with a Content-Length: the batch as tar or zip, or one multipart file."""
    if handler == "gradual-DICOM":
        # A multipart part carries the file name XNAT stores (an in-body upload would be named
        # "upload.dcm" for every instance, and collide).
        only = batch.files[0]
        return MultipartFileBody(inventory, only, entry_name(only), on_bytes)
    return make_body(
        archive_format, members(inventory, batch), chunk_size=EXACT_CHUNK_SIZE, on_bytes=on_bytes
    )


class TrackedBody:
    """One batch's body as one request sends it: measured, rate-limited and cancellable.

    Parameters
    ----------
    link
        Where the measurements go, and the compression policy and rate limiter come from.
    build
        Makes the inner body; it receives this object, whose :meth:`deflate` and :meth:`stats`
        a streaming zip body calls back.
    cancel
        Set when the upload is cancelled.
    on_payload
        Called with the file bytes sent since the last call (for the progress bar).
    payload
        The batch's file bytes (to count progress through bodies without counters).
    """

    def __init__(
        self,
        link: Link,
        build: Callable[[TrackedBody], Body],
        cancel: threading.Event,
        on_payload: Callable[[int], None],
        payload: int,
    ) -> None:
        self.link = link
        self.cancel = cancel
        self.on_payload = on_payload
        self.stream: Stream | None = None
        self._queued = False
        self._payload = payload
        self.body = build(self)
        self.content_type = self.body.content_type
        self.length = self.body.length

    @property
    def headers(self) -> dict[str, str]:
        """Content-Type, and Content-Length unless the body is sent chunked."""
        if self.length is None:
            return {"Content-Type": self.content_type}
        return {"Content-Type": self.content_type, "Content-Length": str(self.length)}

    def deflate(self, member: ArchiveMember) -> bool:
        """Ask the link's policy whether ``member`` is deflated (streaming zip callback)."""
        return self.stream is not None and self.link.deflate(self.stream)

    def stats(self) -> StreamStats:
        """The counters of the request now sending (streaming zip callback)."""
        return self.stream.stats if self.stream is not None else StreamStats()

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """One request with this body: waiting for a connection until the first byte goes."""
        self._queued = True
        self.link.waiting(1)
        try:
            yield
        finally:
            if self._queued:
                self._queued = False
                self.link.waiting(-1)
            if self.stream is not None:
                self.link.close(self.stream)

    def __iter__(self) -> Iterator[bytes]:
        link, cancel, limiter = self.link, self.cancel, self.link.limiter
        if self._queued:
            self._queued = False
            link.waiting(-1)
        if self.stream is not None:  # iterated again within one request (a fresh login)
            link.close(self.stream)
        stream = self.stream = link.open()
        scale = self._payload / self.length if self.length else 1.0
        reported = 0
        for chunk in self.body:
            if cancel.is_set():
                raise Cancelled
            if limiter is not None and not limiter.take(len(chunk), cancel):
                raise Cancelled
            yield chunk
            stream.wire += len(chunk)
            sent = stream.stats.payload if stream.stats.produced else int(stream.wire * scale)
            if sent > reported:
                self.on_payload(sent - reported)
                reported = sent
        stream.body_done = time.monotonic()


def streaming_body(inventory: Inventory, batch: Batch, tracked: TrackedBody) -> Body:
    """A chunked zip of the batch whose entries ``tracked`` deflates or stores."""
    return streaming_zip_body(
        members(inventory, batch), deflate=tracked.deflate, level=LEVEL, stats=tracked.stats
    )


class MultipartFileBody:
    """One file as a ``multipart/form-data`` body with an exact length (gradual-DICOM)."""

    def __init__(
        self,
        inventory: Inventory,
        f: DicomFile,
        filename: str,
        on_bytes: Callable[[int], None] | None,
    ) -> None:
        self._inventory = inventory
        self._file = f
        self._on_bytes = on_bytes
        boundary = f"xnatio-{uuid.uuid4().hex}"
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self._head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/dicom\r\n\r\n"
        ).encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        self.length: int | None = len(self._head) + f.size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        sent = 0
        with self._inventory.source.open(self._file.path) as fh:
            while chunk := fh.read(1 << 18):
                sent += len(chunk)
                if sent > self._file.size:
                    break
                if self._on_bytes is not None:
                    self._on_bytes(len(chunk))
                yield chunk
        if sent != self._file.size:
            raise ArchiveError(f"{self._file.path} changed size while being sent")
        yield self._tail
