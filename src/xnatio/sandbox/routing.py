"""XNAT's DICOM routing: project, subject, session and auto-archive from header values.

Follows xnat-server-behaviour.md §6.2. Each value is chosen separately and the first source that
gives a usable value wins. A project candidate is usable only if the project exists, so the caller
passes a predicate for that.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from xnatio.sandbox.dicom_header import DicomHeader

__all__ = ["Routing", "clean_label", "comment_value", "route"]

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


def route(h: DicomHeader, project_exists: Callable[[str], bool]) -> Routing:
    """Apply the §6.2 extractors to a header.

    Parameters
    ----------
    h
        The object's header values.
    project_exists
        Returns whether a project ID (exactly as found) exists.
    """
    comments = [h.patient_comments, h.study_comments, h.additional_patient_history]

    def from_comments(key: str) -> str:
        for c in comments:
            v = comment_value(c, key) if c else None
            if v:
                return v
        return ""

    project: str | None = None
    candidates = [comment_value(c, "Project") if c else None for c in comments]
    candidates += [h.study_description, h.accession_number]
    for cand in candidates:
        if cand and project_exists(cand):
            project = cand
            break

    subject = from_comments("Subject") or clean_label(h.patient_name)
    session = from_comments("Session") or clean_label(h.patient_id) or "dicom_upload"

    aa_raw = from_comments("AA").lower()
    auto_archive = True if aa_raw in ("t", "true") else False if aa_raw in ("f", "false") else None
    return Routing(project, subject, session, auto_archive)
