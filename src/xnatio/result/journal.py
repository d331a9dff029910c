"""Upload journals: what was confirmed sent, so an interrupted upload resumes without re-sending.

A journal is an append-only JSON-lines file, one per upload, keyed by the server, the target
labels and a digest of the source inventory (paths, sizes, SOP Instance UIDs). The first line is a
header holding the key; later lines record runs, instances confirmed by the server (a REST batch
answered 200 with the expected session URI, or a C-STORE success status), commits and the end of
a run. Each record is flushed and fsync'd when written, so after a crash, a Ctrl-C or a power
loss the file holds everything that was confirmed up to the last batch boundary. A torn last line
(the process died mid-write) is ignored when read and cut off before the next append.

The journal only narrows the candidates: a resume still asks the server what it holds, and sends
whatever the server cannot confirm.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from xnatio.errors import InputError
from xnatio.inventory import DicomFile

__all__ = [
    "BatchedSent",
    "Journal",
    "JournalKey",
    "JournalState",
    "append_record",
    "default_journal_dir",
    "inventory_digest",
    "read_journal",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def default_journal_dir() -> Path:
    """``$XDG_CACHE_HOME/xnatio/journals``, or ``~/.cache/xnatio/journals``."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "xnatio" / "journals"


def inventory_digest(files: Iterable[DicomFile]) -> str:
    """SHA-256 over the sorted (path, size, SOP Instance UID) of every instance."""
    import hashlib  # loaded when a journal is kept (start-up time of sends without one)

    h = hashlib.sha256()
    for path, size, uid in sorted((f.path, f.size, f.sop_instance_uid) for f in files):
        h.update(f"{path}\0{size}\0{uid}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _public_server(server: str) -> str:
    """The server URL without any user information (never store credentials)."""
    parts = urlsplit(server)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def _file_part(label: str) -> str:
    """A label as part of a file name: no path separators or dots in front, 32 characters."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", label)[:32]


def append_record(fh: BinaryIO, record: dict[str, Any]) -> None:
    """Append one record to an open journal as a line of compact JSON, on disk before returning.

    Both journals (one upload's, and the run journal of ``upload-many``) write this way: a
    crash leaves at most a last line cut short, which the readers skip. The caller holds the
    journal's lock.
    """
    record.setdefault("time", round(time.time(), 3))
    fh.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
    fh.flush()
    os.fsync(fh.fileno())


@dataclass(frozen=True, slots=True)
class JournalKey:
    """What identifies one upload.

    Attributes
    ----------
    server
        The XNAT URL (for C-STORE without a server: ``dicom://host:port/AET``).
    project, subject, session
        Target labels.
    inventory
        :func:`inventory_digest` of the source.
    transport
        ``rest`` or ``dicom-store``.
    """

    server: str
    project: str
    subject: str
    session: str
    inventory: str
    transport: str = "rest"

    @classmethod
    def create(
        cls,
        *,
        server: str,
        project: str,
        subject: str,
        session: str,
        files: Sequence[DicomFile],
        transport: str = "rest",
    ) -> JournalKey:
        """Build a key from the target and the inventory's files."""
        return cls(
            _public_server(server), project, subject, session, inventory_digest(files), transport
        )

    def file_name(self) -> str:
        """A stable file name for this key in the journal folder, at most 100 characters.

        The digest of the whole key tells uploads apart; the labels in front only help a person
        find the file, so they are cut to 32 characters each and made safe for a file name
        (labels may be as long as XNAT allows, 255 characters, and file names may not).
        """
        import hashlib  # as in inventory_digest

        text = json.dumps(asdict(self), sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:24]
        project, session = (_file_part(label) for label in (self.project, self.session))
        return f"{project}-{session}-{digest}.jsonl"


@dataclass
class JournalState:
    """What a journal file says.

    Attributes
    ----------
    key
        The header's key, or None for an empty or missing file.
    confirmed
        SOP Instance UIDs confirmed sent in any run.
    session_uris
        Prearchive (or Direct-Archive) session URIs named by the server, in order.
    committed
        Archive URIs returned by commits.
    runs
        Runs started.
    complete
        True when the last run ended with every instance verified on the server.
    anonymize, salt
        The last run's de-identification: the digest of its scripts (``""``: none) and the
        salt of their ``newUID``/``mapUID`` (docs/anonymisation.md).
    torn
        True when a torn last line was ignored.
    """

    key: JournalKey | None = None
    confirmed: set[str] = field(default_factory=set)
    session_uris: list[str] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)
    runs: int = 0
    complete: bool = False
    anonymize: str = ""
    salt: str = ""
    torn: bool = False

    @property
    def unfinished(self) -> bool:
        """A run started and did not end verified."""
        return self.runs > 0 and not self.complete


def read_journal(path: Path) -> tuple[JournalState, int]:
    """Read a journal; return its state and the byte length of its intact part.

    Lines that do not parse (a torn last line) are ignored.
    """
    state = JournalState()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return state, 0
    good = 0
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            state.torn = True  # no newline: the process died mid-write
            break
        line = data[pos:end]
        pos = end + 1
        try:
            record = json.loads(line)
        except ValueError:
            state.torn = True
            break
        if not isinstance(record, dict):
            state.torn = True
            break
        _apply(state, record)
        good = pos
    return state, good


def _apply(state: JournalState, record: dict[str, Any]) -> None:
    kind = record.get("type")
    if kind == "header":
        key = record.get("key") or {}
        known = JournalKey.__dataclass_fields__
        state.key = JournalKey(**{k: str(v) for k, v in key.items() if k in known})
    elif kind == "run":
        state.runs += 1
        state.complete = False
        state.anonymize, state.salt = str(record.get("anonymize", "")), str(record.get("salt", ""))
    elif kind == "sent":
        state.confirmed.update(str(u) for u in record.get("sop", []))
        for uri in record.get("uris", []):
            if uri not in state.session_uris:
                state.session_uris.append(str(uri))
    elif kind == "commit":
        state.committed.append(str(record.get("uri", "")))
    elif kind == "done":
        state.complete = bool(record.get("ok"))


def _refuse_other_files(path: Path) -> None:
    """Refuse a path that holds something else: a journal is cut back to its intact records
    when opened, which would destroy any other file (``--journal notes.txt``)."""
    try:
        if not path.exists():
            return
        if not path.is_file():
            raise InputError(f"journal {path} is not a regular file; choose another --journal path")
        with open(path, "rb") as fh:
            head = fh.read(len(_HEADER_START))
    except OSError as exc:
        raise InputError(f"cannot read the journal {path}: {exc.strerror or exc}") from None
    # Empty, or a header (perhaps torn by a crash while it was written): an xnatio journal.
    if head and not _HEADER_START.startswith(head):
        raise InputError(
            f"{path} exists and is not an xnatio journal; choose another --journal path "
            "(xio does not overwrite it)"
        )


# How every journal starts (see Journal._write: compact JSON, "type" first).
_HEADER_START = b'{"type":"header"'


class Journal:
    """An open journal file for one upload (thread-safe appends).

    Parameters
    ----------
    path
        The journal file; created with its folder if needed.
    key
        The upload's key. An existing file with another key is refused.

    Raises
    ------
    InputError
        The file belongs to another upload, is not a journal, or cannot be written.
    """

    def __init__(self, path: Path, key: JournalKey) -> None:
        self.path = path
        self.key = key
        # (digest, salt) of the scripts this run applies, written into its run record.
        self.anonymization: tuple[str, str] | None = None
        self._lock = threading.Lock()
        _refuse_other_files(path)
        self.state, good = read_journal(path)
        if self.state.key is not None and self.state.key != key:
            raise InputError(
                f"journal {path} belongs to another upload ({self.state.key.project}/"
                f"{self.state.key.subject}/{self.state.key.session} on {self.state.key.server}, "
                "or a different source); choose another --journal path"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115
            if self.state.torn:
                logger.info("journal %s: ignoring a torn last record", path)
            # Drop a torn tail so the next record starts on a line of its own.
            self._fh.truncate(good)
            self._fh.seek(good)
        except OSError as exc:
            raise InputError(f"cannot write the journal {path}: {exc}") from exc
        if self.state.key is None:
            self._write({"type": "header", "version": FORMAT_VERSION, "key": asdict(key)})

    @classmethod
    def for_upload(cls, key: JournalKey, path: str | Path | None = None) -> Journal:
        """Open the journal at ``path``, or the default one for ``key`` in the cache folder."""
        target = Path(path) if path is not None else default_journal_dir() / key.file_name()
        return cls(target.expanduser(), key)

    def _write(self, record: dict[str, Any]) -> None:
        with self._lock:
            append_record(self._fh, record)
            _apply(self.state, record)

    def start_run(self, *, resume: bool, total: int) -> None:
        """Record the start of a run."""
        record: dict[str, Any] = {"type": "run", "resume": resume, "files": total}
        record["pid"] = os.getpid()
        if self.anonymization is not None:
            record["anonymize"], record["salt"] = self.anonymization
        self._write(record)

    def record_sent(
        self,
        uids: Sequence[str],
        *,
        batch: int | None = None,
        association: int | None = None,
        uris: Sequence[str] = (),
    ) -> None:
        """Record instances the server confirmed, with the session URIs it named."""
        record: dict[str, Any] = {"type": "sent", "sop": list(uids), "uris": list(uris)}
        if batch is not None:
            record["batch"] = batch
        if association is not None:
            record["association"] = association
        self._write(record)

    def batched(self, *, interval: float = 0.5, max_records: int = 256) -> BatchedSent:
        """A thread-safe collector of confirmed instances, written in batches.

        See :class:`BatchedSent`; use it as a context manager so the last batch is written.
        """
        return BatchedSent(self, interval=interval, max_records=max_records)

    def record_commit(self, uri: str) -> None:
        """Record a commit (archive) of the session."""
        self._write({"type": "commit", "uri": uri})

    def record_done(self, *, ok: bool, matched: int, expected: int) -> None:
        """Record the end of a run; ``ok`` means every instance was verified on the server."""
        self._write({"type": "done", "ok": ok, "matched": matched, "expected": expected})

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BatchedSent:
    """Collects confirmed SOP Instance UIDs from any thread; writes them as ``sent`` records.

    One write (and one fsync) covers everything collected since the last one. A background
    thread writes every ``interval`` seconds while something is pending, and at once when
    ``max_records`` are pending; :meth:`close` writes the rest. After a crash the journal lacks
    at most the last ``interval`` seconds of confirmations: those instances are then confirmed
    by the server's listing or sent again, never lost.

    Parameters
    ----------
    journal
        The open journal.
    interval
        Seconds between writes while instances are pending.
    max_records
        Pending instances that trigger a write before ``interval`` has passed.

    Raises
    ------
    InputError
        From :meth:`add` or :meth:`close`, when the journal could not be written (for example
        a full disk); nothing more is written after that.
    """

    def __init__(self, journal: Journal, *, interval: float = 0.5, max_records: int = 256) -> None:
        if interval <= 0 or max_records < 1:
            raise ValueError("interval must be positive and max_records at least 1")
        self.journal = journal
        self.interval = interval
        self.max_records = max_records
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._wake = threading.Event()
        self._closed = False
        self._error: InputError | None = None
        self._thread = threading.Thread(target=self._run, name="xnatio-journal", daemon=True)
        self._thread.start()

    def add(self, uid: str) -> None:
        """Note one confirmed instance (thread-safe; never waits for the disk)."""
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise RuntimeError("the journal batch is closed")
            self._pending.append(uid)
            full = len(self._pending) >= self.max_records
        if full:
            self._wake.set()

    def _flush(self) -> None:
        """Write what is pending as one record (called by one thread at a time)."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch or self._error is not None:
            return
        try:
            self.journal.record_sent(batch)
        except (OSError, ValueError) as exc:
            with self._lock:
                self._error = InputError(f"cannot write the journal {self.journal.path}: {exc}")
            logger.error("%s", self._error.message)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._lock:
                closed = self._closed
            if closed:
                return
            self._flush()

    def close(self) -> None:
        """Write whatever is pending and stop the background thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        self._thread.join()
        self._flush()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BatchedSent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
