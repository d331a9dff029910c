"""A lean Storage SCP: one thread per association, blocking sockets, data streamed to a handler.

Why not pynetdicom for receiving: its association reactor polls per association, and the
sandbox's pynetdicom SCP took about 200-300 instances per second whatever the number of
associations. Here each association is served by one thread that blocks on its socket, and a
C-STORE data set is not collected in memory: the handler gets a file-like
:class:`DataSetStream` that reads the P-DATA-TF fragments straight from the connection as it is
consumed (an import writing to disk copies each byte once).

What is implemented (DICOM PS3.8 section 9 for the PDUs, PS3.7 section 9 and annex E for the
messages): A-ASSOCIATE-RQ/AC/RJ with presentation context negotiation (the first proposed transfer
syntax that is supported wins; compressed ones are accepted as they are), maximum PDU length
negotiation, C-ECHO, C-STORE, A-RELEASE and A-ABORT, rejection of unknown called AE titles, and
TLS (PS3.15 annex B.1) when given an :class:`ssl.SSLContext`. Not implemented: other DIMSE
services, asynchronous operations, extended negotiation, SCP/SCU role selection.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from xnatio.dimse.pdu import (
    A_ABORT,
    A_ASSOCIATE_RQ,
    A_RELEASE_RQ,
    APPLICATION_CONTEXT,
    PDV_COMMAND,
    PDV_LAST,
    RELEASE_RP,
    VERIFICATION_SOP_CLASS,
    AssociateRequest,
    AssociationAbortedError,
    PduReader,
    abort_pdu,
    associate_ac,
    associate_rj,
    command_uid,
    command_us,
    encode_command,
    parse_associate,
    pdv_header,
    uid_bytes,
)
from xnatio.dimse.status import StoreResponse

__all__ = [
    "STORAGE_TRANSFER_SYNTAXES",
    "AbortAssociation",
    "DataSetStream",
    "StorageServer",
    "StoreRequest",
    "is_storage_sop_class",
]

log = logging.getLogger(__name__)

# Transfer syntaxes accepted for storage: every one of DICOM PS3.6 table A-1 whose data set is
# DICOM encoded (native, deflated, and all the encapsulated pixel data families). The data set
# bytes are never decoded, so a compressed syntax costs nothing to accept.
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.98",  # Encapsulated Uncompressed Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(50, 67)),  # JPEG processes 1-29
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(90, 96)),  # JPEG 2000, JPIP
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 107)),  # MPEG-2, MPEG-4 AVC
    *(f"1.2.840.10008.1.2.4.{n}.1" for n in range(100, 107)),  # fragmentable MPEG
    "1.2.840.10008.1.2.4.107",  # HEVC Main
    "1.2.840.10008.1.2.4.108",  # HEVC Main 10
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(201, 206)),  # HTJ2K, JPIP HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
    *(f"1.2.840.10008.1.2.7.{n}" for n in (1, 2, 3)),  # SMPTE ST 2110
)
_VERIFICATION_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")

# Storage SOP classes outside the standard's storage root (PS3.4 annex B.5), and vendor roots
# whose private storage classes XNAT's receiver accepts (Siemens CSA non-image, Philips, GE).
_OTHER_STORAGE = frozenset(
    {
        "1.2.840.10008.5.1.4.38.1",  # Hanging Protocol
        "1.2.840.10008.5.1.4.39.1",  # Color Palette
        "1.2.840.10008.5.1.4.43.1",  # Generic Implant Template
        "1.2.840.10008.5.1.4.44.1",  # Implant Assembly Template
        "1.2.840.10008.5.1.4.45.1",  # Implant Template Group
        "1.2.840.10008.5.1.4.34.10",  # RT Brachy Application Setup Delivery Instruction
    }
)
_STORAGE_ROOTS = (
    "1.2.840.10008.5.1.4.1.1.",  # every standard storage SOP class (PS3.6 annex A)
    "1.3.12.2.1107.5.9.",  # Siemens (CSA non-image storage)
    "1.3.46.670589.",  # Philips private storage classes
    "1.2.840.113619.4.",  # GE private storage classes
)

# Command field values (PS3.7 annex E).
_C_STORE_RQ = 0x0001
_C_ECHO_RQ = 0x0030
_NO_DATA_SET = 0x0101
_DEFAULT_MAX_PDU = 1 << 20
_READ_BUFFER = 256 * 1024
_MAX_COMMAND = 1 << 20


def is_storage_sop_class(uid: str) -> bool:
    """True for a storage SOP class this receiver accepts (standard or vendor private)."""
    return uid in _OTHER_STORAGE or uid.startswith(_STORAGE_ROOTS)


class AbortAssociation(Exception):
    """Raised by a store handler to end the association with A-ABORT instead of answering."""


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """One received C-STORE-RQ (PS3.7 section 9.3.1.1).

    Attributes
    ----------
    sop_class_uid, sop_instance_uid
        Affected SOP Class and Instance UIDs of the command.
    transfer_syntax_uid
        The presentation context's transfer syntax: the data set's encoding.
    message_id
        The request's Message ID.
    calling_aet, called_aet
        AE titles of the association.
    peer
        The sender's (address, port).
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    message_id: int
    calling_aet: str
    called_aet: str
    peer: tuple[str, int]


