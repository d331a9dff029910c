"""Upload non-DICOM files into a session or scan resource (docs/xnat-behaviour.md §7).

A single file is sent as it is. A folder is streamed as one zip that XNAT unpacks
(``extract=true``), or, with ``per_file``, sent file by file by parallel workers. Files are always
sent with ``overwrite=true`` unless told otherwise, because XNAT otherwise keeps the old file,
answers 200 and lists the name under ``duplicates``. Afterwards the resource listing is compared
with the local names and sizes.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

from xnatio.config import XnatConfig
from xnatio.errors import InputError, ServerResponseError
from xnatio.options import check_seconds
from xnatio.progress import ProgressCallback, ProgressEvent, emit
from xnatio.transport.bodies import member_from_path, zip_body
from xnatio.xnat.naming import validate_labels
from xnatio.xnat.session import XnatSession, error_message

logger = logging.getLogger(__name__)

_RETRY = frozenset({429, 500, 502, 503, 504})


@dataclass
class ResourceUploadResult:
    """Outcome of :func:`upload_resource`.

    Attributes
    ----------
    success
        True when every file is in the resource with the right size.
    files, bytes
        Local files and bytes considered.
    duplicates
        Names the server reported as already present and kept (only with ``overwrite=False``).
    missing, wrong_size
        Local relative paths absent from the listing, or present with another size.
    errors
        Everything that went wrong, one line each.
    duration
        Seconds for the whole upload including the check.
    """

    success: bool
    files: int
    bytes: int
    duration: float = 0.0
    duplicates: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _local_files(path: Path) -> list[tuple[str, Path]]:
    """``(relative name, path)`` for a file, or for every regular file under a folder."""
    if path.is_file():
        return [(path.name, path)]
    if not path.is_dir():
        raise InputError(f"PATH {str(path)!r} does not exist; give a file or a folder")
    out: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            full = Path(root) / name
            if name.startswith(".") or not full.is_file():
                continue
            out.append((full.relative_to(path).as_posix(), full))
    if not out:
        raise InputError(f"folder {str(path)!r} holds no files to upload")
    return out


def _check_segment(kind: str, value: str) -> None:
    """Refuse a resource label or scan ID that cannot be one segment of a URL path.

    ``..`` and ``.`` would be resolved away (uploading somewhere else), ``/`` would add a
    segment, and text that is not valid Unicode (a name read from the file system) cannot be
    sent at all.
    """
    if value in ("", ".", "..") or "/" in value or not value.isprintable():
        shown = value.encode("utf-8", "backslashreplace").decode("utf-8")
        raise InputError(
            f"{kind} '{shown}' is not valid: not empty, '.' or '..', no '/' or control characters"
        )


def _resource_base(
    project: str, subject: str, session: str, resource: str, scan: str | None
) -> str:
    base = f"/data/projects/{project}/subjects/{subject}/experiments/{session}"
    if scan is not None:
        base += f"/scans/{quote(scan, safe='')}"
    return f"{base}/resources/{quote(resource, safe='')}/files"


def _duplicates(response: httpx.Response) -> list[str]:
    text = response.text.strip()
    if not text.startswith("{"):
        return []
    try:
        data = json.loads(text)
    except ValueError:
        return []
    dups = data.get("duplicates", []) if isinstance(data, dict) else []
    return [str(d) for d in dups]


def upload_resource(
    *,
    # The keywords every public function on a session takes (XnatConfig.keywords, Labels),
    # the same in each: a caller passes **config.keywords() and **labels.
    server: str,
    username: str,
    password: str,
    project: str,
    subject: str,
    session: str,
    resource: str,
    path: str | Path,
    scan: str | None = None,
    verify_tls: bool | str = True,
    overwrite: bool = True,
    per_file: bool = False,
    workers: int = 8,
    timeout: float = 10800.0,
    verify: bool = True,
    progress_callback: ProgressCallback | None = None,
) -> ResourceUploadResult:
    """Upload a file or a folder into a resource of an archived session (or one of its scans).

    Parameters
    ----------
    server, username, password, verify_tls
        The XNAT server and credentials.
    project, subject, session
        The session, which must already be archived.
    resource
        Resource label, for example ``NIFTI`` or ``QC``; created by XNAT if missing.
    path
        A file (sent as is) or a folder (zip with ``extract=true``, or file by file).
    scan
        Upload into this scan's resource instead of the session's.
    overwrite
        Replace files that already exist (default). With False, existing files are kept and
        reported as duplicates.
    per_file, workers
        Send a folder file by file with this many parallel requests instead of one zip.
    verify
        Compare the resource listing with the local names and sizes afterwards.
    progress_callback
        Receives :class:`~xnatio.progress.ProgressEvent` objects (bytes for a zip, files for
        ``per_file``).

    Returns
    -------
    ResourceUploadResult
        Success is True when every file is listed with its local size (files the server kept
        because of ``overwrite=False`` are reported as duplicates instead).

    Raises
    ------
    InputError
        Missing PATH, bad labels, or a session that does not exist (with a hint when it is still
        in the prearchive).
    """
    validate_labels(project, subject, session)
    _check_segment("resource label", resource)
    if scan is not None:
        _check_segment("scan ID", scan)
    check_seconds("timeout", timeout, minimum=0.001)
    local = Path(path)
    files = _local_files(local)
    started = time.monotonic()
    total = sum(p.stat().st_size for _, p in files)
    config = XnatConfig.given(server, username, password, verify_tls)
    result = ResourceUploadResult(success=False, files=len(files), bytes=total)
    base = _resource_base(project, subject, session, resource, scan)
    with XnatSession(config, timeout=timeout, max_connections=max(workers, 1) + 2) as xnat:
        xnat.login()
        _require_session(xnat, project, subject, session, scan)
        flags = {"inbody": "true", "overwrite": "true" if overwrite else "false"}
        if local.is_dir() and not per_file:
            members = [member_from_path(name, p) for name, p in files]
            sent = [0]

            def on_bytes(n: int) -> None:
                sent[0] += n
                emit(
                    progress_callback, ProgressEvent("uploading", 0, 1, "zip", sent[0], body.length)
                )

            body = zip_body(members, on_bytes=on_bytes)
            target = f"{base}/{quote(local.name or 'upload', safe='')}.zip"
            response = _put(
                xnat,
                target,
                {**flags, "extract": "true"},
                body,
                body.content_type,
                body.length,
            )
            _collect(result, response, f"{local.name}.zip")
        else:
            jobs = [(name, p) for name, p in files]
            with cf.ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
                futures = {
                    pool.submit(_send_file, xnat, base, flags, name, p): name for name, p in jobs
                }
                for done, fut in enumerate(cf.as_completed(futures), start=1):
                    name = futures[fut]
                    try:
                        _collect(result, fut.result(), name)
                    except ServerResponseError as exc:
                        result.errors.append(f"{name}: {exc.message}")
                    emit(progress_callback, ProgressEvent("uploading", done, len(jobs), name))
        if verify:
            _check(xnat, base, files, result)
    result.duration = time.monotonic() - started
    result.success = not (result.errors or result.missing or result.wrong_size)
    return result


def _require_session(
    xnat: XnatSession, project: str, subject: str, session: str, scan: str | None
) -> None:
    path = f"/data/projects/{project}/subjects/{subject}/experiments/{session}"
    response = xnat.request("GET", path, params={"format": "json"})
    if response.status_code == 200:
        if scan is not None:
            scans = xnat.request(
                "GET", f"{path}/scans/{quote(scan, safe='')}", params={"format": "json"}
            )
            if scans.status_code == 404:
                raise InputError(
                    f"scan {scan} does not exist in session {project}/{subject}/{session}"
                )
        return
    if response.status_code not in (403, 404):
        xnat.check(response, f"looking up session {session}")
    hint = ""
    rows = xnat.request("GET", f"/data/prearchive/projects/{project}", params={"format": "json"})
    if rows.status_code == 200:
        for row in rows.json().get("ResultSet", {}).get("Result", []):
            if row.get("name") == session:
                hint = (
                    f"; it is still in the prearchive (status {row.get('status', '?')}): archive "
                    "it first, since XNAT only accepts resources on archived sessions"
                )
                break
    raise InputError(f"session {project}/{subject}/{session} does not exist on the server{hint}")


def _put(
    xnat: XnatSession,
    target: str,
    params: dict[str, str],
    content: Iterable[bytes],
    content_type: str,
    length: int,
) -> httpx.Response:
    headers = {"Content-Type": content_type, "Content-Length": str(length)}
    error = ""
    for attempt in range(1, 6):
        try:
            response = xnat.request("PUT", target, params=params, content=content, headers=headers)
        except httpx.TransportError as exc:
            error = f"connection error: {exc}"
        else:
            if response.status_code not in _RETRY:
                return xnat.check(response, f"uploading to {target}", ok=(200, 201))
            error = f"{response.status_code} {error_message(response)}"
        time.sleep(min(30.0, 0.5 * 2**attempt))
    raise ServerResponseError(f"uploading to {target} failed after 5 attempts: {error}")


class _FileContent:
    """A file's bytes as a re-iterable request body."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk


