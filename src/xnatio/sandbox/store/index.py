"""The store's SQLite index: schema, one connection, one lock, one open transaction.

The index remembers rows, statuses, sizes, MD5 digests and each stored object's SOP Instance UID;
the bytes live in files (:mod:`xnatio.sandbox.store.files`). WAL mode with ``synchronous=NORMAL``;
a transaction is always open and :meth:`Index.commit` ends it and starts the next, so an import
request costs one commit however many files it holds.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

__all__ = ["Index"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS config(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS projects(
    id TEXT PRIMARY KEY, prearchive_code INTEGER NOT NULL, insert_date TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS subjects(
    n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, project TEXT NOT NULL,
    label TEXT NOT NULL, insert_date TEXT NOT NULL, insert_user TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments(
    n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, project TEXT NOT NULL,
    subject_id TEXT NOT NULL, label TEXT NOT NULL, xsi_type TEXT NOT NULL, uid TEXT NOT NULL,
    date TEXT NOT NULL, time TEXT NOT NULL, modality TEXT NOT NULL, insert_date TEXT NOT NULL,
    insert_user TEXT NOT NULL, UNIQUE(project, label));
CREATE TABLE IF NOT EXISTS scans(
    n INTEGER PRIMARY KEY AUTOINCREMENT, experiment_id TEXT NOT NULL, scan_id TEXT NOT NULL,
    uid TEXT NOT NULL, type TEXT NOT NULL, series_description TEXT NOT NULL,
    modality TEXT NOT NULL, xsi_type TEXT NOT NULL, UNIQUE(experiment_id, scan_id));
CREATE TABLE IF NOT EXISTS resources(
    n INTEGER PRIMARY KEY AUTOINCREMENT, experiment_id TEXT NOT NULL, scan_id TEXT NOT NULL,
    label TEXT NOT NULL, format TEXT NOT NULL, content TEXT NOT NULL,
    UNIQUE(experiment_id, scan_id, label));
CREATE TABLE IF NOT EXISTS files(
    resource_n INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, md5 TEXT NOT NULL,
    sop_uid TEXT NOT NULL, sop_class TEXT NOT NULL, PRIMARY KEY(resource_n, path));
CREATE TABLE IF NOT EXISTS sessions(
    n INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, project TEXT NOT NULL,
    timestamp TEXT NOT NULL, folder TEXT NOT NULL, name TEXT NOT NULL, tag TEXT NOT NULL,
    status TEXT NOT NULL, subject TEXT NOT NULL, lastmod REAL NOT NULL, uploaded REAL NOT NULL,
    autoarchive INTEGER, prevent_anon INTEGER NOT NULL, prevent_auto_commit INTEGER NOT NULL,
    source TEXT NOT NULL, visit TEXT NOT NULL, protocol TEXT NOT NULL, scan_date TEXT NOT NULL,
    scan_time TEXT NOT NULL, dir TEXT NOT NULL, built INTEGER NOT NULL DEFAULT 0,
    UNIQUE(kind, project, timestamp, folder));
CREATE INDEX IF NOT EXISTS sessions_key ON sessions(kind, project, tag, name);
CREATE TABLE IF NOT EXISTS session_files(
    session_n INTEGER NOT NULL, scan TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL,
    md5 TEXT NOT NULL, sop_uid TEXT NOT NULL, sop_class TEXT NOT NULL, series_uid TEXT NOT NULL,
    series_description TEXT NOT NULL, modality TEXT NOT NULL,
    PRIMARY KEY(session_n, scan, name));
"""


class Index:
    """The SQLite index at ``path``; created (or upgraded) on open.

    Tables: ``projects``, ``subjects``, ``experiments``, ``scans``, ``resources`` and ``files``
    hold the archive; ``sessions`` (kind ``prearc`` or ``da``) and ``session_files`` hold what
    is still in the prearchive or being received by Direct-Archive; ``config`` holds the site
    configuration.

    Attributes
    ----------
    lock
        One re-entrant lock for the connection and for every in-memory record of work in
        progress (:class:`xnatio.sandbox.store.inflight.InFlight`). It is held only for
        bookkeeping, never while bytes are copied.
    db
        The connection (autocommit mode; the open transaction is managed here).
    closed
        Whether :meth:`close` ran.
    """

    def __init__(self, path: Path) -> None:
        self.lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(sessions)")}
        if "built" not in columns:  # a data folder from before the column existed
            self.db.execute("ALTER TABLE sessions ADD COLUMN built INTEGER NOT NULL DEFAULT 0")
        self.db.execute("BEGIN")
        self.closed = False
        # Run one statement; the caller holds the lock. The connection's own method, bound
        # here: a statement on the import path pays for no extra Python call.
        self.execute = self.db.execute

    def close(self) -> None:
        """Commit and close; later calls do nothing."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.db.execute("COMMIT")
            self.db.close()

    def commit(self) -> None:
        """Commit the open transaction and start the next one."""
        with self.lock:
            if not self.closed:
                self.db.execute("COMMIT")
                self.db.execute("BEGIN")

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Every row of a query; the caller holds :attr:`lock`."""
        return self.db.execute(sql, args).fetchall()

    def row(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        """The first row of a query, or ``None``; the caller holds :attr:`lock`."""
        found: sqlite3.Row | None = self.db.execute(sql, args).fetchone()
        return found

    def session(self, n: int) -> sqlite3.Row | None:
        """The ``sessions`` row number ``n`` (prearchive or Direct-Archive), or ``None``."""
        return self.row("SELECT * FROM sessions WHERE n=?", (n,))

    def set_status(self, n: int, status: str) -> None:
        """Set the status of session ``n``."""
        self.db.execute("UPDATE sessions SET status=? WHERE n=?", (status, n))
