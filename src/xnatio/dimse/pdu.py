"""DICOM Upper Layer protocol data units, shared by the Storage SCU and the sandbox's SCP.

Encoding and decoding of the PDUs of DICOM PS3.8 section 9.3 (A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF,
A-RELEASE-RQ/RP, A-ABORT) and of DIMSE command sets (PS3.7 section 6.3 and annex E: implicit VR
little endian, group length first), and :class:`PduReader`, the one reader of PDUs and PDVs
from a connection. Opening, serving and closing connections is in :mod:`xnatio.dimse.client`
(sending) and :mod:`xnatio.dimse.server` (receiving).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from xnatio import __version__
from xnatio.errors import XnatioError

__all__ = [
    "APPLICATION_CONTEXT",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION",
    "VERIFICATION_SOP_CLASS",
    "AssociateRequest",
    "AssociationAbortedError",
    "DimseError",
    "PduReader",
    "PresentationContext",
    "abort_pdu",
    "associate_ac",
    "associate_rj",
    "associate_rq",
    "command_uid",
    "command_us",
    "encode_command",
    "item",
    "parse_associate",
    "parse_command",
    "pdv_header",
]

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
# A UID under the UUID-derived root 2.25 (PS3.5 annex B.2), fixed for this implementation.
IMPLEMENTATION_CLASS_UID = "2.25.207713505136312853404474963153468283655"
IMPLEMENTATION_VERSION = f"XNATIO_{__version__}"[:16]

# PDU types (PS3.8 table 9-11).
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

RELEASE_RQ = struct.pack(">BBIi", A_RELEASE_RQ, 0, 4, 0)
RELEASE_RP = struct.pack(">BBIi", A_RELEASE_RP, 0, 4, 0)

# Message control header bits of a PDV (PS3.8 annex E.2).
PDV_COMMAND = 0x01
PDV_LAST = 0x02

HAS_QUICKACK = sys.platform.startswith("linux") and hasattr(socket, "TCP_QUICKACK")

REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}
CONTEXT_RESULTS = {
    0: "accepted",
    1: "user rejection",
    2: "no reason given",
    3: "SOP class not supported",
    4: "transfer syntax not supported",
}


class DimseError(XnatioError):
    """A DICOM network exchange failed (connection, protocol or association level)."""


class AssociationAbortedError(DimseError):
    """The association ended abnormally: A-ABORT, a closed connection, a timeout, bad PDUs."""


@dataclass(frozen=True, slots=True)
class PresentationContext:
    """One presentation context item of an A-ASSOCIATE-RQ (0x20) or -AC (0x21).

    Attributes
    ----------
    context_id
        Odd number 1-255.
    abstract_syntax
        The SOP class (empty in an A-ASSOCIATE-AC, which does not repeat it).
    transfer_syntaxes
        Proposed syntaxes (RQ) or the one accepted (AC).
    result
        The acceptor's result (AC only; 0 accepted, PS3.8 table 9-18).
    """

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]
    result: int = 0


@dataclass(frozen=True, slots=True)
class AssociateRequest:
    """The fields of an A-ASSOCIATE-RQ or -AC PDU that matter here (PS3.8 section 9.3.2-9.3.3).

    Attributes
    ----------
    protocol_version
        Bit 0 set for version 1.
    called_aet, calling_aet
        AE titles with the padding spaces removed.
    application_context
        The application context name (the DICOM one is the only one defined).
    contexts
        Presentation context items in the order received.
    max_pdu
        Maximum length of a P-DATA-TF PDU the sender of this PDU accepts (0 = no limit);
        ``None`` when the user information item does not say.
    implementation_class_uid, implementation_version
        The sender's implementation identification.
    """

    protocol_version: int
    called_aet: str
    calling_aet: str
    application_context: str
    contexts: list[PresentationContext] = field(default_factory=list)
    max_pdu: int | None = None
    implementation_class_uid: str = ""
    implementation_version: str = ""


def item(item_type: int, body: bytes) -> bytes:
    """An item or sub-item: type, reserved byte, 2-byte length, body."""
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def uid_bytes(value: str) -> bytes:
    """A UID value padded to even length with NUL (PS3.5 section 9.1)."""
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def aet_field(title: str) -> bytes:
    """An AE title as the 16-byte field of an A-ASSOCIATE PDU, space padded."""
    raw = title.encode("ascii")
    if not 0 < len(raw) <= 16:
        raise ValueError(f"AE title {title!r} must be 1-16 ASCII characters")
    return raw.ljust(16)


def _user_information(max_pdu: int) -> bytes:
    user = item(0x51, struct.pack(">I", max_pdu))
    user += item(0x52, IMPLEMENTATION_CLASS_UID.encode("ascii"))
    user += item(0x55, IMPLEMENTATION_VERSION.encode("ascii"))
    return item(0x50, user)


def _associate(pdu_type: int, called: bytes, calling: bytes, items: list[bytes]) -> bytes:
    body = struct.pack(">HH", 1, 0) + called + calling + bytes(32) + b"".join(items)
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def associate_rq(
    called_aet: str,
    calling_aet: str,
    proposed: Mapping[int, tuple[str, Iterable[str]]],
    max_pdu: int,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU.

    Parameters
    ----------
    called_aet, calling_aet
        AE titles (1-16 ASCII characters).
    proposed
        Context ID -> (abstract syntax, transfer syntaxes).
    max_pdu
        The largest P-DATA-TF PDU we accept.
    """
    items = [item(0x10, APPLICATION_CONTEXT.encode("ascii"))]
    for cid, (abstract, transfers) in proposed.items():
        body = struct.pack("BBBB", cid, 0, 0, 0) + item(0x30, abstract.encode("ascii"))
        body += b"".join(item(0x40, ts.encode("ascii")) for ts in transfers)
        items.append(item(0x20, body))
    items.append(_user_information(max_pdu))
    return _associate(A_ASSOCIATE_RQ, aet_field(called_aet), aet_field(calling_aet), items)