StoreHandler = Callable[[StoreRequest, "DataSetStream"], "int | StoreResponse"]


class DataSetStream:
    """The data set of one C-STORE-RQ as a read-only binary stream, after an optional prefix.

    Reading pulls P-DATA-TF fragments from the connection as needed. ``read(n)`` returns exactly
    ``n`` bytes until the data set ends (then fewer, then ``b""``), like a buffered file. A
    broken association raises :class:`~xnatio.dimse.pdu.AssociationAbortedError` and sets
    :attr:`broken`.
    """

    def __init__(
        self, reader: PduReader, context_id: int, prefix: bytes = b"", *, empty: bool = False
    ) -> None:
        self._reader = reader
        self._context = context_id
        self._prefix = memoryview(prefix)
        self._started = False
        self._ended = empty
        self.broken = False
        self.received = 0

    def prepend(self, prefix: bytes) -> None:
        """Serve ``prefix`` before the rest (for a file meta header built from the command)."""
        self._prefix = memoryview(bytes(self._prefix) + prefix)

    def readable(self) -> bool:
        """Always True."""
        return True

    def _more(self) -> bool:
        """Make the next fragment current; False at the end of the data set."""
        reader = self._reader
        while reader.pdv_left == 0:
            if self._ended:
                return False
            if self._started and reader.pdv_control & PDV_LAST:
                self._ended = True
                return False
            other = reader.next_pdv()
            self._started = True
            if other is not None:
                kind = "A-ABORT" if other[0] == A_ABORT else f"PDU type {other[0]}"
                raise AssociationAbortedError(f"{kind} in the middle of a data set")
            if reader.pdv_control & PDV_COMMAND or reader.pdv_context != self._context:
                raise AssociationAbortedError("a command fragment in the middle of a data set")
        return True

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all that is left when negative)."""
        parts: list[bytes] = []
        want = size if size >= 0 else 1 << 62
        if self._prefix and want:
            head = bytes(self._prefix[:want])
            self._prefix = self._prefix[len(head) :]
            parts.append(head)
            want -= len(head)
        try:
            while want > 0 and self._more():
                chunk = self._reader.pdv_bytes(want)
                self.received += len(chunk)
                parts.append(chunk)
                want -= len(chunk)
        except AssociationAbortedError:
            self.broken = True
            raise
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def drain(self) -> None:
        """Consume whatever the handler left unread."""
        while self.read(1 << 20):
            pass

    def __enter__(self) -> DataSetStream:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class StorageServer:
    """A Storage SCP (and Verification SCP) listening on a TCP port.

    Parameters
    ----------
    ae_title
        Our AE title; associations calling another title are rejected (A-ASSOCIATE-RJ,
        permanent, "called AE title not recognised").
    on_store
        Called for each C-STORE-RQ from the association's thread with the request and its data
        set stream; returns the status (or a :class:`~xnatio.dimse.status.StoreResponse` with an
        error comment), or raises :class:`AbortAssociation`. Whatever it leaves unread is
        drained before the response; any other exception answers 0xA700 (out of resources).
    host, port
        Address to listen on; port 0 picks a free port.
    max_pdu
        The largest P-DATA-TF PDU we accept, announced in the A-ASSOCIATE-AC (0 = no limit).
    max_associations
        Associations served at once; more are rejected as transient "local limit exceeded".
    timeout
        Seconds a connection may wait for the peer before the association is aborted.
    ssl_context
        A server-side TLS context (PS3.15 annex B.1); plain TCP when ``None``.
    transfer_syntaxes
        Accepted transfer syntaxes for storage (default :data:`STORAGE_TRANSFER_SYNTAXES`).
    on_open, on_close
        Called when a connection is accepted and when it has ended (to count them).
    """

    def __init__(
        self,
        ae_title: str,
        on_store: StoreHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_pdu: int = _DEFAULT_MAX_PDU,
        max_associations: int = 64,
        timeout: float = 120.0,
        ssl_context: ssl.SSLContext | None = None,
        transfer_syntaxes: Collection[str] = STORAGE_TRANSFER_SYNTAXES,
        on_open: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.ae_title = ae_title
        self._on_open = on_open
        self._on_close = on_close
        self._on_store = on_store
        self._address = (host, port)
        self._max_pdu = max_pdu
        self._max_associations = max_associations
        self._timeout = timeout
        self._ssl = ssl_context
        self._syntaxes = frozenset(transfer_syntaxes)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        """The port listened on."""
        if self._listener is None:
            raise RuntimeError("the DICOM receiver is not running")
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        """Bind, listen and serve in a background thread."""
        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(self._address)
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name="dimse-accept", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, cut open associations and wait for their threads."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            live, workers = list(self._live), list(self._workers)
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join(timeout)

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.debug("accept failed", exc_info=True)
                continue
            if self._on_open is not None:
                self._on_open()
            worker = threading.Thread(
                target=self._serve, args=(conn, peer), name="dimse-association", daemon=True
            )
            with self._lock:
                self._live.add(conn)
                self._workers.add(worker)
            worker.start()

    def _serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        sock: socket.socket = conn
        try:
            conn.settimeout(self._timeout)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(conn, server_side=True)
            with io.BufferedReader(socket.SocketIO(sock, "rb"), _READ_BUFFER) as stream:
                _Association(self, sock, stream, (str(peer[0]), int(peer[1]))).run()
        except (OSError, ssl.SSLError) as exc:
            log.debug("association from %s ended: %s", peer, exc)
        except AssociationAbortedError as exc:
            log.debug("association from %s aborted: %s", peer, exc)
        except Exception:
            log.exception("association from %s failed", peer)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._live.discard(conn)
                self._workers.discard(threading.current_thread())
            if self._on_close is not None:
                self._on_close()

    def _count(self) -> int:
        with self._lock:
            return len(self._live)


class _Association:
    """The acceptor side of one association, run in its own thread."""

    def __init__(
        self,
        server: StorageServer,
        sock: socket.socket,
        stream: io.BufferedReader[socket.SocketIO],
        peer: tuple[str, int],
    ) -> None:
        self._server = server
        self._sock = sock
        self._reader = PduReader(stream, sock, peer="sender", max_pdu=_MAX_COMMAND)
        self._peer = peer
        self._contexts: dict[int, tuple[str, str]] = {}  # accepted: id -> (abstract, transfer)
        self._peer_max_pdu = 0
        self._request: AssociateRequest | None = None

    def _send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def run(self) -> None:
        pdu_type, body = self._reader.pdu()
        if pdu_type != A_ASSOCIATE_RQ:
            self._send(abort_pdu(2, 2))  # service provider, unexpected PDU
            return
        if not self._negotiate(parse_associate(body)):
            return
        while True:
            other = self._reader.next_pdv()
            if other is not None:
                if other[0] == A_RELEASE_RQ:
                    self._send(RELEASE_RP)
                elif other[0] != A_ABORT:
                    self._send(abort_pdu(2, 2))
                return
            self._command()

    def _negotiate(self, rq: AssociateRequest) -> bool:
        server = self._server
        reject: tuple[int, int, int] | None = None
        if not rq.protocol_version & 1:
            reject = (1, 2, 2)  # permanent, provider (ACSE), protocol version not supported
        elif rq.application_context != APPLICATION_CONTEXT:
            reject = (1, 1, 2)  # permanent, service user, application context not supported
        elif rq.called_aet != server.ae_title:
            reject = (1, 1, 7)  # permanent, service user, called AE title not recognised
        elif server._count() > server._max_associations:
            reject = (2, 3, 2)  # transient, provider (presentation), local limit exceeded
        if reject is not None:
            log.info("rejecting association from %s (%s): %s", self._peer, rq.calling_aet, reject)
            self._send(associate_rj(*reject))
            return False
        answers: list[tuple[int, int, str]] = []
        for pc in rq.contexts:
            if pc.abstract_syntax == VERIFICATION_SOP_CLASS:
                supported: Iterable[str] = _VERIFICATION_SYNTAXES
            elif is_storage_sop_class(pc.abstract_syntax):
                supported = server._syntaxes
            else:
                answers.append(
                    (pc.context_id, 3, pc.transfer_syntaxes[0] if pc.transfer_syntaxes else "")
                )
                continue
            chosen = next((ts for ts in pc.transfer_syntaxes if ts in supported), None)
            if chosen is None:
                answers.append(
                    (pc.context_id, 4, pc.transfer_syntaxes[0] if pc.transfer_syntaxes else "")
                )
                continue
            answers.append((pc.context_id, 0, chosen))
            self._contexts[pc.context_id] = (pc.abstract_syntax, chosen)
        self._peer_max_pdu = rq.max_pdu or 0
        self._request = rq
        self._send(associate_ac(rq, answers, server._max_pdu))
        return True

    def _command(self) -> None:
        context, fields = self._reader.command(_MAX_COMMAND)
        field = command_us(fields, 0x0100)
        message_id = command_us(fields, 0x0110) or 0
        has_data = command_us(fields, 0x0800) != _NO_DATA_SET
        accepted = self._contexts.get(context)
        if accepted is None or field not in (_C_STORE_RQ, _C_ECHO_RQ):
            # No accepted context, or a service we do not offer: nothing sensible to answer.
            self._send(abort_pdu(2, 6))  # service provider, invalid PDU parameter value
            raise AssociationAbortedError(f"unsupported command 0x{field or 0:04X}")
        if field == _C_ECHO_RQ:
            if has_data:
                DataSetStream(self._reader, context).drain()
            self._respond(context, 0x8030, message_id, accepted[0], "", StoreResponse(0))
            return
        request = StoreRequest(
            command_uid(fields, 0x0002) or accepted[0],
            command_uid(fields, 0x1000),
            accepted[1],
            message_id,
            self._request.calling_aet if self._request else "",
            self._server.ae_title,
            self._peer,
        )
        stream = DataSetStream(self._reader, context, empty=not has_data)
        try:
            answer = self._server._on_store(request, stream)
        except AbortAssociation:
            if not stream.broken:
                stream.drain()
            self._send(abort_pdu(0, 0))
            raise AssociationAbortedError("aborted by the store handler") from None
        except Exception as exc:
            if stream.broken:
                raise AssociationAbortedError("the association broke during a data set") from exc
            log.exception("store handler failed for %s", request.sop_instance_uid)
            answer = 0xA700
        if stream.broken:
            raise AssociationAbortedError("the association broke while receiving a data set")
        stream.drain()
        response = answer if isinstance(answer, StoreResponse) else StoreResponse(int(answer))
        self._respond(
            context, 0x8001, message_id, request.sop_class_uid, request.sop_instance_uid, response
        )

    def _respond(
        self,
        context: int,
        field: int,
        message_id: int,
        sop_class: str,
        sop_instance: str,
        response: StoreResponse,
    ) -> None:
        elements = [
            (0x0002, uid_bytes(sop_class)),
            (0x0100, struct.pack("<H", field)),
            (0x0120, struct.pack("<H", message_id)),
            (0x0800, struct.pack("<H", _NO_DATA_SET)),
            (0x0900, struct.pack("<H", response.status)),
        ]
        if sop_instance:
            elements.append((0x1000, uid_bytes(sop_instance)))
        if response.error_comment and response.status:
            comment = response.error_comment.encode("ascii", "replace")[:64]
            elements.append((0x0902, comment + b" " if len(comment) % 2 else comment))
        cmd = encode_command(elements)
        limit = self._peer_max_pdu - 6 if self._peer_max_pdu else len(cmd)
        limit = max(limit & ~1, 2)
        out: list[bytes] = []
        for start in range(0, len(cmd), limit):
            piece = cmd[start : start + limit]
            last = PDV_LAST if start + limit >= len(cmd) else 0
            out.append(pdv_header(context, PDV_COMMAND | last, len(piece)) + piece)
        self._send(b"".join(out))
