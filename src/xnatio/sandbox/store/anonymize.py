"""XNAT's anonymisation on the server: the site-wide and project scripts of the config service
(tool ``anon``), and their application to each DICOM object the sandbox receives.

XNAT keeps the scripts in its config service (the site's under path ``script``, a project's
under ``/projects/{P}``), each with a status, ``enabled`` or ``disabled``; a project without a
script counts as disabled. It applies the site script to every object as it is received, after
writing it (docs/xnat-behaviour.md §3.4 step 12), unless the import asked ``prevent_anon`` (a
DICOM receiver asks it when its anonymisation is off); the project script when the session is
archived, unless the session's ``prevent_anon`` is set. Each application appends an item to
De-identification Method Code Sequence (0012,0064): Code Value the script's config ID, Coding
Scheme Designator ``XNAT``, version ``1.0``, Code Meaning ``XNAT DicomEdit 6 Script``.

The sandbox applies both scripts as the object arrives, the project script right after the
site script: the stored bytes are the same as XNAT's unless the session is moved or relabelled
between receipt and archive. A script that fails on an object, or rejects it, fails its import
("unable to read DICOM object", §3.4 step 13); XNAT drops a rejected object silently instead.
The scripts are the client's DicomEdit 6 engine (:mod:`xnatio.anonymize`), which is also what
xnatio uses on the way out: what the sandbox stores is what XNAT would.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from xnatio.anonymize import XNAT_DEFAULT_SCRIPT, AnonymizeError, Anonymizer, Script
from xnatio.sandbox.dicom_header import DicomHeader, read_header
from xnatio.sandbox.store.core import Core
from xnatio.sandbox.store.index import Index
from xnatio.sandbox.store.model import ClientError, now_str

__all__ = ["DEFAULT_SCRIPT", "AnonScripts", "anon_scripts", "anonymize_received"]

#: XNAT's built-in default site script (``GET /xapi/anonymize/default``).
DEFAULT_SCRIPT = XNAT_DEFAULT_SCRIPT
_SITE = "anon/script"
_RECORD = (
    ("(0008,0100)", "{id}"),
    ("(0008,0102)", "XNAT"),
    ("(0008,0103)", "1.0"),
    ("(0008,0104)", "XNAT DicomEdit 6 Script"),
)


def _key(project: str | None) -> str:
    return _SITE if project is None else f"anon/projects/{project}"


@dataclass(frozen=True)
class _Entry:
    """One script as the config service holds it."""

    contents: str
    status: str
    version: int
    config_id: int
    create_date: str
    user: str


class AnonScripts:
    """The site's and the projects' anonymisation scripts, kept in the index's ``config`` table.

    Entries are cached in memory (an import looks them up without touching the index); the
    site script's ``enabled`` flag is XNAT's site preference, true by default.
    """

    def __init__(self, index: Index) -> None:
        self._index = index
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry | None] = {}
        self._compiled: dict[tuple[str, int], Script] = {}
        self._configured: bool | None = None

    @property
    def configured(self) -> bool:
        """Whether any script was ever stored (else an import has nothing to look up)."""
        if self._configured is None:
            with self._index.lock:
                row = self._index.row("SELECT 1 FROM config WHERE key LIKE 'anon/%' LIMIT 1")
            self._configured = row is not None
        return self._configured

    def info(self, project: str | None = None) -> dict[str, str] | None:
        """The config-service record of the site (``project`` None) or a project's script:
        ``contents``, ``status``, ``version``, ``id``, ``create_date``, ``user``; None if never
        set."""
        e = self._entry(_key(project))
        if e is None:
            return None
        return {
            "contents": e.contents,
            "status": e.status,
            "version": str(e.version),
            "id": str(e.config_id),
            "create_date": e.create_date,
            "user": e.user,
        }

    def put(self, project: str | None, text: str, *, user: str = "admin") -> bool:
        """Store a new version of a script (enabled); False when the text is unchanged."""
        key = _key(project)
        old = self._entry(key)
        if old is not None and old.contents == text:
            return False
        status = old.status if old is not None and project is None else "enabled"
        self._save(key, _Entry(text, status, (old.version if old else 0) + 1, self._next_id(),
                               now_str(), user))  # fmt: skip
        return True

    def set_enabled(self, project: str | None, enabled: bool, *, user: str = "admin") -> None:
        """Enable or disable a script; a project script must exist (ClientError 500 as XNAT)."""
        key = _key(project)
        old = self._entry(key)
        if old is None:
            if project is not None:
                raise ClientError(
                    f"Couldn't find the site configuration for tool anon and path {key[5:]}", 500
                )
            old = _Entry("", "enabled", 0, self._next_id(), now_str(), user)
        status = "enabled" if enabled else "disabled"
        self._save(key, _Entry(old.contents, status, max(old.version, 1), old.config_id,
                               old.create_date, user))  # fmt: skip

    def in_force(self, project: str | None) -> list[tuple[Script, int]]:
        """The scripts XNAT applies to an object of ``project`` (site, then project), with
        their config IDs; a script that does not compile raises :class:`ScriptError`."""
        found = []
        for key in (_SITE, *(() if project is None else (_key(project),))):
            e = self._entry(key)
            if e is None or e.status != "enabled" or not e.contents.strip():
                continue
            script = self._compiled.get((key, e.version))
            if script is None:
                what = "site script" if key == _SITE else f"project {project} script"
                script = Script.parse(e.contents, source=what)
                self._compiled[(key, e.version)] = script
            found.append((script, e.config_id))
        return found

    def _entry(self, key: str) -> _Entry | None:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        with self._index.lock:
            row = self._index.row("SELECT value FROM config WHERE key=?", (key,))
        entry = None if row is None else _Entry(**json.loads(row[0]))
        with self._lock:
            self._cache[key] = entry
        return entry

    def _save(self, key: str, entry: _Entry) -> None:
        with self._index.lock:
            self._index.execute(
                "INSERT OR REPLACE INTO config VALUES(?,?)", (key, json.dumps(entry.__dict__))
            )
            self._index.commit()
        with self._lock:
            self._cache[key] = entry
            self._configured = True

    def _next_id(self) -> int:
        with self._index.lock:
            row = self._index.row("SELECT value FROM config WHERE key='anon#next-id'")
            n = 1 if row is None else int(row[0])
            self._index.execute("INSERT OR REPLACE INTO config VALUES('anon#next-id',?)", (n + 1,))
        return n


_BY_INDEX: weakref.WeakKeyDictionary[Index, AnonScripts] = weakref.WeakKeyDictionary()
_BY_INDEX_LOCK = threading.Lock()


def anon_scripts(index: Index) -> AnonScripts:
    """The scripts of the store whose index is ``index`` (one object per store)."""
    with _BY_INDEX_LOCK:
        found = _BY_INDEX.get(index)
        if found is None:
            found = _BY_INDEX[index] = AnonScripts(index)
        return found


def anonymize_received(
    core: Core, session_n: int, path: Path, size: int, md5: str, hdr: DicomHeader
) -> tuple[int, str, DicomHeader]:
    """Apply the scripts in force to an object just written to ``path`` (§3.4 step 12).

    Returns the file's size, MD5 and header afterwards (unchanged when no script applies).

    Raises
    ------
    ClientError
        A script does not compile, cannot be applied, or rejects the object.
    """
    scripts = anon_scripts(core.index)
    if not scripts.configured:
        return size, md5, hdr
    with core.index.lock:
        row = core.index.session(session_n)
    if row is None or row["prevent_anon"]:
        return size, md5, hdr
    project = None if row["project"] == "Unassigned" else str(row["project"])
    variables = {
        "project": project or "Unassigned",
        "subject": str(row["subject"]),
        "session": str(row["folder"]),
    }
    try:
        in_force = scripts.in_force(project)
        for script, config_id in in_force:
            _apply(path, script, config_id, variables)
    except (AnonymizeError, OSError) as exc:
        raise ClientError(f"anonymisation failed: {exc}") from exc
    if not in_force:
        return size, md5, hdr
    return _describe(path)


def _apply(path: Path, script: Script, config_id: int, variables: dict[str, str]) -> None:
    """Apply one script and record it, as XNAT's mizer does with ``record=true``."""
    items = _record_items(path)
    record = 'version "6.1"\n' + "".join(
        f'(0012,0064)[{items}]/{tag} := "{value.format(id=config_id)}"\n' for tag, value in _RECORD
    )
    anon = Anonymizer([script, Script.parse(record, source="record")], variables)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.anon")
    try:
        with open(path, "rb") as src:
            edit = anon.plan(src, key=path.name)
            src.seek(0)
            with open(temp, "wb") as out:
                for chunk in edit.chunks(src):
                    out.write(chunk)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _record_items(path: Path) -> int:
    """Items of De-identification Method Code Sequence (0012,0064) in the file now."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[0x00120064], force=True)
    seq: Any = ds.get(0x00120064)
    return len(seq.value) if seq is not None and seq.VR == "SQ" else 0


def _describe(path: Path) -> tuple[int, str, DicomHeader]:
    import hashlib

    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        hdr, _ = read_header(f)
        f.seek(0)
        while chunk := f.read(1 << 20):
            md5.update(chunk)
    return path.stat().st_size, md5.hexdigest(), hdr
