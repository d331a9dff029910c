"""The import service's per-file step: one DICOM object into its prearchive or Direct-Archive
session (docs/xnat-behaviour.md §3.4 steps 1-14).

The header is read and routed without the lock; the lock is held once to find or open the
session row, choose the file name and take the per-file lock, and once more to record the
written file. Bytes are copied without it, and the index is committed once per request
(:class:`ImportBatch`), not per file.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from xnatio.sandbox.dicom_header import (
    DicomHeader,
    HeaderError,
    read_header,
    scan_folder_name,
    template_file_name,
)
from xnatio.sandbox.routing import RoutingRules, clean_label, route
from xnatio.sandbox.store.anonymize import anonymize_received
from xnatio.sandbox.store.catalog import Catalog
from xnatio.sandbox.store.config import RoutingConfig
from xnatio.sandbox.store.core import Part
from xnatio.sandbox.store.direct_archive import DirectArchive
from xnatio.sandbox.store.index import Index
from xnatio.sandbox.store.inflight import FileKey
from xnatio.sandbox.store.model import ClientError, ImportParams
from xnatio.sandbox.store.prearchive import Prearchive

__all__ = ["ImportBatch", "Importer"]

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class _Slot(NamedTuple):
    """Where one object goes: its file key, its session folder and the URI to answer with."""

    key: FileKey
    session_dir: str
    uri: str


@dataclass(eq=False, repr=False)
class Importer(Part):
    """Imports DICOM objects into sessions.

    Attributes
    ----------
    catalog
        Which projects exist (routing and the ``project`` parameter).
    config
        The routing rules in force.
    prearchive, direct
        Find or open the session row a file belongs to.
    """

    catalog: Catalog
    config: RoutingConfig
    prearchive: Prearchive
    direct: DirectArchive

    def ingest(self, params: ImportParams, stream: BinaryIO, entry_name: str) -> str | None:
        """Import one DICOM object; see :meth:`ImportBatch.ingest`."""
        rules = self.config.rules
        try:
            hdr, prefix = read_header(stream, rules.tags)
        except (HeaderError, OSError) as exc:
            raise ClientError(f"unable to read DICOM object {entry_name}") from exc
        if not hdr.sop_class_uid:
            raise ClientError(f"object {entry_name} contains no SOP Class UID")
        if not hdr.sop_instance_uid:
            raise ClientError(f"object {entry_name} contains no SOP Instance UID")
        slot = self._open_slot(params, hdr, rules, entry_name)
        self._write(slot, hdr, prefix, stream, entry_name)
        return slot.uri

    def _open_slot(
        self, params: ImportParams, hdr: DicomHeader, rules: RoutingRules, entry_name: str
    ) -> _Slot:
        """Route the object (§3.4 steps 2, 5), find or open its session (step 6), name the file
        (§4.3) and take the per-file lock (step 10)."""
        routing = route(hdr, self.catalog.project_exists, rules)
        project = routing.project
        if params.project and self.catalog.project_exists(params.project):
            project = params.project
        label = clean_label(params.session or "") or routing.session
        subject = clean_label(params.subject or "") or routing.subject
        scan = scan_folder_name(hdr)
        with self._index.lock:
            sess = None
            if params.direct_archive and project is not None:
                sess = self.direct.get_or_create(project, hdr, label, subject, params)
            if sess is None:
                sess = self.prearchive.get_or_create(
                    project, hdr, label, subject, params, routing.auto_archive
                )
            name = self._choose_name(sess["n"], scan, hdr, entry_name, params.rename)
            key = (int(sess["n"]), scan, name)
            self._inflight.claim_file(key)
            uri = self.direct.uri(sess) if sess["kind"] == "da" else self.prearchive.uri(sess)
            return _Slot(key, str(sess["dir"]), uri)

    def _write(
        self, slot: _Slot, hdr: DicomHeader, prefix: bytes, stream: BinaryIO, entry_name: str
    ) -> None:
        """Write the file and record it; every failure is "unable to read DICOM object" (§3.4
        step 13)."""
        sn, scan, name = slot.key
        recorded = False
        try:
            final = self._files.path(slot.session_dir, "SCANS", scan, "DICOM", name)
            size, md5 = self._files.write(final, prefix, stream)
            size, md5, hdr = anonymize_received(self.core, sn, final, size, md5, hdr)  # step 12
            with self._index.lock:
                self._index.execute(
                    "INSERT OR REPLACE INTO session_files VALUES(?,?,?,?,?,?,?,?,?,?)",
                    (
                        sn,
                        scan,
                        name,
                        size,
                        md5,
                        hdr.sop_instance_uid,
                        hdr.sop_class_uid,
                        hdr.series_instance_uid,
                        hdr.series_description,
                        hdr.modality,
                    ),
                )
                self._inflight.release_file(slot.key)
                recorded = True
        except Exception as exc:
            log.warning("import of %s failed: %s", entry_name, exc)
            raise ClientError(f"unable to read DICOM object {entry_name}") from exc
        finally:
            if not recorded:
                with self._index.lock:
                    self._inflight.release_file(slot.key)
                    # A session this failed write would leave without any file is not kept:
                    # XNAT builds a session from the files in its folder, and an empty one
                    # must not be built, archived empty, and then block the data sent again.
                    self.prearchive.drop_if_empty(sn)

    def _choose_name(
        self, session_n: int, scan: str, hdr: DicomHeader, entry_name: str, rename: bool
    ) -> str:
        """The stored file name (§4.3): the entry's own name made safe, or XNAT's template
        name when ``rename`` is set, the name is unusable, or another object holds it."""
        template = template_file_name(hdr)
        if rename:
            return template
        # XNAT keeps every cleaned name, ``../x.dcm`` as ``.._x.dcm``; one made only of dots
        # would name the scan folder itself (XNAT fails there), so it gets the template name.
        name = _SAFE_NAME.sub("_", entry_name)
        if not name.strip("."):
            return template
        row = self._index.row(
            "SELECT sop_uid, sop_class FROM session_files WHERE session_n=? AND scan=? AND name=?",
            (session_n, scan, name),
        )
        if row is not None and (row[0], row[1]) != (hdr.sop_instance_uid, hdr.sop_class_uid):
            return template
        return name


class ImportBatch:
    """One import request (an HTTP request or one SCP instance); a context manager.

    Use :meth:`ingest` for each file; the index is committed once when the context exits.
    """

    def __init__(self, importer: Importer, index: Index, params: ImportParams) -> None:
        self._importer = importer
        self._index = index
        self.params = params

    def ingest(self, stream: BinaryIO, entry_name: str) -> str | None:
        """Import one DICOM object (docs/xnat-behaviour.md §3.4 steps 1-14).

        Parameters
        ----------
        stream
            The object's bytes from the first byte; read to the end.
        entry_name
            The archive entry path (or file name); it names the stored file when
            ``rename`` is false.

        Returns
        -------
        str or None
            ``/prearchive/projects/P/TS/FOLDER`` or ``/xapi/direct-archive/P/UID/label``;
            ``None`` if the object was filtered (never, in the sandbox).

        Raises
        ------
        ClientError
            With the §3.7 messages (unreadable object, missing UIDs, concurrent same-file
            sends, and every write failure as "unable to read DICOM object <name>").
        """
        return self._importer.ingest(self.params, stream, entry_name)

    def __enter__(self) -> ImportBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._index.commit()