def _send_file(
    xnat: XnatSession, base: str, flags: dict[str, str], name: str, path: Path
) -> httpx.Response:
    target = f"{base}/{quote(name)}"
    return _put(
        xnat, target, flags, _FileContent(path), "application/octet-stream", path.stat().st_size
    )


def _collect(result: ResourceUploadResult, response: httpx.Response, name: str) -> None:
    dups = _duplicates(response)
    if dups:
        result.duplicates.extend(dups)
        logger.warning("%s: the server kept existing files: %s", name, ", ".join(dups))


def _check(
    xnat: XnatSession, base: str, files: list[tuple[str, Path]], result: ResourceUploadResult
) -> None:
    response = xnat.check(
        xnat.request("GET", base, params={"format": "json"}), "listing the resource"
    )
    listed: dict[str, int] = {}
    for row in response.json()["ResultSet"]["Result"]:
        uri = str(row.get("URI", ""))
        rel = uri.split("/files/", 1)[1] if "/files/" in uri else str(row.get("Name", ""))
        size = str(row.get("Size", ""))
        listed[rel] = int(size) if size.isdigit() else -1
    dup_set = set(result.duplicates)
    for name, p in files:
        if name not in listed:
            result.missing.append(name)
        elif listed[name] != p.stat().st_size and name not in dup_set:
            result.wrong_size.append(name)
