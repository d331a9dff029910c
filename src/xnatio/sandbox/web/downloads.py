"""The files of a listing as one archive: ``format=zip``, ``tar`` or ``tar.gz``
(docs/xnat-behaviour.md §14.5).

XNAT names each entry after the file's URI, with the session's ID replaced by its label, the
resource's ID by its label and each scan's ID by ``<ID>-<type>`` (``structure`` chooses other
layouts). The archive is written to a temporary file in the spool folder and sent from there,
so a large session never sits in memory.
"""

from __future__ import annotations

import re
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from xnatio.sandbox.store.listings import ListedFile
from xnatio.sandbox.web.messages import App, HttpError, Request, Response, requested_format, table

__all__ = ["ARCHIVE_FORMATS", "file_listing"]

# format -> (content type, file name extension)
ARCHIVE_FORMATS = {
    "zip": ("application/zip", ".zip"),
    "tar": ("application/x-tar", ".tar"),
    "tar.gz": ("application/x-gtar", ".tar.gz"),  # Restlet's GNU tar type
}
_LISTING_FORMATS = ("json", "csv", *ARCHIVE_FORMATS)
_NOT_TYPE_CHARS = re.compile(r"\W")


def file_listing(
    app: App, req: Request, files: Callable[[], list[ListedFile] | None], not_found: str
) -> Response:
    """A file listing as a table, or its files as one archive.

    Parameters
    ----------
    files
        Reads the listing (``None`` when its parent is missing: 404 with ``not_found``).
    """
    fmt = requested_format(req, _LISTING_FORMATS)
    listed = files()
    if listed is None:
        raise HttpError(404, not_found)
    if fmt not in ARCHIVE_FORMATS:
        return table(req, [f.row for f in listed], "Files")
    name = _entry_namer(req.param("structure") or "default", fmt)
    entries = [(name(f), f.source) for f in listed if f.source.is_file()]  # as XNAT, skip lost
    if not entries:
        # XNAT: an archive with no entries is 404 (204 with accept-not-found=true).
        if req.flag("accept-not-found"):
            return Response(204, b"")
        raise HttpError(404, "Not Found")
    spooled = _write_archive(app.spool_dir, fmt, entries)
    content_type, extension = ARCHIVE_FORMATS[fmt]
    disposition = f'attachment; filename="{listed[0].session_label}{extension}"'
    return Response(
        200,
        b"",
        content_type,
        {"Content-Disposition": disposition},
        file=spooled,
        file_temporary=True,
    )


def _entry_namer(structure: str, fmt: str) -> Callable[[ListedFile], str]:
    """How entries are named (``structure``): ``default`` keeps the URI's levels,
    ``simplified`` drops ``resources`` and ``files``, ``improved`` starts at the scan."""
    if structure not in ("default", "simplified", "improved"):
        raise HttpError(400, f"The sandbox does not build structure={structure} archives.")

    def scan_folder(f: ListedFile, sep: str) -> str:
        if not f.scan_type or (structure == "improved" and fmt != "zip"):
            return f.scan_id  # XNAT leaves the type out of tar names (100-character limit)
        return f"{f.scan_id}{sep}{_NOT_TYPE_CHARS.sub('_', f.scan_type)}"

    def name(f: ListedFile) -> str:
        if structure == "improved":
            where = f"scans/{scan_folder(f, '_')}" if f.scan_id else "resources"
            return f"{where}/{f.resource}/{f.path}"
        where = f"scans/{scan_folder(f, '-')}/" if f.scan_id else ""
        if structure == "simplified":
            return f"{f.session_label}/{where}{f.resource}/{f.path}"
        return f"{f.session_label}/{where}resources/{f.resource}/files/{f.path}"

    return name


def _write_archive(spool_dir: Path, fmt: str, entries: list[tuple[str, Path]]) -> Path:
    """Write ``entries`` (name, stored file) into a temporary archive; entries are stored
    uncompressed in a zip, gzip-compressed as a whole in a tar.gz."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the caller deletes it once sent
        dir=spool_dir, prefix="download-", suffix=ARCHIVE_FORMATS[fmt][1], delete=False
    )
    path = Path(handle.name)
    try:
        with handle:
            if fmt == "zip":
                with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                    for name, source in entries:
                        zf.write(source, name)
            else:
                mode = "w:gz" if fmt == "tar.gz" else "w"
                with tarfile.open(fileobj=handle, mode=mode) as tf:  # type: ignore[call-overload]
                    for name, source in entries:
                        tf.add(str(source), arcname=name, recursive=False)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
