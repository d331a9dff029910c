"""``--discover ROOT``: find every DICOM study under a folder and make one session of each.

The walk covers folders at any depth and the ``.zip``, ``.tar`` and ``.tar.gz`` archives in them
(an archive inside an archive is skipped, with that reason). Files are grouped by
StudyInstanceUID, so a study whose files lie in several folders or archives is still one session.
Labels come from templates over DICOM attributes, written with Python's format syntax
(``{PatientID}_{StudyDate}``, ``{StudyDate:.6}`` for the first six characters); the project is
fixed, a template, or looked up in a mapping file. Labels are never changed: the plan reports
those XNAT would refuse.

Only the header of each file is read, once, with the inventory's reader; the files found become
each session's inventory without a second scan.
"""

from __future__ import annotations

import csv
import string
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from xnatio.errors import InputError
from xnatio.inventory import DicomFile, SkippedFile
from xnatio.inventory.scan import dicom_file, read_header
from xnatio.inventory.sources import FolderSource, open_lister
from xnatio.many.spec import Gathered, SessionSpec

__all__ = ["Discovery", "LabelTemplate", "ProjectMap", "discover"]

_ARCHIVE_NAMES = (".zip", ".tar", ".tar.gz", ".tgz")
_STUDY = 0x0020000D


@dataclass(frozen=True, slots=True)
class LabelTemplate:
    """A label made from DICOM attributes, e.g. ``{PatientID}_{StudyDate}``.

    Attributes
    ----------
    option
        The option it came from, for messages (``--session``).
    text
        The template.
    tags
        The attributes it names: keyword -> tag.
    """

    option: str
    text: str
    tags: dict[str, int]

    @classmethod
    def parse(cls, option: str, text: str) -> LabelTemplate:
        """Check ``text``: every field must be a DICOM keyword (PS3.6), e.g. ``PatientID``.

        Raises
        ------
        InputError
            Empty template, bad format syntax, or a name that is not a DICOM keyword.
        """
        from pydicom.datadict import tag_for_keyword

        if not text:
            raise InputError(f"{option} is empty")
        tags: dict[str, int] = {}
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        except ValueError as exc:
            raise InputError(f"{option} {text!r}: {exc}") from None
        for name in fields:
            tag = tag_for_keyword(name) if name.isidentifier() else None
            if tag is None:
                raise InputError(
                    f"{option} {text!r}: {{{name}}} is not a DICOM attribute keyword "
                    "(for example PatientID, StudyDate, Modality, AccessionNumber)"
                )
            tags[name] = tag
        return cls(option, text, tags)

    def render(self, values: dict[str, str]) -> str:
        """The label for one study's attribute values."""
        return self.text.format_map(values)


@dataclass(frozen=True, slots=True)
class ProjectMap:
    """Projects looked up by the value of one attribute (``--project-map FILE``).

    The file is a CSV or TSV whose header names the attribute and ``project``, for example
    ``StudyDescription,project``; each row maps one value to a project ID.
    """

    path: str
    keyword: str
    tag: int
    projects: dict[str, str]

    @classmethod
    def read(cls, path: str | Path) -> ProjectMap:
        """Read and check a mapping file (errors name the line)."""
        from pydicom.datadict import tag_for_keyword

        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--project-map {p}: cannot read it ({exc})") from None
        delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
        rows = [r for r in csv.reader(text.splitlines(), delimiter=delimiter) if any(r)]
        if not rows or len(rows[0]) != 2 or rows[0][1].strip() != "project":
            raise InputError(
                f"--project-map {p} line 1: the header must name a DICOM attribute and "
                "'project', for example StudyDescription,project"
            )
        keyword = rows[0][0].strip()
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise InputError(f"--project-map {p} line 1: {keyword!r} is not a DICOM keyword")
        projects: dict[str, str] = {}
        for line, row in enumerate(rows[1:], 2):
            if len(row) != 2 or not row[1].strip():
                raise InputError(f"--project-map {p} line {line}: expected value,project")
            projects[row[0].strip()] = row[1].strip()
        return cls(str(p), keyword, tag, projects)


@dataclass
class _Study:
    files: list[DicomFile] = field(default_factory=list)
    values: dict[str, Counter[str]] = field(default_factory=dict)


@dataclass
class Discovery:
    """What :func:`discover` found.

    Attributes
    ----------
    sessions
        One spec per study, in label order.
    skipped
        Files that are not DICOM, unreadable, without a StudyInstanceUID, or archives inside
        archives, with the reason (display paths).
    files
        Candidate files examined.
    """

    sessions: list[SessionSpec]
    skipped: list[SkippedFile]
    files: int


def _is_archive(name: str, head: bytes) -> bool:
    if len(head) >= 132 and head[128:132] == b"DICM":
        return False
    low = name.lower()
    return (
        low.endswith(_ARCHIVE_NAMES)
        or head.startswith((b"\x1f\x8b", b"PK\x03\x04", b"PK\x05\x06"))
        or head[257:262] == b"ustar"
    )