def associate_ac(
    request: AssociateRequest, answers: Iterable[tuple[int, int, str]], max_pdu: int
) -> bytes:
    """An A-ASSOCIATE-AC PDU answering ``request``.

    Parameters
    ----------
    request
        The A-ASSOCIATE-RQ; its AE titles are echoed back (PS3.8 section 9.3.3).
    answers
        (context ID, result, transfer syntax) per proposed context; the syntax is ignored by
        the requestor unless the result is 0 (accepted).
    max_pdu
        The largest P-DATA-TF PDU we accept (0 = no limit).
    """
    items = [item(0x10, APPLICATION_CONTEXT.encode("ascii"))]
    for cid, result, transfer in answers:
        body = struct.pack("BBBB", cid, 0, result, 0) + item(0x40, transfer.encode("ascii"))
        items.append(item(0x21, body))
    items.append(_user_information(max_pdu))
    called = request.called_aet.encode("ascii", "replace")[:16].ljust(16)
    calling = request.calling_aet.encode("ascii", "replace")[:16].ljust(16)
    return _associate(A_ASSOCIATE_AC, called, calling, items)


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 section 9.3.4; see :data:`REJECT_REASONS`)."""
    return struct.pack(">BBIBBBB", A_ASSOCIATE_RJ, 0, 4, 0, result, source, reason)


def abort_pdu(source: int = 0, reason: int = 0) -> bytes:
    """An A-ABORT PDU: source 0 service user, 2 service provider (PS3.8 section 9.3.8)."""
    return struct.pack(">BBIBBBB", A_ABORT, 0, 4, 0, 0, source, reason)


def pdv_header(context_id: int, control: int, length: int) -> bytes:
    """Header of a P-DATA-TF PDU holding exactly one PDV of ``length`` bytes."""
    return struct.pack(">BBIIBB", P_DATA_TF, 0, length + 6, length + 2, context_id, control)


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii", "replace")


def parse_associate(data: bytes) -> AssociateRequest:
    """Decode the variable part of an A-ASSOCIATE-RQ or -AC PDU (after its 6-byte header).

    Raises
    ------
    AssociationAbortedError
        The PDU is too short or an item overruns it.
    """
    if len(data) < 68:
        raise AssociationAbortedError("A-ASSOCIATE PDU too short")
    (version,) = struct.unpack_from(">H", data, 0)
    called = data[4:20].decode("ascii", "replace").strip()
    calling = data[20:36].decode("ascii", "replace").strip()
    app_context = ""
    contexts: list[PresentationContext] = []
    max_pdu: int | None = None
    impl_uid = impl_version = ""
    pos = 68
    while pos + 4 <= len(data):
        item_type, _, length = struct.unpack_from(">BBH", data, pos)
        body = data[pos + 4 : pos + 4 + length]
        if len(body) != length:
            raise AssociationAbortedError("A-ASSOCIATE item overruns the PDU")
        pos += 4 + length
        if item_type == 0x10:
            app_context = _text(body)
        elif item_type in (0x20, 0x21) and len(body) >= 4:
            abstract = ""
            transfers: list[str] = []
            sub = 4
            while sub + 4 <= len(body):
                sub_type, _, sub_len = struct.unpack_from(">BBH", body, sub)
                value = _text(body[sub + 4 : sub + 4 + sub_len])
                if sub_type == 0x30:
                    abstract = value
                elif sub_type == 0x40:
                    transfers.append(value)
                sub += 4 + sub_len
            contexts.append(PresentationContext(body[0], abstract, tuple(transfers), body[2]))
        elif item_type == 0x50:
            sub = 0
            while sub + 4 <= len(body):
                sub_type, _, sub_len = struct.unpack_from(">BBH", body, sub)
                value_raw = body[sub + 4 : sub + 4 + sub_len]
                if sub_type == 0x51 and sub_len == 4:
                    (max_pdu,) = struct.unpack(">I", value_raw)
                elif sub_type == 0x52:
                    impl_uid = _text(value_raw)
                elif sub_type == 0x55:
                    impl_version = _text(value_raw)
                sub += 4 + sub_len
    return AssociateRequest(
        version, called, calling, app_context, contexts, max_pdu, impl_uid, impl_version
    )


def encode_command(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """Encode a command set (group 0000) in implicit VR little endian, group length first.

    Parameters
    ----------
    elements
        (element number, encoded value) pairs; values must already have even lengths.
    """
    body = b"".join(
        struct.pack("<HHI", 0, elem, len(value)) + value for elem, value in sorted(elements)
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def parse_command(data: bytes) -> dict[int, bytes]:
    """Decode a command set into element number -> raw value."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(data):
        _, elem, length = struct.unpack_from("<HHI", data, pos)
        out[elem] = data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return out


