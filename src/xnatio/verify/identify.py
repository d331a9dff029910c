"""Which instance each stored file holds: its SOP Instance UID, from its name or its header.

XNAT keeps the name a client gave a file, or its own template name (docs/xnat-behaviour.md §4.3),
so names only sometimes say which instance a file holds:

- ``<SOPInstanceUID>.dcm``, the name xnatio gives every instance, says it outright;
- a template name ``<Study>-<Series>-<Instance>-<hash>.dcm`` carries a hash of the SOP Class
  and Instance UIDs: equal to the template name of a local instance, it is that instance; with
  a hash no local instance has, it is none of them;
- any other name (another client's entry path, ``S001_IM00001.dcm``) says nothing, and the file's
  header is read from the server (:func:`xnatio.verify.remote.remote_header`), in parallel.

So verification, ``--overwrite append`` and ``--resume`` decide by instance, whatever the names.
"""

from __future__ import annotations

import concurrent.futures as cf
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from xnatio.inventory import DicomFile
from xnatio.verify.bounded import bounded_map
from xnatio.verify.remote import RemoteReadError, remote_header
from xnatio.xnat.listings import ServerFile
from xnatio.xnat.naming import java_list_hash_base36, stored_name, template_name
from xnatio.xnat.session import XnatSession

__all__ = ["Identities", "identify", "identify_by_name"]

# xnatio's own name: a UID (PS3.5 9.1: digits and dots, at most 64 characters) plus ".dcm".
_UID_NAME = re.compile(r"((?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))+)\.dcm")
# XNAT's default template name; the study part is a UID, the hash base 36 (at most 7 digits
# for 32 bits); the series and instance parts may hold anything a safe name can.
_TEMPLATE = re.compile(r"[0-9]+(?:\.[0-9]+)+-.*-([0-9a-z]{1,7})\.dcm")


@dataclass
class Identities:
    """What each stored file of a listing holds.

    Attributes
    ----------
    uid
        Stored file -> SOP Instance UID, where the name or the header said.
    foreign
        Files that hold no instance of the source (a template hash no local instance has), or
        no DICOM instance at all (a header that does not parse): extra files.
    unreadable
        Files whose header could not be read from the server, and why: any of them could be
        one of the source's instances.
    headers_read
        How many headers were read from the server.
    """

    uid: dict[ServerFile, str] = field(default_factory=dict)
    foreign: set[ServerFile] = field(default_factory=set)
    unreadable: dict[ServerFile, str] = field(default_factory=dict)
    headers_read: int = 0


def identify_by_name(
    files: Sequence[DicomFile], server_files: Sequence[ServerFile]
) -> tuple[Identities, list[ServerFile]]:
    """Identify what the names reveal; return the files whose header must be read."""
    ids = Identities()
    by_name = {stored_name(f): f.sop_instance_uid for f in files}
    unknown: list[ServerFile] = []
    for sf in server_files:
        uid = by_name.get(sf.name)
        if uid is not None:
            ids.uid[sf] = uid
            continue
        m = _UID_NAME.fullmatch(sf.name)
        if m is not None and len(m.group(1)) <= 64:
            ids.uid[sf] = m.group(1)
        else:
            unknown.append(sf)
    if not unknown:
        return ids, []
    # Template names cost a Java-style hash per instance: only when some names are not ours.
    by_template = {template_name(f): f.sop_instance_uid for f in files}
    hashes = {java_list_hash_base36([f.sop_class_uid, f.sop_instance_uid]) for f in files}
    to_read: list[ServerFile] = []
    for sf in unknown:
        uid = by_template.get(sf.name)
        m = _TEMPLATE.fullmatch(sf.name)
        if uid is not None:
            ids.uid[sf] = uid
        elif m is not None and m.group(1) not in hashes:
            ids.foreign.add(sf)
        else:
            to_read.append(sf)
    return ids, to_read


def identify(
    xnat: XnatSession | None,
    files: Sequence[DicomFile],
    server_files: Sequence[ServerFile],
    *,
    workers: int = 8,
    cache: dict[ServerFile, str | None] | None = None,
) -> Identities:
    """Identify every stored file: by name where it tells, else by its header on the server.

    Parameters
    ----------
    xnat
        A logged-in session to read headers with; None reads none (those files are then
        unreadable).
    files
        The local instances.
    server_files
        A listing of the session (archived or prearchive).
    workers
        Headers read at once.
    cache
        Stored file -> UID (None: not an instance) from earlier reads, updated here; a file
        listed again with the same name, size and digest is not read twice.
    """
    ids, to_read = identify_by_name(files, server_files)
    known = cache if cache is not None else {}
    pending = [sf for sf in to_read if sf not in known]
    if pending and xnat is None:
        ids.unreadable.update((sf, "no server session to read it with") for sf in pending)
        pending = []

    def read(sf: ServerFile) -> tuple[ServerFile, str | None, str | None]:
        try:
            header = remote_header(xnat, sf.uri) if xnat is not None else ""
        except RemoteReadError as exc:
            return sf, None, str(exc)
        return sf, header.get("sop_instance") if isinstance(header, dict) else None, None

    if pending:
        size = min(workers, len(pending))
        with cf.ThreadPoolExecutor(size, thread_name_prefix="xio-id") as pool:
            for sf, uid, error in bounded_map(pool, read, pending, ahead=4 * size):
                if error is not None:
                    ids.unreadable[sf] = error
                else:
                    known[sf] = uid
                    ids.headers_read += 1
    for sf in to_read:
        if sf in ids.unreadable:
            continue
        uid = known.get(sf)
        if uid:
            ids.uid[sf] = uid
        else:
            ids.foreign.add(sf)
    return ids