class _Walker:
    """Reads the header of every file under ``root`` and sorts them into studies."""

    def __init__(self, root: Path, extra: dict[int, str]) -> None:
        self.root = root
        self.extra = extra
        self.intern: dict[str, str] = {}
        self.studies: dict[str, _Study] = {}
        self.locations: dict[str, tuple[str, str]] = {}
        self.skipped: list[SkippedFile] = []

    def loose(self, rel: str, size: int) -> list[tuple[str, str, int, dict[str, str] | str]]:
        """One file of the folder: an archive is read member by member."""
        try:
            with open(self.root / rel, "rb") as fp:
                head = fp.read(512)
                if _is_archive(rel, head):
                    return self.archive(rel)
                fp.seek(0)
                return [("", rel, size, read_header(fp, self.extra))]
        except OSError as exc:
            return [("", rel, size, f"unreadable: {exc.strerror or exc}")]

    def archive(self, rel: str) -> list[tuple[str, str, int, dict[str, str] | str]]:
        try:
            lister = open_lister(self.root / rel)
        except InputError as exc:
            return [("", rel, 0, f"unreadable archive: {exc.message}")]
        out: list[tuple[str, str, int, dict[str, str] | str]] = []
        try:
            members, skipped = lister.entries()
            out += [(rel, s.path, 0, s.reason) for s in skipped]
            for member, size in members:
                if member.lower().endswith(_ARCHIVE_NAMES):
                    out.append((rel, member, size, "archive inside an archive: extract it first"))
                    continue
                try:
                    with lister.open(member) as fp:
                        out.append((rel, member, size, read_header(fp, self.extra)))
                except OSError as exc:
                    out.append((rel, member, size, f"unreadable: {exc}"))
        finally:
            lister.close()
        return out

    def add(self, archive: str, member: str, size: int, found: dict[str, str] | str) -> None:
        path = f"{archive}!{member}" if archive else member
        if isinstance(found, str):
            self.skipped.append(SkippedFile(path, found))
            return
        uid = found.get("study", "")
        if not uid:
            self.skipped.append(SkippedFile(path, "no StudyInstanceUID"))
            return
        study = self.studies.setdefault(uid, _Study())
        study.files.append(dicom_file(path, size, found, self.intern))
        self.locations[path] = (archive, member)
        for key in self.extra.values():
            value = found.get(key, "")
            if value:
                counts = study.values.setdefault(key, Counter())
                counts[value] += 1


def discover(
    root: str | Path,
    *,
    subject: LabelTemplate,
    session: LabelTemplate,
    project: LabelTemplate | None = None,
    project_map: ProjectMap | None = None,
    workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> Discovery:
    """Walk ``root`` and make one session per StudyInstanceUID.

    Parameters
    ----------
    root
        The folder to walk.
    subject, session, project
        Label templates (a project without fields is a fixed ID).
    project_map
        Projects by attribute value; studies it does not list get ``project`` when given, else
        a project the plan reports as missing.
    workers
        Threads reading headers (files, or whole archives).
    progress
        Called as ``progress(done, total)`` with candidate files (archives count as one).

    Raises
    ------
    InputError
        ``root`` is not a folder, holds no DICOM study, or a template names an attribute that
        a study's files lack.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise InputError(f"--discover {base}: not a folder")
    if project is None and project_map is None:
        raise InputError("--discover needs --project (an ID or a template) or --project-map")
    templates = [t for t in (subject, session, project) if t is not None]
    extra = {tag: kw for t in templates for kw, tag in t.tags.items()}
    if project_map is not None:
        extra[project_map.tag] = project_map.keyword
    extra.pop(_STUDY, None)  # always read, as "study"
    walker = _Walker(base, extra)
    candidates, skipped = FolderSource(base).entries()
    walker.skipped += skipped
    done = 0
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="xio-discover") as pool:
        for results in pool.map(lambda c: walker.loose(*c), candidates, chunksize=16):
            for found in results:
                walker.add(*found)
            done += 1
            if progress is not None and (done % 500 == 0 or done == len(candidates)):
                progress(done, len(candidates))
    if not walker.studies:
        raise InputError(
            f"--discover {base}: no DICOM study found ({len(candidates)} files examined)"
        )
    sessions = [
        _session(base, uid, study, walker.locations, subject, session, project, project_map)
        for uid, study in walker.studies.items()
    ]
    sessions.sort(key=lambda s: (s.project, s.subject, s.session, s.origin))
    walker.skipped.sort(key=lambda s: s.path)
    return Discovery(sessions, walker.skipped, len(candidates))


def _values(
    uid: str, study: _Study, templates: Iterable[LabelTemplate]
) -> tuple[dict[str, str], list[str]]:
    """Each attribute's value in the study: the one most files carry (notes list the others)."""
    values: dict[str, str] = {"StudyInstanceUID": uid}
    notes: list[str] = []
    for template in templates:
        for keyword in template.tags:
            if keyword in values:
                continue
            counts = study.values.get(keyword)
            if not counts:
                example = min(f.path for f in study.files)
                raise InputError(
                    f"{template.option} {template.text!r}: study {uid} has no {keyword} "
                    f"(for example {example}); choose attributes every study has"
                )
            best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            values[keyword] = best[0][0]
            if len(best) > 1:
                others = ", ".join(repr(v) for v, _ in best[1:4])
                notes.append(f"{keyword} is {best[0][0]!r} in most files, also {others}")
    return values, notes


def _session(
    root: Path,
    uid: str,
    study: _Study,
    locations: dict[str, tuple[str, str]],
    subject: LabelTemplate,
    session: LabelTemplate,
    project: LabelTemplate | None,
    project_map: ProjectMap | None,
) -> SessionSpec:
    templates = [t for t in (subject, session, project) if t is not None]
    values, notes = _values(uid, study, templates)
    target = ""
    if project_map is not None:
        counts = study.values.get(project_map.keyword)
        key = counts.most_common(1)[0][0] if counts else ""
        target = project_map.projects.get(key, "")
        if not target and project is None:
            notes.append(f"{project_map.path} has no project for {project_map.keyword} {key!r}")
    if not target and project is not None:
        target = project.render(values)
    files = tuple(sorted(study.files, key=lambda f: f.path))
    return SessionSpec(
        project=target,
        subject=subject.render(values),
        session=session.render(values),
        gathered=Gathered(str(root), files, {f.path: locations[f.path] for f in files}),
        origin=f"study {uid}",
        notes=tuple(notes),
    )
