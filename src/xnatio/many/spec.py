"""What to upload: one :class:`SessionSpec` per session, read from a manifest or discovered.

A manifest is a CSV, TSV or JSON-lines file with the columns ``project, subject, session, source``
and, optionally, per-session settings (:data:`OPTIONAL_COLUMNS`). Every problem with a manifest
is an :class:`~xnatio.errors.InputError` naming the line: a missing or unknown column, a bad value,
a session given twice. Relative source paths are taken relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from xnatio.errors import InputError
from xnatio.inventory import DicomFile
from xnatio.options import Overwrite

__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "Gathered",
    "SessionSpec",
    "Transport",
    "parse_shard",
    "read_manifest",
    "shard_of",
    "take_shard",
]

Transport = Literal["rest", "dicom-store"]
REQUIRED_COLUMNS = ("project", "subject", "session", "source")
#: Per-session settings a manifest may carry; an empty cell means the run's setting.
OPTIONAL_COLUMNS = (
    "transport",
    "overwrite",
    "direct_archive",
    "num_batches",
    "upload_workers",
    "archive_format",
    "import_handler",
    "allow_multiple_studies",
    "anonymize",
)
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


@dataclass(frozen=True, slots=True)
class Gathered:
    """A session's files found by discovery, wherever they lie under the root.

    Attributes
    ----------
    root
        The folder that was walked.
    files
        The instances, with display paths (``folder/file.dcm`` or ``archive.zip!member``).
    locations
        For each display path: the archive holding it (relative to ``root``; ``""`` for a loose
        file) and its path in there (or relative to ``root``).
    """

    root: str
    files: tuple[DicomFile, ...]
    locations: Mapping[str, tuple[str, str]]


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """One session of a run: where it goes, where its files are, and its own settings.

    Attributes
    ----------
    project, subject, session
        Target labels, exactly as given or made by the templates (checked in the plan, never
        changed).
    source
        A folder, ``.zip``, ``.tar`` or ``.tar.gz`` (manifest rows); ``""`` for discovered sessions.
    gathered
        The files of a discovered session (None for manifest rows).
    origin
        Where the session comes from, for messages: ``runs.csv line 12``, ``study 1.2.3...``.
    transport, overwrite, direct_archive, num_batches, upload_workers, archive_format,
    import_handler, allow_multiple_studies
        Per-session settings; None means the run's setting.
    anonymize
        ``server``, ``none`` or a script file (relative paths from the manifest's folder): the
        session's scripts instead of the run's ``--anonymize`` (None: the run's).
    notes
        Remarks from discovery (for example an attribute whose value differs between files).
    """

    project: str
    subject: str
    session: str
    source: str = ""
    gathered: Gathered | None = field(default=None, repr=False)
    origin: str = ""
    transport: Transport | None = None
    overwrite: Overwrite | None = None
    direct_archive: bool | None = None
    num_batches: int | None = None
    upload_workers: int | None = None
    archive_format: Literal["tar", "zip"] | None = None
    import_handler: Literal["DICOM-zip", "gradual-DICOM"] | None = None
    allow_multiple_studies: bool | None = None
    anonymize: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """``project/subject/session``: how reports and journals name the session."""
        return f"{self.project}/{self.subject}/{self.session}"

    @property
    def source_id(self) -> str:
        """What the session is made of, as the run journal records it: the source path, or
        the study with its files' count and size. A landed session counts as done on a re-run
        only with the same source."""
        if self.gathered is None:
            return self.source
        files = self.gathered.files
        return f"{self.origin} ({len(files)} files, {sum(f.size for f in files)} bytes)"


# -- manifests ---------------------------------------------------------------------------------


def read_manifest(path: str | Path) -> list[SessionSpec]:
    """Read a manifest (``.csv``, ``.tsv`` or ``.jsonl``) into session specs.

    Raises
    ------
    InputError
        One line naming the file and line: unreadable file, unknown format, missing or unknown
        column, bad value, empty label or source, a session given twice.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"manifest {p} does not exist; give a .csv, .tsv or .jsonl file")
    suffix = p.suffix.lower()
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the manifest {p}: {exc}") from None
    if suffix in (".csv", ".tsv"):
        rows = _table_rows(p, text, "\t" if suffix == ".tsv" else ",")
    elif suffix in (".jsonl", ".ndjson"):
        rows = _json_rows(p, text)
    else:
        raise InputError(f"manifest {p}: the file name must end in .csv, .tsv or .jsonl")
    specs = [_spec(p, line, row) for line, row in rows]
    if not specs:
        raise InputError(f"manifest {p} lists no sessions")
    _refuse_repeats(p, specs)
    return specs


def _check_columns(path: Path, line: int, names: Iterable[str]) -> None:
    names = list(names)
    unknown = [n for n in names if n not in REQUIRED_COLUMNS and n not in OPTIONAL_COLUMNS]
    if unknown:
        raise InputError(
            f"{path.name} line {line}: unknown column {unknown[0]!r}; the columns are "
            f"{', '.join(REQUIRED_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS)}"
        )
    missing = [n for n in REQUIRED_COLUMNS if n not in names]
    if missing:
        raise InputError(f"{path.name} line {line}: missing column {missing[0]!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"{path.name} line {line}: column {repeated[0]!r} appears twice")


def _table_rows(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(text.splitlines(), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    try:
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            if header is None:
                header = [c.strip() for c in cells]
                _check_columns(path, line, header)
                continue
            if len(cells) != len(header):
                raise InputError(
                    f"{path.name} line {line}: {len(cells)} cells where the header has "
                    f"{len(header)}"
                )
            yield line, {h: c.strip() for h, c in zip(header, cells, strict=True)}
    except csv.Error as exc:
        raise InputError(f"{path.name} line {reader.line_num}: {exc}") from None
    if header is None:
        raise InputError(f"manifest {path} is empty; the first line names the columns")


def _json_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj: Any = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path.name} line {line}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path.name} line {line}: expected a JSON object")
        _check_columns(path, line, obj)
        row: dict[str, str] = {}
        for k, v in obj.items():
            if isinstance(v, bool):
                row[k] = "true" if v else "false"
            elif v is None:
                row[k] = ""
            elif isinstance(v, str | int):
                row[k] = str(v).strip()
            else:
                raise InputError(f"{path.name} line {line}: {k} must be a string or a number")
        yield line, row


def _choice(where: str, name: str, value: str, allowed: tuple[str, ...]) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise InputError(f"{where}: {name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _flag(where: str, name: str, value: str) -> bool | None:
    if not value:
        return None
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise InputError(f"{where}: {name} must be true or false, not {value!r}")


def _count(where: str, name: str, value: str) -> int | None:
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise InputError(f"{where}: {name} must be a whole number of at least 1, not {value!r}")
    return int(value)


def _spec(path: Path, line: int, row: dict[str, str]) -> SessionSpec:
    where = f"{path.name} line {line}"
    for name in REQUIRED_COLUMNS:
        if not row.get(name):
            raise InputError(f"{where}: {name} is empty")
    source = Path(row["source"]).expanduser()
    if not source.is_absolute():
        source = path.parent / source
    get = row.get
    return SessionSpec(
        project=row["project"],
        subject=row["subject"],
        session=row["session"],
        source=str(source),
        origin=where,
        transport=cast(
            Transport | None,
            _choice(where, "transport", get("transport", ""), ("rest", "dicom-store")),
        ),
        overwrite=cast(
            Overwrite | None,
            _choice(where, "overwrite", get("overwrite", ""), ("none", "append", "delete")),
        ),
        direct_archive=_flag(where, "direct_archive", get("direct_archive", "")),
        num_batches=_count(where, "num_batches", get("num_batches", "")),
        upload_workers=_count(where, "upload_workers", get("upload_workers", "")),
        archive_format=cast(
            Literal["tar", "zip"] | None,
            _choice(where, "archive_format", get("archive_format", ""), ("tar", "zip")),
        ),
        import_handler=cast(
            Literal["DICOM-zip", "gradual-DICOM"] | None,
            _choice(
                where, "import_handler", get("import_handler", ""), ("DICOM-zip", "gradual-DICOM")
            ),
        ),
        allow_multiple_studies=_flag(
            where, "allow_multiple_studies", get("allow_multiple_studies", "")
        ),
        anonymize=_script(path, get("anonymize", "")),
    )


def _script(path: Path, value: str) -> str | None:
    """An ``anonymize`` cell: server, none, or a script file taken from the manifest's folder."""
    if not value or value in ("server", "none"):
        return value or None
    script = Path(value).expanduser()
    return str(script if script.is_absolute() else path.parent / script)


def _refuse_repeats(path: Path, specs: list[SessionSpec]) -> None:
    """A session label is unique within its project in XNAT (docs/xnat-behaviour.md §13)."""
    seen: dict[tuple[str, str], SessionSpec] = {}
    for s in specs:
        earlier = seen.setdefault((s.project, s.session), s)
        if earlier is not s:
            raise InputError(
                f"{s.origin}: session {s.project}/{s.session} is already listed on "
                f"{earlier.origin.removeprefix(path.name + ' ')}; each session may appear once"
            )


# -- shards ------------------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N`` (job array indices start at 0)."""
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit():
        raise InputError(f"--shard must look like K/N (for example 0/8), not {text!r}")
    index, count = int(k), int(n)
    if count < 1 or index >= count:
        raise InputError(f"--shard {text}: K must be at least 0 and less than N")
    return index, count


def shard_of(spec: SessionSpec, count: int) -> int:
    """The shard (0 to ``count - 1``) a session belongs to: a hash of its target, stable across
    machines, Python versions and manifest order."""
    digest = hashlib.sha256(f"{spec.project}/{spec.session}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def take_shard(specs: list[SessionSpec], index: int, count: int) -> list[SessionSpec]:
    """The sessions of shard ``index`` of ``count``, in their original order."""
    return [s for s in specs if shard_of(s, count) == index]
