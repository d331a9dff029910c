"""The import service over HTTP, ``POST /data/services/import`` (docs/xnat-behaviour.md §3):
parameters, the body's form, the handler (DICOM-zip or gradual-DICOM), the commit, the answer.

Each file goes through the store's per-file step (:mod:`xnatio.sandbox.store.imports`); this
module decides what the files are and what the client is told.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import IO, BinaryIO, cast

from xnatio.sandbox.bodies import (
    ArchiveEntry,
    ConnectionLostError,
    UploadError,
    archive_format,
    iter_archive,
    read_multipart,
    single_file,
)
from xnatio.sandbox.ingest import model_of
from xnatio.sandbox.store import ClientError, ImportBatch, ImportParams
from xnatio.sandbox.web.messages import App, HttpError, Request, Response, data_uri, true, uri_list

__all__ = ["import_service"]

log = logging.getLogger(__name__)

_IMPORT_HANDLERS = {"DICOM-zip", "gradual-DICOM", "SI", "XAR", "inbox", "automation"}
_DICOM_TYPES = ("application/dicom", "application/x-xmirc", "application/x-xmirc-dcm")
# §3.2: the name XNAT gives an in-body upload, from its Content-Type.
_INBODY_NAMES = {
    "application/zip": "upload.zip",
    "application/x-tar": "upload.tar",
    "application/x-gtar": "upload.tar.gz",
    "application/x-gzip": "upload.gzip",
    "application/octet-stream": "upload",
    "application/dicom": "upload.dcm",
}


def import_service(app: App, req: Request) -> Response:
    """``POST /data/services/import``; other methods answer 405."""
    if req.method != "POST":
        raise HttpError(405, "Method Not Allowed", {"Allow": "POST"})
    return _ImportRequest(app, req).run()


class _ImportRequest:
    """One ``POST /data/services/import``: parameters, body form, entries, commit, answer."""

    def __init__(self, app: App, req: Request) -> None:
        self.req = req
        self.store = app.store
        self.spool = app.spool_dir
        self.model = model_of(app)  # the ingest model charges each file, when there is one
        self.params: dict[str, list[str]] = {k: list(v) for k, v in req.query.items()}
        self._cleanup: list[Path] = []

    def first(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[0] if values else None

    def run(self) -> Response:
        try:
            return self._run()
        finally:
            for path in self._cleanup:
                path.unlink(missing_ok=True)

    def _run(self) -> Response:
        handler_name = self.first("import-handler")
        if handler_name is None:
            handler_name = "gradual-DICOM" if self.req.media_type in _DICOM_TYPES else "DICOM-zip"
        if handler_name not in _IMPORT_HANDLERS:
            raise HttpError(404, f"Unknown importer implementation specified: {handler_name}")
        if handler_name not in ("DICOM-zip", "gradual-DICOM"):
            raise HttpError(400, f"The sandbox does not implement the {handler_name} importer.")
        stream, name = self._upload()
        with contextlib.closing(stream):
            if handler_name == "DICOM-zip":
                return self._dicom_zip(stream, name)
            return self._gradual(stream, name)

    def _upload(self) -> tuple[IO[bytes], str]:
        """The uploaded file and its name: the one file of a multipart form, or the body (§3.2)."""
        req = self.req
        media = req.media_type
        inbody = true(self.first("inbody"))
        if media == "multipart/form-data":
            if inbody:
                raise HttpError(
                    406,
                    "In-body File posts must include the file directly as the body of the "
                    "message (not as part of multi-part form data).",
                )
            form = read_multipart(req.body, str(req.headers["Content-Type"]), self.spool)
            self._cleanup.extend(f.path for f in form.files)
            for key, values in form.fields.items():
                if key == "reference":
                    raise HttpError(400, "The 'reference' parameter is not allowed in a form.")
                self.params.setdefault(key, values)
            upload = single_file(form)
            return upload.path.open("rb"), upload.filename
        if inbody or media in _INBODY_NAMES:
            size = req.body.length if req.body.length is not None else -1
            if size < 1 and media != "application/zip":
                raise HttpError(
                    400,
                    "In-body File posts must include the file directly as the body of the "
                    f"message. In this case, the request entity size is {size} but the media "
                    "type is not application/zip (i.e. streaming compressed upload).",
                )
            return cast(IO[bytes], req.body), _INBODY_NAMES.get(media, "upload.unsupported")
        raise HttpError(400, "Unable to identify upload format.")

    def _import_params(self, zip_handler: bool, dest: dict[str, str]) -> ImportParams:
        def pick(lower: str, upper: str) -> str | None:
            if zip_handler and self.first(lower):
                return self.first(lower)
            return self.first(upper) or None

        auto: bool | None = None
        if true(self.first("AA")) or true(self.first("auto-archive")):
            auto = True
        if "auto_archive" in dest:
            auto = dest["auto_archive"] == "true"
        return ImportParams(
            project=dest.get("project") or pick("project", "PROJECT_ID"),
            subject=dest.get("subject") or pick("subject", "SUBJECT_ID"),
            session=dest.get("session") or pick("session", "EXPT_LABEL"),
            direct_archive=true(self.first("Direct-Archive")),
            rename=true(self.first("rename")),
            prevent_auto_commit=true(self.first("prevent_auto_commit")),
            prevent_anon=true(self.first("prevent_anon")),
            source=self.first("SOURCE"),
            auto_archive=auto,
            visit=self.first("VISIT"),
            subtype=self.first("SUBTYPE"),
            user=self.req.user or "admin",
        )

    def _dest(self) -> dict[str, str]:
        """``dest``: an archive path commits and archives, a prearchive path only commits."""
        dest = self.first("dest")
        if not dest:
            return {}
        parts = [p for p in dest.split("/") if p]
        if parts[:1] in (["data"], ["REST"]):
            parts = parts[1:]
        out: dict[str, str] = {}
        if parts in (["archive"], ["prearchive"]):  # commit, taking the rest from the parameters
            return {"auto_archive": "true" if parts == ["archive"] else "false"}
        if parts[:2] == ["archive", "projects"] and len(parts) in (3, 5, 7):
            out["auto_archive"] = "true"
            keys = {3: "project", 5: "subject", 7: "session"}
            names = {4: "subjects", 6: "experiments"}
            for i, part in enumerate(parts[2:], start=3):
                if i in names and parts[i - 1] != names[i]:
                    raise HttpError(400, "Parameter dest format error")
                if i in keys:
                    out[keys[i]] = part
            return out
        if parts[:2] == ["prearchive", "projects"] and len(parts) in (3, 4, 5):
            out["auto_archive"] = "false"
            out["project"] = parts[2]
            if len(parts) == 5:
                out["session"] = parts[4]
            return out
        raise HttpError(400, "Parameter dest format error")

    def _dicom_zip(self, stream: IO[bytes], name: str) -> Response:
        """DICOM-zip (§3.4, last part): every entry, URIs without repeats, then the commit."""
        fmt = archive_format(name)
        if fmt not in ("ZIP", "TAR", "TGZ"):
            raise HttpError(400, f"Unsupported format {fmt}")
        dest = self._dest()
        action = self.first("action")
        ignore_text = self.first("Ignore-Unparsable")
        ignore = true(ignore_text) if ignore_text is not None else action == "commit"
        params = self._import_params(True, dest)
        uris: dict[str, None] = {}
        last_error: ClientError | None = None
        body = self.req.body
        with self.store.begin_import(params) as batch:
            for entry in iter_archive(stream, fmt, self.spool):
                uri, error = self._ingest(batch, entry)
                if error is not None:
                    if not ignore:
                        raise error
                    last_error = error
                elif uri:
                    uris[uri] = None
            if body.dropped or body.lost:
                raise ConnectionLostError("body ended early")
        if not uris and last_error is not None:
            raise last_error
        result = list(uris)
        if (dest or action == "commit") and result:
            result = self.store.commit_import(
                result,
                overwrite=self.first("overwrite"),
                overwrite_files=true(self.first("overwrite_files")),
                dest=self.first("dest"),
                auto_archive=bool(params.auto_archive),
            )
        return self._answer(result)

    def _gradual(self, stream: IO[bytes], name: str) -> Response:
        params = self._import_params(False, {})
        with self.store.begin_import(params) as batch:
            uri, error = self._ingest(batch, ArchiveEntry(name, stream))
        if error is not None:
            raise error
        return self._answer([uri] if uri else [])

    def _ingest(
        self, batch: ImportBatch, entry: ArchiveEntry
    ) -> tuple[str | None, ClientError | None]:
        """Send one entry to the store; client errors come back as data, for Ignore-Unparsable."""
        body = self.req.body
        if entry.error is not None or entry.stream is None:
            return None, ClientError(f"unable to read DICOM object {entry.name}: {entry.error}")
        error: ClientError | None = None
        try:
            with self.model.file() if self.model else contextlib.nullcontext():
                uri = batch.ingest(cast(BinaryIO, entry.stream), entry.name)
        except ClientError as exc:
            error, uri = exc, None
        except (ConnectionLostError, UploadError):
            raise
        except Exception as exc:
            if body.dropped or body.lost:
                raise ConnectionLostError("body ended early") from exc
            # §3.4 step 13: every per-file failure surfaces as a client error.
            log.debug("entry %s failed", entry.name, exc_info=True)
            error, uri = ClientError(f"unable to read DICOM object {entry.name}"), None
        if body.dropped or body.lost:
            raise ConnectionLostError("body ended early")
        return (str(uri) if uri else None), error

    def _answer(self, uris: list[str]) -> Response:
        """One URI as text/plain when the client asks for text, else a text/uri-list."""
        accept = str(self.req.headers.get("Accept", ""))
        fmt = (self.first("format") or "").lower()
        wants_text = fmt == "txt" or (not fmt and accept.split(",", 1)[0].strip() == "text/plain")
        if wants_text and len(uris) == 1:
            return Response(200, data_uri(uris[0]).encode(), "text/plain")
        return uri_list(uris)
