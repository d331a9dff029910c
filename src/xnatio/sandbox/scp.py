"""The sandbox's DICOM C-STORE receiver (SCP), behaving as XNAT's (docs/xnat-behaviour.md §6).

Every received instance goes through the same per-file import as a REST upload, with no project
given, so XNAT's DICOM routing (PatientComments ``Project:P Subject:S Session:E``) decides where
it lands. Instances are stored as received: the data set bytes are never decoded; a file meta
header is put in front of them and the whole is streamed from the connection into the import.

The network side is :class:`xnatio.dimse.server.StorageServer` (a thread per association, no
polling), which replaced pynetdicom here: see that module for why and the measurements.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

from xnatio.dicom.dataset import file_meta_header
from xnatio.dimse.client import StoreResponse
from xnatio.dimse.pdu import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from xnatio.dimse.server import AbortAssociation, DataSetStream, StorageServer, StoreRequest
from xnatio.sandbox.store import ClientError, ImportParams

if TYPE_CHECKING:
    from xnatio.sandbox.server import Sandbox

__all__ = ["STATUS_CANNOT_UNDERSTAND", "STATUS_OUT_OF_RESOURCES", "DicomReceiver"]

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000  # PS3.4 Annex B: error, cannot understand (XNAT: client error)
STATUS_OUT_OF_RESOURCES = 0xA700  # PS3.4 Annex B: refused, out of resources (XNAT: anything else)


class DicomReceiver:
    """The sandbox's Storage SCP, feeding its store.

    Parameters
    ----------
    sandbox
        The owning sandbox (its store, faults and AE title are used).
    host, port
        Address to listen on; port 0 picks a free port.
    ssl_context
        Serve DICOM over TLS (PS3.15 annex B.1) with this server-side context.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._sandbox = sandbox
        self.aet = sandbox.config.dicom_aet
        associations = sandbox.dicom_associations
        self._server = StorageServer(
            self.aet,
            self._on_store,
            host=host,
            port=port,
            ssl_context=ssl_context,
            on_open=associations.up,
            on_close=associations.down,
        )
        self._running = False

    @property
    def port(self) -> int:
        """The port the SCP listens on."""
        if not self._running:
            raise RuntimeError("the DICOM receiver is not running")
        return self._server.port

    def start(self) -> None:
        """Start listening (non-blocking)."""
        self._server.start()
        self._running = True

    def stop(self) -> None:
        """Stop listening and end open associations."""
        if self._running:
            self._running = False
            self._server.stop()

    def _on_store(self, request: StoreRequest, stream: DataSetStream) -> StoreResponse:
        abort, status = self._sandbox.faults.take_scp_instance()
        if abort:
            raise AbortAssociation
        if status is not None:
            return StoreResponse(status)
        stream.prepend(
            file_meta_header(
                request.sop_class_uid,
                request.sop_instance_uid,
                request.transfer_syntax_uid,
                implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                implementation_version=IMPLEMENTATION_VERSION,
                source_aet=request.calling_aet,
            )
        )
        sop_uid = request.sop_instance_uid or "instance"
        # prevent_anon off: XNAT's default receiver anonymises (docs/xnat-behaviour.md §6.1).
        params = ImportParams(
            project=None, prevent_anon=False, sender_aet=request.calling_aet, user="admin"
        )
        try:
            with self._sandbox.store.begin_import(params) as batch:
                batch.ingest(stream, f"{sop_uid}.dcm")  # type: ignore[arg-type]
        except ClientError as exc:
            log.debug("C-STORE of %s refused: %s", sop_uid, exc)
            return StoreResponse(STATUS_CANNOT_UNDERSTAND, str(exc))
        except Exception as exc:
            log.debug("C-STORE of %s failed", sop_uid, exc_info=True)
            return StoreResponse(STATUS_OUT_OF_RESOURCES, str(exc))
        # When the association broke mid data set, the server aborts it and answers nothing.
        return StoreResponse(STATUS_SUCCESS)
