"""The run journal: one JSON-lines file per run of a manifest (or of one shard of it).

The first line names the run (server, sessions, shard); then each session's start and outcome
are appended, flushed and fsync'd as they happen, so after a crash the journal says which
sessions landed. Running the same command again reads it: a session it records as landed and
verified, and which the server still holds, is not sent again. Each session also keeps its own
journal (:mod:`xnatio.result.journal`), which ``--resume`` uses to send only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from xnatio.errors import InputError
from xnatio.many.outcome import SessionOutcome
from xnatio.result.journal import append_record, default_journal_dir

__all__ = ["RunJournal", "default_run_journal", "run_id"]

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1


def run_id(server: str, name: str) -> str:
    """A digest of the server and the run's name (a manifest's path, or the discovery root).

    It does not depend on the sessions, so a manifest that grows (tonight's visits appended)
    keeps its run journal, and the sessions landed earlier are not sent again.
    """
    text = f"{server}\0{name}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(text).hexdigest()[:16]


def default_run_journal(name: str, rid: str, shard: tuple[int, int] | None) -> Path:
    """``<cache>/xnatio/runs/<stem>-<id>[-shard-K-of-N].jsonl`` (the stem of the run's name:
    the manifest's, or the discovery root's)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem)[:40] or "run"
    suffix = f"-shard-{shard[0]}-of-{shard[1]}" if shard else ""
    return default_journal_dir().parent / "runs" / f"{stem}-{rid}{suffix}.jsonl"


class RunJournal:
    """An append-only record of one run; safe to write from several threads.

    Parameters
    ----------
    path
        The file (created with its folder when missing).
    header
        What identifies the run (``run``, ``server``, ``sessions``, ``shard``); an existing
        file with another ``run`` is refused.

    Raises
    ------
    InputError
        The file belongs to another run or cannot be written.
    """

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.last: dict[str, dict[str, Any]] = {}
        existing, good = self._read(path)
        if existing is not None and existing.get("run") != header.get("run"):
            raise InputError(
                f"run journal {path} belongs to another run (other sessions or server); "
                "choose another --run-journal"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115
            self._fh.truncate(good)
            self._fh.seek(good)
        except OSError as exc:
            raise InputError(f"cannot write the run journal {path}: {exc}") from exc
        if existing is None:
            self._write({"type": "header", "version": FORMAT_VERSION, **header})

    def _read(self, path: Path) -> tuple[dict[str, Any] | None, int]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, 0
        except OSError as exc:
            raise InputError(f"cannot read the run journal {path}: {exc}") from exc
        header: dict[str, Any] | None = None
        good = 0
        for raw in data.splitlines(keepends=True):
            try:
                record = json.loads(raw)
            except ValueError:
                break  # a torn last line: what follows is dropped
            if not raw.endswith(b"\n"):
                break
            good += len(raw)
            if record.get("type") == "header":
                header = record
            elif record.get("type") == "session":
                self.last[record["key"]] = record
        return header, good

    def _write(self, record: dict[str, Any]) -> None:
        with self._lock:
            append_record(self._fh, record)
            if record.get("type") == "session":
                self.last[record["key"]] = record

    def done_earlier(self) -> dict[str, str]:
        """Sessions an earlier run recorded as landed and verified, with their source."""
        return {
            k: str(r.get("source", ""))
            for k, r in self.last.items()
            if r.get("status") in ("landed", "done-earlier") and r.get("verified") is not False
        }

    def session_journal(self, key: str) -> str | None:
        """The session's own journal file, as an earlier run recorded it."""
        value = self.last.get(key, {}).get("journal")
        return str(value) if value else None

    def start_run(self, *, resume: bool, sessions: int, dask: str | None) -> None:
        """Record the start of a run (or of a re-run of the same manifest)."""
        self._write(
            {
                "type": "start",
                "resume": resume,
                "sessions": sessions,
                "dask": dask,
                "pid": os.getpid(),
            }
        )

    def session_started(self, key: str, worker: str = "local") -> None:
        """Record that a session began."""
        self._write({"type": "session", "key": key, "status": "started", "worker": worker})

    def outcome(self, outcome: SessionOutcome, source: str = "") -> None:
        """Record how a session ended, and what its source was (``SessionSpec.source_id``)."""
        row = outcome.to_dict()
        row["errors"] = row["errors"][:5]
        self._write({"type": "session", **row, "source": source})

    def end_run(self, counts: dict[str, int], *, cancelled: bool) -> None:
        """Record the end of the run with the sessions per status."""
        self._write({"type": "end", "counts": counts, "cancelled": cancelled})

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._fh.close()