def command_us(fields: Mapping[int, bytes], elem: int) -> int | None:
    """An unsigned short (US) command element, or None when absent or malformed."""
    raw = fields.get(elem)
    if raw is None or len(raw) != 2:
        return None
    value: int = struct.unpack("<H", raw)[0]
    return value


def command_uid(fields: Mapping[int, bytes], elem: int) -> str:
    """A UI command element without its padding ("" when absent)."""
    return _text(fields.get(elem, b""))


class _Stream(Protocol):
    def read(self, size: int, /) -> bytes: ...


class PduReader:
    """Reads PDUs and PDVs from one connection, never holding more than one PDV header.

    Both ends use it: the SCU for A-ASSOCIATE answers and responses, the SCP for requests and
    data sets, which it streams PDV by PDV (:meth:`next_pdv`, :meth:`pdv_bytes`).

    Parameters
    ----------
    stream
        A buffered binary reader over the socket.
    sock
        The socket, to re-arm ``TCP_QUICKACK`` after every read (Linux, plain TCP): a peer that
        still uses Nagle's algorithm holds back its next small write until the previous one is
        acknowledged, which a delayed ACK stretches to 40 ms per message.
    peer
        What to call the other end in error messages (``"receiver"``, ``"sender"``).
    max_pdu
        Largest PDU read whole (all but P-DATA-TF on the SCP side).
    """

    def __init__(
        self,
        stream: _Stream,
        sock: socket.socket | None,
        *,
        peer: str,
        max_pdu: int,
    ) -> None:
        self._f = stream
        self._quickack = sock if HAS_QUICKACK and type(sock) is socket.socket else None
        self._peer = peer
        self._max_pdu = max_pdu
        self.pdu_left = 0  # bytes of the current P-DATA-TF PDU not yet consumed
        self.pdv_left = 0  # bytes of the current PDV not yet consumed
        self.pdv_context = 0
        self.pdv_control = 0

    def exact(self, size: int) -> bytes:
        """Exactly ``size`` bytes, or :class:`AssociationAbortedError`."""
        try:
            data = self._f.read(size)
        except TimeoutError as exc:
            raise AssociationAbortedError(
                f"no data from the {self._peer} within the timeout"
            ) from exc
        except OSError as exc:
            raise AssociationAbortedError(f"connection lost: {exc}") from exc
        if len(data) != size:
            raise AssociationAbortedError(f"the {self._peer} closed the connection")
        if self._quickack is not None:
            # Linux leaves quick-ACK mode on its own; re-arm it after each read.
            with contextlib.suppress(OSError):
                self._quickack.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data

    def pdu(self) -> tuple[int, bytes]:
        """Read a whole PDU: ``(type, body)``."""
        pdu_type, _, length = struct.unpack(">BBI", self.exact(6))
        return pdu_type, self._body(length)

    def _body(self, length: int) -> bytes:
        if length > self._max_pdu:
            raise AssociationAbortedError(
                f"PDU of {length} bytes from the {self._peer} is too large"
            )
        return self.exact(length)

    def next_pdv(self) -> tuple[int, bytes] | None:
        """Move to the next PDV; returns a non-P-DATA PDU ``(type, body)`` instead, if one comes."""
        while self.pdu_left == 0:
            pdu_type, _, length = struct.unpack(">BBI", self.exact(6))
            if pdu_type != P_DATA_TF:
                return pdu_type, self._body(length)
            self.pdu_left = length
        if self.pdu_left < 6:
            raise AssociationAbortedError("P-DATA-TF PDU with a truncated PDV")
        item_len, context, control = struct.unpack(">IBB", self.exact(6))
        if item_len < 2 or item_len + 4 > self.pdu_left:
            raise AssociationAbortedError("PDV length does not fit its P-DATA-TF PDU")
        self.pdu_left -= item_len + 4
        self.pdv_left = item_len - 2
        self.pdv_context = context
        self.pdv_control = control
        return None

    def pdv_bytes(self, size: int) -> bytes:
        """Up to ``size`` bytes of the current PDV."""
        n = min(size, self.pdv_left)
        data = self.exact(n)
        self.pdv_left -= n
        return data

    def skip_pdv(self) -> None:
        """Consume the rest of the current PDV without keeping it."""
        while self.pdv_left:
            self.pdv_bytes(min(self.pdv_left, 1 << 16))

    def command(self, max_size: int) -> tuple[int, dict[int, bytes]]:
        """The command set whose first PDV is current: ``(presentation context ID, fields)``.

        Raises
        ------
        AssociationAbortedError
            A data set fragment or another PDU inside the command, or more than ``max_size``
            bytes of it.
        """
        context = self.pdv_context
        parts: list[bytes] = []
        size = 0
        while True:
            if not self.pdv_control & PDV_COMMAND or self.pdv_context != context:
                raise AssociationAbortedError("data set fragment where a command was expected")
            size += self.pdv_left
            if size > max_size:
                raise AssociationAbortedError("command set too large")
            parts.append(self.pdv_bytes(self.pdv_left))
            if self.pdv_control & PDV_LAST:
                return context, parse_command(b"".join(parts))
            other = self.next_pdv()
            if other is not None:
                raise AssociationAbortedError(f"PDU type {other[0]} inside a command")
