"""``columns=``, ``xsiType=`` and field filters on the listings XNAT builds with a query
(projects, subjects, experiments, scans; docs/xnat-behaviour.md §14.6).

Each listing has shortcuts, short names for a field's XML path (``date`` for
``xnat:experimentData/date``). ``columns`` is a comma list of shortcuts and XML paths: the rows
carry those fields, in that order, then ``URI``; unknown shortcuts and fields are left out. A
header is the field's shortcut, also for a field asked by its XML path, through the type that
defines it or an extension of it (``xnat:mrSessionData/date`` comes back as ``date``). Without
``columns`` (or with ``DEFAULT``) the listing's default fields come back.

``xsiType=T`` (one type) lists only rows of type T and its extensions, as does asking for a field
of such a type (``xnat:mrSessionData/date`` lists MR sessions). While the type listed is a base
type (``xnat:experimentData``), experiment rows also carry ``xsiType`` and ``project``. Any other
parameter named like a shortcut, or like an XML path, filters: its value is a comma list of
alternatives, where ``*`` and ``%`` match any text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from xnatio.sandbox.schemas import is_a, is_extended
from xnatio.sandbox.web.messages import Request

__all__ = ["EXPERIMENTS", "PROJECTS", "SCANS", "SUBJECTS", "Listing", "select"]

Row = dict[str, str]


@dataclass(frozen=True)
class Listing:
    """A listing's root data type, its shortcuts (short name -> XML path) and default fields.

    ``with_base_root`` are the fields XNAT adds when the listing's root is a base type (no
    security of its own): the experiment listings then always carry ``xsiType`` and
    ``project``.
    """

    root: str
    shortcuts: dict[str, str]
    defaults: tuple[str, ...]
    with_base_root: tuple[str, ...] = ()


def _paths(root: str, names: str, **more: str) -> dict[str, str]:
    return {n: f"{root}/{n}" for n in names.split()} | more


PROJECTS = Listing(
    "xnat:projectData",
    _paths(
        "xnat:projectData",
        "ID secondary_ID name description keywords",
        pi_firstname="xnat:projectData/PI/firstname",
        pi_lastname="xnat:projectData/PI/lastname",
    ),
    ("ID", "secondary_ID", "name", "description", "pi_firstname", "pi_lastname"),
)
SUBJECTS = Listing(
    "xnat:subjectData",
    _paths(
        "xnat:subjectData",
        "ID project label group src",
        insert_date="xnat:subjectData/meta/insert_date",
        insert_user="xnat:subjectData/meta/insert_user/login",
    ),
    ("ID", "project", "label", "insert_date", "insert_user"),
)
EXPERIMENTS = Listing(
    "xnat:experimentData",
    _paths(
        "xnat:experimentData",
        "ID date time note project label",
        modality="xnat:imageSessionData/modality",
        UID="xnat:imageSessionData/UID",
        subject_ID="xnat:subjectAssessorData/subject_ID",
        subject_label="xnat:subjectData/label",
        insert_date="xnat:experimentData/meta/insert_date",
        insert_user="xnat:experimentData/meta/insert_user/login",
        xsiType="xnat:experimentData/extension_item/element_name",
    ),
    (
        "ID",
        "label",
        "project",
        "subject_ID",
        "subject_label",
        "xsiType",
        "date",
        "insert_date",
        "UID",
    ),
    with_base_root=("xsiType", "project"),
)
SCANS = Listing(
    "xnat:imageScanData",
    _paths(
        "xnat:imageScanData",
        "ID type UID note quality series_description modality xnat_imagescandata_id",
        xsiType="xnat:imageScanData/extension_item/element_name",
    ),
    (
        "xnat_imagescandata_id",
        "ID",
        "type",
        "quality",
        "xsiType",
        "note",
        "series_description",
        "UID",
    ),
)

# Parameters that never filter, whatever their name.
_NOT_FILTERS = frozenset({"format", "columns", "xsiType", "accept-not-found", "sortBy"})


def select(req: Request, listing: Listing, rows: list[Row]) -> list[Row]:
    """The rows the request asks for, with the fields it asks for (module docstring)."""
    root = listing.root
    xsi = req.param("xsiType")
    if xsi and "," not in xsi:
        root = xsi
    asked = req.param("columns")
    names = (
        [c.strip() for c in asked.split(",") if c.strip()]
        if asked and asked != "DEFAULT"
        else list(listing.defaults)
    )
    columns: list[tuple[str, str]] = []  # (header, shortcut)
    for name in names:
        found = _resolve(listing, name)
        if found is None or found[1] == "URI" or found in columns:
            continue
        columns.append(found)
        root = _narrower(root, name)
    filters = [
        (found[1], _matcher(values[0]), name)
        for name, values in req.query.items()
        if name not in _NOT_FILTERS and values and (found := _resolve(listing, name)) is not None
    ]
    for _, _, name in filters:
        root = _narrower(root, name)
    if is_extended(root):
        columns += [(f, f) for f in listing.with_base_root if (f, f) not in columns]
    out = []
    narrowed = root.lower() != listing.root.lower()
    for row in rows:
        if narrowed and not is_a(row.get("xsiType") or listing.root, root):
            continue
        if not all(match(row.get(field, "")) for field, match, _ in filters):
            continue
        selected = {header: row.get(field, "") for header, field in columns}
        selected["URI"] = row["URI"]
        out.append(selected)
    return out


def _resolve(listing: Listing, name: str) -> tuple[str, str] | None:
    """(header, shortcut) for a shortcut or an XML path of this listing, or ``None``."""
    if "/" not in name:
        return (name, name) if name in listing.shortcuts or name == "URI" else None
    lowered = name.lower()
    for short, path in listing.shortcuts.items():
        if path.lower() == lowered:
            return short, short
    # A field reached through an extension (xnat:mrSessionData/date) is the field of the type
    # that defines it (xnat:experimentData/date), and takes that field's shortcut as header.
    element, _, field = name.rpartition("/")
    for short, path in listing.shortcuts.items():
        own, _, own_field = path.rpartition("/")
        if own_field.lower() == field.lower() and (is_a(element, own) or is_a(own, element)):
            return short, short
    return None


def _narrower(root: str, name: str) -> str:
    """The listing's root after asking for ``name``: a field of an extension of the root
    narrows the rows to that extension."""
    element = name.rpartition("/")[0]
    if element and element.lower() != root.lower() and is_a(element, root):
        return element
    return root


def _matcher(values: str) -> Callable[[str], object]:
    """Whether a value is one of a comma list of alternatives (``*`` and ``%`` match any text)."""
    alternatives = [
        ".*".join(re.escape(part) for part in re.split(r"[*%]", value))
        for value in values.split(",")
    ]
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.DOTALL).fullmatch
