"""The background pass: XNAT's SessionXMLRebuilder and the Direct-Archive trigger
(docs/xnat-behaviour.md §3.5, §10).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field

from xnatio.sandbox.store.archive import Archiver
from xnatio.sandbox.store.catalog import Catalog
from xnatio.sandbox.store.core import Part
from xnatio.sandbox.store.direct_archive import DirectArchive
from xnatio.sandbox.store.model import ArchiveFlags, Status, StoreError, Target, auto_archives
from xnatio.sandbox.store.prearchive import Prearchive

__all__ = ["Ticker"]

log = logging.getLogger(__name__)


@dataclass(eq=False, repr=False)
class Ticker(Part):
    """Builds and archives sessions that have been idle for ``idle_interval`` seconds.

    Attributes
    ----------
    catalog
        The projects' prearchive codes (whether a built session auto-archives).
    prearchive, direct
        Drop empty rows; archive idle Direct-Archive sessions.
    archiver
        Archives the sessions that auto-archive.
    idle_interval
        Seconds without new files after which a session counts as complete.
    """

    catalog: Catalog
    prearchive: Prearchive
    direct: DirectArchive
    archiver: Archiver
    idle_interval: float = field(kw_only=True)

    def tick(self) -> None:
        """One pass of the background tasks (SessionXMLRebuilder and the DA trigger).

        Idle RECEIVING prearchive rows (not prevent_auto_commit, SOURCE != uploader, no file
        being written) are built (READY) and archived if they auto-archive; idle RECEIVING
        Direct-Archive rows are archived, and fall back to the prearchive on failure.
        """
        now = time.time()
        to_archive: list[tuple[int, Target, ArchiveFlags]] = []
        da_rows: list[sqlite3.Row] = []
        with self._index.lock:
            if self._index.closed:
                return
            for row in self._idle_rows(now):
                if row["kind"] == "da":
                    da_rows.append(row)
                    continue
                if row["prevent_auto_commit"] or row["source"] == "uploader":
                    continue
                step = self._build(row)
                if step is not None:
                    to_archive.append(step)
            self._index.commit()
        for sn, target, flags in to_archive:
            try:
                self.archiver.archive(sn, target, flags, "admin")
            except StoreError as exc:
                log.info("auto-archive of session %s failed: %s", sn, exc.message)
        for row in da_rows:
            try:
                self.direct.archive(row)
            except StoreError as exc:
                log.info("direct-archive of %s failed: %s", row["name"], exc.message)

    def _idle_rows(self, now: float) -> list[sqlite3.Row]:
        """RECEIVING rows idle for long enough with no file being written and at least one
        stored (a row that never got a file is dropped here); caller holds the lock."""
        rows = self._index.rows(
            "SELECT * FROM sessions WHERE status=? AND lastmod<=?",
            (Status.RECEIVING, now - self.idle_interval),
        )
        idle = []
        for row in rows:
            if self._inflight.writing(int(row["n"])):
                continue
            if self.prearchive.drop_if_empty(int(row["n"])):
                continue  # no file was ever written: there is nothing to build
            idle.append(row)
        return idle

    def _build(self, row: sqlite3.Row) -> tuple[int, Target, ArchiveFlags] | None:
        """Build an idle prearchive row (READY); what to archive if it auto-archives."""
        aa = row["autoarchive"]
        code = self.catalog.project_code(row["project"]) if row["project"] else None
        if aa is None:
            aa = code
        self._index.execute(
            "UPDATE sessions SET status=?, autoarchive=?, built=1 WHERE n=?",
            (Status.READY, aa, row["n"]),
        )
        if not row["project"] or not auto_archives(aa, code):
            return None
        flags = ArchiveFlags.for_idle(aa, code)
        return int(row["n"]), self.archiver.target(row, None), flags
