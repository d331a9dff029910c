"""A lean DICOM Upper Layer client: associate, C-ECHO, C-STORE of raw data set bytes, release.

Why not pynetdicom for sending: measured on loopback (300 files of 130 KB to DCMTK ``storescp``
with ``TCP_NODELAY=1``), pynetdicom's ``send_c_store`` with file paths took 0.95-1.04 s on one
association whatever the reactor delay, DCMTK ``storescu`` 0.12-0.20 s. Its reactor thread polls
per association and copies every fragment; here one blocking socket per association writes each
file as P-DATA-TF PDUs in a single ``sendmsg`` call straight from the file's bytes.

TCP_QUICKACK, re-armed after every read, is what makes one association fast against receivers
that still use Nagle's algorithm: 300 files on one association to Orthanc 1.10 (default
settings) took 14.4 s without it (as long as ``storescu``, 14.8 s) and 0.69 s with it.

The PDU and command set encodings are shared with the sandbox's receiver
(:mod:`xnatio.dimse.pdu`). Only what a Storage SCU needs is implemented (DICOM PS3.8 section 9
for PDUs, PS3.7 section 9 and annex E for the C-ECHO and C-STORE messages): no asynchronous
operations window, no extended negotiation, no SCP role.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from xnatio.dimse.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    CONTEXT_RESULTS,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    PDV_COMMAND,
    PDV_LAST,
    REJECT_REASONS,
    RELEASE_RQ,
    VERIFICATION_SOP_CLASS,
    AssociationAbortedError,
    DimseError,
    PduReader,
    abort_pdu,
    aet_field,
    associate_rq,
    encode_command,
    parse_associate,
    pdv_header,
    uid_bytes,
)
from xnatio.dimse.status import StoreResponse

if TYPE_CHECKING:  # ssl is loaded only when a TLS context is made (start-up time)
    import ssl

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION",
    "VERIFICATION_SOP_CLASS",
    "Association",
    "AssociationAbortedError",
    "AssociationRejectedError",
    "ContextResult",
    "DimseError",
    "StoreResponse",
]

# What we accept: responses are small, but a larger value costs nothing.
_OUR_MAX_PDU = 65536
# Cap on our outgoing PDUs when the peer sets no limit (0), to keep memory use bounded.
_UNLIMITED_PDU = 4 * 1024 * 1024
_IOV_MAX = 512
# Largest PDU read whole (an A-ASSOCIATE-AC, a response), and largest command set.
_MAX_PDU_READ = 16 * 1024 * 1024
_MAX_COMMAND = 1 << 20
_ABORT_SOURCES = {0: "the receiver (service user)", 2: "the receiver's DICOM layer"}


class AssociationRejectedError(DimseError):
    """The receiver answered A-ASSOCIATE-RJ.

    Parameters
    ----------
    message
        One line naming the rejection reason.
    result, source, reason
        The three fields of the A-ASSOCIATE-RJ PDU (PS3.8 section 9.3.4).
    """

    def __init__(self, message: str, *, result: int, source: int, reason: int) -> None:
        super().__init__(message)
        self.result = result
        self.source = source
        self.reason = reason

    @property
    def permanent(self) -> bool:
        """True for a permanent rejection (retrying will not help)."""
        return self.result == 1


@dataclass(frozen=True, slots=True)
class ContextResult:
    """The receiver's answer for one proposed presentation context.

    Attributes
    ----------
    context_id
        Odd number 1-255.
    abstract_syntax, transfer_syntax
        What was proposed.
    result
        0 accepted, 1 user rejection, 2 no reason, 3 abstract syntax not supported,
        4 transfer syntax not supported (PS3.8 section 9.3.3.2).
    """

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    result: int

    @property
    def accepted(self) -> bool:
        """True when the context can be used."""
        return self.result == 0

    @property
    def reason(self) -> str:
        """The result in words."""
        return CONTEXT_RESULTS.get(self.result, f"unknown result {self.result}")


class Association:
    """One open association with a Storage SCP, used from a single thread.

    Create it with :meth:`open`; end it with :meth:`release` (orderly) or :meth:`abort`.

    Attributes
    ----------
    contexts
        The receiver's answer for every proposed (abstract syntax, transfer syntax) pair.
    max_pdu
        The largest P-DATA-TF variable field the receiver accepts (0 = no limit).
    """

    def __init__(
        self,
        sock: socket.socket,
        contexts: dict[tuple[str, str], ContextResult],
        max_pdu: int,
        quickack: bool,
    ) -> None:
        self._sock = sock
        self.contexts = contexts
        self.max_pdu = max_pdu
        self._reader = PduReader(
            io.BufferedReader(socket.SocketIO(sock, "rb"), _OUR_MAX_PDU),
            sock if quickack else None,
            peer="receiver",
            max_pdu=_MAX_PDU_READ,
        )
        self._can_sendmsg = type(sock) is socket.socket  # not TLS-wrapped
        self._message_id = 0
        self._closed = False
        limit = max_pdu if max_pdu > 0 else _UNLIMITED_PDU
        self._fragment = (limit - 6) & ~1  # PDV item length (4) + context ID + control header

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        *,
        called_aet: str,
        calling_aet: str,
        pairs: Sequence[tuple[str, str]],
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        quickack: bool = True,
    ) -> Association:
        """Connect and negotiate an association.

        Parameters
        ----------
        host, port
            The receiver.
        called_aet, calling_aet
            AE titles (1-16 ASCII characters).
        pairs
            (abstract syntax, transfer syntax) pairs, one presentation context each (at most 128).
        timeout
            Seconds allowed for the connection and for each read from the receiver.
        ssl_context
            Wrap the connection in TLS (DICOM PS3.15 annex B.1 secure transport).
        quickack
            On Linux, re-arm ``TCP_QUICKACK`` after every read so our ACKs are never delayed.

        Raises
        ------
        OSError
            The connection could not be made (refused, unreachable, TLS failure, timeout).
        AssociationRejectedError
            The receiver answered A-ASSOCIATE-RJ.
        AssociationAbortedError
            The receiver aborted or closed the connection during negotiation.
        """
        if not 0 < len(pairs) <= 128:
            raise ValueError("an association carries 1 to 128 presentation contexts")
        aet_field(called_aet), aet_field(calling_aet)  # validate before connecting
        raw = socket.create_connection((host, port), timeout=timeout)
        sock: socket.socket = raw
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(raw, server_hostname=host)
            proposed = {2 * i + 1: pair for i, pair in enumerate(pairs)}
            sock.sendall(
                associate_rq(
                    called_aet,
                    calling_aet,
                    {cid: (a, (t,)) for cid, (a, t) in proposed.items()},
                    _OUR_MAX_PDU,
                )
            )
            assoc = cls(sock, {}, 0, quickack)
            pdu_type, data = assoc._reader.pdu()
            if pdu_type == A_ASSOCIATE_RJ:
                result, source, reason = data[1], data[2], data[3]
                text = REJECT_REASONS.get((source, reason), f"source {source}, reason {reason}")
                kind = "permanently" if result == 1 else "for now"
                raise AssociationRejectedError(
                    f"the receiver rejected the association {kind}: {text}",
                    result=result,
                    source=source,
                    reason=reason,
                )
            if pdu_type == A_ABORT:
                raise AssociationAbortedError("the receiver aborted the association request")
            if pdu_type != A_ASSOCIATE_AC:
                raise AssociationAbortedError(
                    f"unexpected PDU type {pdu_type} instead of A-ASSOCIATE-AC"
                )
            assoc._parse_accept(data, proposed)
            return assoc
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise

    def _parse_accept(self, data: bytes, proposed: dict[int, tuple[str, str]]) -> None:
        accept = parse_associate(data)
        answered: dict[int, ContextResult] = {}
        for item in accept.contexts:
            if item.context_id in proposed:
                abstract, transfer = proposed[item.context_id]
                answered[item.context_id] = ContextResult(
                    item.context_id, abstract, transfer, item.result
                )
        self.max_pdu = accept.max_pdu or 0
        for cid, (abstract, transfer) in proposed.items():
            res = answered.get(cid, ContextResult(cid, abstract, transfer, 2))
            self.contexts[(abstract, transfer)] = res
        limit = self.max_pdu if self.max_pdu > 0 else _UNLIMITED_PDU
        # PDV fragments must have an even length (PS3.8 annex E.2).
        self._fragment = (max(limit, 64) - 6) & ~1

    # -- reading -------------------------------------------------------------------------------

    def _read_command(self) -> dict[int, bytes]:
        """Read PDVs until a complete command set has arrived."""
        reader = self._reader
        while True:
            other = reader.next_pdv()
            if other is not None:
                self._unexpected(*other)
            if reader.pdv_control & PDV_COMMAND:
                return reader.command(_MAX_COMMAND)[1]
            reader.skip_pdv()  # a data set fragment: C-STORE/C-ECHO responses carry none

    def _unexpected(self, pdu_type: int, data: bytes) -> NoReturn:
        """End the association for a PDU other than P-DATA-TF during an operation."""
        if pdu_type == A_ABORT:
            source = data[2] if len(data) > 2 else 0
            who = _ABORT_SOURCES.get(source, "the receiver")
            self._close()
            raise AssociationAbortedError(f"association aborted by {who}")
        self.abort()
        if pdu_type == A_RELEASE_RQ:
            # The peer may not release first (PS3.8 7.2); treat it as a failure of the exchange.
            raise AssociationAbortedError("the receiver asked to release during an operation")
        raise AssociationAbortedError(f"unexpected PDU type {pdu_type} during an operation")

    # -- writing -------------------------------------------------------------------------------

    def _send_buffers(self, buffers: list[bytes | memoryview]) -> None:
        try:
            if not self._can_sendmsg:
                self._sock.sendall(b"".join(buffers))
                return
            while buffers:
                batch = buffers[:_IOV_MAX]
                sent = self._sock.sendmsg(batch)
                total = sum(len(b) for b in batch)
                if sent == total:
                    del buffers[:_IOV_MAX]
                    continue
                # Partial write: drop what went out and resume inside the first unfinished buffer.
                i = 0
                while sent >= len(buffers[i]):
                    sent -= len(buffers[i])
                    i += 1
                buffers[i] = memoryview(buffers[i])[sent:]
                del buffers[:i]
        except TimeoutError as exc:
            raise AssociationAbortedError(
                "the receiver stopped reading within the timeout"
            ) from exc
        except OSError as exc:
            raise AssociationAbortedError(f"connection lost: {exc}") from exc

    def _pdv_header(self, context_id: int, control: int, length: int) -> bytes:
        return pdv_header(context_id, control, length)

    def _next_id(self) -> int:
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def _context_id(self, abstract: str, transfer: str) -> int:
        res = self.contexts.get((abstract, transfer))
        if res is None or not res.accepted:
            raise ValueError(f"no accepted presentation context for {abstract} / {transfer}")
        return res.context_id

    def echo(self) -> StoreResponse:
        """Send C-ECHO-RQ on the verification context and wait for the response."""
        cid = next(
            (
                r.context_id
                for (a, _), r in self.contexts.items()
                if a == VERIFICATION_SOP_CLASS and r.accepted
            ),
            None,
        )
        if cid is None:
            raise ValueError("the receiver did not accept the verification SOP class")
        cmd = encode_command(
            [
                (0x0002, uid_bytes(VERIFICATION_SOP_CLASS)),
                (0x0100, struct.pack("<H", 0x0030)),
                (0x0110, struct.pack("<H", self._next_id())),
                (0x0800, struct.pack("<H", 0x0101)),
            ]
        )
        self._send_buffers([self._pdv_header(cid, PDV_COMMAND | PDV_LAST, len(cmd)), cmd])
        return self._response()

    def store(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        chunks: Iterable[bytes],
    ) -> StoreResponse:
        """Send one C-STORE-RQ whose data set is the concatenation of ``chunks``, as they are.

        Parameters
        ----------
        sop_class_uid, sop_instance_uid
            Affected SOP Class and Instance UIDs of the command.
        transfer_syntax_uid
            Selects the presentation context; the bytes must already be in this syntax.
        chunks
            The data set bytes (no preamble, no file meta), in any number of pieces.

        Returns
        -------
        StoreResponse
            The status of the C-STORE-RSP (DICOM PS3.4 annex B.2.3).
        """
        cid = self._context_id(sop_class_uid, transfer_syntax_uid)
        cmd = encode_command(
            [
                (0x0002, uid_bytes(sop_class_uid)),
                (0x0100, struct.pack("<H", 0x0001)),
                (0x0110, struct.pack("<H", self._next_id())),
                (0x0700, struct.pack("<H", 0)),
                (0x0800, struct.pack("<H", 0x0000)),
                (0x1000, uid_bytes(sop_instance_uid)),
            ]
        )
        out: list[bytes | memoryview] = [
            self._pdv_header(cid, PDV_COMMAND | PDV_LAST, len(cmd)),
            cmd,
        ]
        frag = self._fragment
        pending = memoryview(b"")
        queued = 0
        for chunk in chunks:
            pending = memoryview(bytes(pending) + chunk) if pending else memoryview(chunk)
            # Keep at least one byte back so the last fragment is known when the chunks end.
            while len(pending) > frag:
                out.append(self._pdv_header(cid, 0x00, frag))
                out.append(pending[:frag])
                pending = pending[frag:]
                queued += frag
            if queued >= 8 * 1024 * 1024:
                self._send_buffers(out)
                out, queued = [], 0
        if not len(pending):
            raise ValueError("empty data set")
        out.append(self._pdv_header(cid, PDV_LAST, len(pending)))
        out.append(pending)
        self._send_buffers(out)
        return self._response()

    def _response(self) -> StoreResponse:
        fields = self._read_command()
        raw_status = fields.get(0x0900)
        if raw_status is None or len(raw_status) != 2:
            self.abort()
            raise AssociationAbortedError("response without a status")
        (status,) = struct.unpack("<H", raw_status)
        comment = fields.get(0x0902, b"").rstrip(b"\x00 ").decode("ascii", "replace")
        return StoreResponse(int(status), comment)

    def interrupt(self) -> None:
        """Shut the connection down from another thread, waking a blocked send or receive."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    # -- ending --------------------------------------------------------------------------------

    def release(self) -> None:
        """Release the association in order (A-RELEASE-RQ, wait for A-RELEASE-RP), then close."""
        if self._closed:
            return
        try:
            self._send_buffers([RELEASE_RQ])
            while True:
                other = self._reader.next_pdv()
                if other is None:
                    self._reader.skip_pdv()
                elif other[0] in (A_RELEASE_RP, A_ABORT):
                    break
        except DimseError:
            pass
        finally:
            self._close()

    def abort(self) -> None:
        """Send A-ABORT (service user) and close, ignoring any error."""
        if self._closed:
            return
        with contextlib.suppress(OSError):
            self._sock.sendall(abort_pdu())
        self._close()

    def _close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    @property
    def closed(self) -> bool:
        """True once the association has ended."""
        return self._closed
