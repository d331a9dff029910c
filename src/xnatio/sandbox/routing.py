"""XNAT's DICOM routing: project, subject, session and auto-archive from header values.

Follows docs/xnat-behaviour.md §6.2. Each value is chosen separately and the first source that
gives a usable value wins. A project candidate is usable only if the project exists, so the caller
passes a predicate for that.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from xnatio.sandbox.dicom_header import DicomHeader

__all__ = ["Routing", "RoutingRules", "clean_label", "comment_value", "parse_rules", "route"]

_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def clean_label(value: str) -> str:
    """Replace every character outside ``[A-Za-z0-9_-]`` by ``_`` (XNAT's label characters)."""
    return _LABEL_UNSAFE.sub("_", value.strip())


def comment_value(field: str, key: str) -> str | None:
    """The value of ``key`` in a comment field such as ``"Project:P Subject:S AA:true"``.

    The key (case-insensitive) must start the field or follow whitespace, ``,`` or ``;``; then
    optional whitespace, ``:``, optional whitespace and a value of ``[A-Za-z0-9_-]*`` that must be
    followed by whitespace, ``,``, ``;`` or the end of the field. Returns ``None`` if absent.
    """
    pattern = rf"(?:^|[\s,;]){re.escape(key)}\s*:\s*([A-Za-z0-9_-]*)(?=[\s,;]|$)"
    m = re.search(pattern, field, re.IGNORECASE)
    return m.group(1) if m else None


_RULE_RE = re.compile(r"^\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\):(.+?)(?::(\d+))?$")


@dataclass(frozen=True, slots=True)
class Rule:
    """One custom routing rule ``(gggg,eeee):regex[:group]`` (§6.2)."""

    tag: int
    pattern: re.Pattern[str]
    group: int

    def apply(self, h: DicomHeader) -> str:
        value = h.extra.get(self.tag, "")
        m = self.pattern.search(value) if value else None
        if m is None or self.group > (m.re.groups or 0):
            return ""
        return m.group(self.group) or ""


def parse_rules(text: str) -> list[Rule]:
    """Parse site rules, one per line; blank lines and ``#`` comments are skipped.

    Raises
    ------
    ValueError
        For a line that is not ``(gggg,eeee):regex[:group]`` or holds a bad regex.
    """
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _RULE_RE.match(line)
        if m is None:
            raise ValueError(f"bad routing rule: {line}")
        try:
            pattern = re.compile(m.group(3))
        except re.error as exc:
            raise ValueError(f"bad routing rule regex: {line}: {exc}") from exc
        tag = int(m.group(1) + m.group(2), 16)
        rules.append(Rule(tag, pattern, int(m.group(4) or 1)))
    return rules


@dataclass(frozen=True, slots=True)
class RoutingRules:
    """The site's custom rules (config tool ``dicom``: projectRules, subjectRules, ...)."""

    project: tuple[Rule, ...] = ()
    subject: tuple[Rule, ...] = ()
    session: tuple[Rule, ...] = ()
    aa: tuple[Rule, ...] = ()

    @property
    def tags(self) -> frozenset[int]:
        """Every tag the rules read (the header reader must keep these)."""
        return frozenset(r.tag for r in (*self.project, *self.subject, *self.session, *self.aa))


def _first(rules: tuple[Rule, ...], h: DicomHeader) -> str:
    for r in rules:
        v = r.apply(h)
        if v:
            return v
    return ""


@dataclass(frozen=True, slots=True)
class Routing:
    """What the DICOM identifier derived for one object; ``None``/``""`` when nothing matched.

    Attributes
    ----------
    project
        An existing project ID, or ``None`` (Unassigned).
    subject
        Cleaned subject label, ``""`` if none.
    session
        Cleaned session label (never empty: ``dicom_upload`` as the last resort).
    auto_archive
        ``True``/``False`` from an ``AA:`` comment, ``None`` if absent.
    """

    project: str | None
    subject: str
    session: str
    auto_archive: bool | None


def route(
    h: DicomHeader, project_exists: Callable[[str], bool], rules: RoutingRules | None = None
) -> Routing:
    """Apply the §6.2 extractors to a header.

    Parameters
    ----------
    h
        The object's header values (with ``extra`` holding the tags the rules read).
    project_exists
        Returns whether a project ID (exactly as found) exists.
    rules
        Custom site rules, tried before the comment fields.
    """
    rules = rules or RoutingRules()
    comments = [h.patient_comments, h.study_comments, h.additional_patient_history]

    def from_comments(key: str) -> str:
        for c in comments:
            v = comment_value(c, key) if c else None
            if v:
                return v
        return ""

    project: str | None = None
    candidates: list[str | None] = [r.apply(h) for r in rules.project]
    candidates += [comment_value(c, "Project") if c else None for c in comments]
    candidates += [h.study_description, h.accession_number]
    for cand in candidates:
        if cand and project_exists(cand):
            project = cand
            break

    subject = clean_label(_first(rules.subject, h) or from_comments("Subject") or h.patient_name)
    session = (
        clean_label(_first(rules.session, h) or from_comments("Session") or h.patient_id)
        or "dicom_upload"
    )

    aa_raw = (from_comments("AA") or _first(rules.aa, h)).lower()
    auto_archive = True if aa_raw in ("t", "true") else False if aa_raw in ("f", "false") else None
    return Routing(project, subject, session, auto_archive)
