"""The sandbox's DICOM C-STORE receiver (SCP), behaving as XNAT's (xnat-server-behaviour.md §6).

Every received instance goes through the same per-file import as a REST upload, with no project
given, so XNAT's DICOM routing (PatientComments ``Project:P Subject:S Session:E``) decides where
it lands. Instances are stored as received: the dataset bytes are never decoded, only a file meta
header is put in front of them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
from typing import TYPE_CHECKING, Any

from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from xnatio.sandbox.store import ClientError, ImportParams

if TYPE_CHECKING:
    from pynetdicom.transport import ThreadedAssociationServer

    from xnatio.sandbox.server import Sandbox

__all__ = ["STATUS_CANNOT_UNDERSTAND", "STATUS_OUT_OF_RESOURCES", "DicomReceiver"]

log = logging.getLogger(__name__)

# pynetdicom's DUL reactor sleeps this long when idle (its default: 1 ms); shorter cuts the
# per-instance latency (measured 190 -> 260 instances/s on one association), while zero made
# associations in one process starve each other (design.md).
_LOOP_DELAY = 0.0002
STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000  # PS3.4 Annex B: error, cannot understand (XNAT: client error)
STATUS_OUT_OF_RESOURCES = 0xA700  # PS3.4 Annex B: refused, out of resources (XNAT: anything else)


class DicomReceiver:
    """A pynetdicom SCP that feeds a sandbox's store.

    Parameters
    ----------
    sandbox
        The owning sandbox (its store, faults and AE title are used).
    host, port
        Address to listen on; port 0 picks a free port.
    """

    def __init__(self, sandbox: Sandbox, host: str, port: int) -> None:
        self._sandbox = sandbox
        self._host = host
        self._requested_port = port
        self._server: ThreadedAssociationServer | None = None
        self.aet = sandbox.config.dicom_aet

    @property
    def port(self) -> int:
        """The port the SCP listens on."""
        if self._server is None:
            raise RuntimeError("the DICOM receiver is not running")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start listening (non-blocking)."""
        ae = AE(ae_title=self.aet)
        ae.require_called_aet = True  # an association calling another AE title is rejected
        ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
        ae.maximum_associations = 64
        ae.network_timeout = 120
        ae.dimse_timeout = 120
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, _on_echo),
            (evt.EVT_CONN_OPEN, _on_open),
        ]
        self._server = ae.start_server(
            (self._host, self._requested_port), block=False, evt_handlers=handlers
        )

    def stop(self) -> None:
        """Stop listening and end open associations."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_store(self, event: Any) -> int:
        faults = self._sandbox.faults
        abort, status = faults.take_scp_instance()
        if abort:
            event.assoc.abort()
            return STATUS_OUT_OF_RESOURCES
        if status is not None:
            return status
        try:
            data = _file_bytes(event)
        except Exception:
            log.debug("could not encode the received instance", exc_info=True)
            return STATUS_CANNOT_UNDERSTAND
        sop_uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "instance")
        sender = str(event.assoc.requestor.ae_title).strip()
        params = ImportParams(project=None, prevent_anon=True, sender_aet=sender, user="admin")
        try:
            with self._sandbox.store.begin_import(params) as batch:
                batch.ingest(io.BytesIO(data), f"{sop_uid}.dcm")
        except ClientError as exc:
            log.debug("C-STORE of %s refused: %s", sop_uid, exc)
            return STATUS_CANNOT_UNDERSTAND
        except Exception:
            log.debug("C-STORE of %s failed", sop_uid, exc_info=True)
            return STATUS_OUT_OF_RESOURCES
        return STATUS_SUCCESS


def _file_bytes(event: Any) -> bytes:
    """The received instance in DICOM file format, dataset bytes untouched."""
    meta = event.file_meta
    sender = str(event.assoc.requestor.ae_title).strip()
    if sender:
        meta.SourceApplicationEntityTitle = sender
    out = io.BytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)  # type: ignore[arg-type]
    out.write(event.encoded_dataset(include_meta=False))
    return out.getvalue()


def _on_echo(event: Any) -> int:
    return STATUS_SUCCESS


def _on_open(event: Any) -> None:
    # Answers are small; don't let Nagle hold them back waiting for the sender's ACK.
    event.assoc.dul._run_loop_delay = _LOOP_DELAY
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
