"""The data-type schema documents the sandbox serves at ``/xapi/schemas/{name}``.

XNAT describes its data types in XML Schema documents (``xnat.xsd`` in xnat-data-models) and serves
them at ``/xapi/schemas``; clients such as xnatpy build their object model from them
(docs/xnat-behaviour.md §14.2). The sandbox serves a subset written from the published schema's
facts: the type hierarchy, and for each type the names and XML types of the fields the sandbox
fills or clients commonly read. The document is generated from the table below, not copied.

Covered: projects, subjects, experiments, the image session and scan bases, MR, CT, PET, PET/MR,
the other modalities the sandbox recognises (as plain extensions of the bases) and resources.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from xml.sax.saxutils import quoteattr

__all__ = [
    "SCHEMA_NAMES",
    "XNAT_TYPES",
    "DataType",
    "Field",
    "is_a",
    "is_extended",
    "schema_document",
]

XS_NS = "http://www.w3.org/2001/XMLSchema"
XNAT_NS = "http://nrg.wustl.edu/xnat"
XDAT_NS = "http://nrg.wustl.edu/xdat"


@dataclass(frozen=True)
class Field:
    """One field of a data type.

    Attributes
    ----------
    name
        The field's name (an XML element, or an attribute when ``attribute``).
    xs_type
        Its type: an XML Schema built-in (``xs:string``, ``xs:date`` ...) or, for a repeated
        child, the child's data type (``xnat:imageScanData``).
    attribute
        Whether the field is an XML attribute of the element rather than a child element.
    wrapper
        For a repeated child: the element that holds the repetitions (``scans`` around ``scan``);
        empty when the child repeats directly inside the type.
    repeated
        Whether the field may occur any number of times.
    """

    name: str
    xs_type: str = "xs:string"
    attribute: bool = False
    wrapper: str = ""
    repeated: bool = False


@dataclass(frozen=True)
class DataType:
    """One data type: its name in the ``xnat`` namespace, its base type and its own fields."""

    name: str
    base: str | None
    fields: tuple[Field, ...] = ()
    display: str | None = None  # XNAT's display identifier (the field shown as its name)
    abstract: bool = False


def _attrs(*names: str, xs_type: str = "xs:string") -> tuple[Field, ...]:
    return tuple(Field(n, xs_type, attribute=True) for n in names)


def _elements(*names: str, xs_type: str = "xs:string") -> tuple[Field, ...]:
    return tuple(Field(n, xs_type) for n in names)


def _children(wrapper: str, name: str, xs_type: str) -> Field:
    return Field(name, xs_type, wrapper=wrapper, repeated=True)


_RESOURCES = _children("resources", "resource", "xnat:abstractResource")
_MR_SESSION = _elements("coil", "fieldStrength", "marker", "stabilization")
_PET_SESSION = (
    *_elements("stabilization", "studyType", "patientID", "patientName"),
    *_elements("start_time", "start_time_scan", "start_time_injection", xs_type="xs:dateTime"),
    Field("blood_glucose", "xs:float"),
    Field("blood_glucose_units"),
    Field("blood_glucose_time", "xs:dateTime"),
)

# Types whose own fields the sandbox does not model: plain extensions of the image session and
# image scan bases (XNAT's own versions add modality-specific fields).
_PLAIN_SESSIONS = ("otherDicom", "us", "cr", "dx", "mg", "nm", "xa", "rf", "ct")
_PLAIN_SCANS = ("otherDicom", "us", "cr", "dx", "mg", "nm", "xa", "rf", "sr", "sc", "ct", "pet")

XNAT_TYPES: tuple[DataType, ...] = (
    DataType(
        "projectData",
        None,
        (
            *_elements("name", "type", "description", "keywords"),
            _RESOURCES,
            *_attrs("ID", "secondary_ID"),
            Field("active", "xs:boolean", attribute=True),
        ),
    ),
    DataType(
        "subjectData",
        None,
        (
            _RESOURCES,
            _children("experiments", "experiment", "xnat:subjectAssessorData"),
            *_attrs("ID", "project", "group", "label", "src", "initials"),
        ),
        display="label",
    ),
    DataType(
        "experimentData",
        None,
        (
            Field("date", "xs:date"),
            Field("time", "xs:time"),
            Field("duration", "xs:duration"),
            *_elements("note", "acquisition_site"),
            _RESOURCES,
            *_attrs("ID", "project", "visit_id", "visit", "original", "protocol", "label"),
            Field("version", "xs:integer", attribute=True),
        ),
        display="label",
    ),
    DataType(
        "subjectAssessorData", "experimentData", (Field("subject_ID"), Field("age", "xs:float"))
    ),
    DataType(
        "imageSessionData",
        "subjectAssessorData",
        (
            *_elements("operator", "prearchivePath", "dcmAccessionNumber"),
            *_elements("dcmPatientId", "dcmPatientName"),
            Field("dcmPatientBirthDate", "xs:date"),
            Field("dcmPatientWeight", "xs:float"),
            _children("scans", "scan", "xnat:imageScanData"),
            *_attrs("session_type", "modality", "UID", "study_id"),
        ),
    ),
    DataType("mrSessionData", "imageSessionData", _MR_SESSION),
    DataType("petSessionData", "imageSessionData", _PET_SESSION),
    DataType("petmrSessionData", "imageSessionData", (*_MR_SESSION[:3], *_PET_SESSION)),
    *(DataType(f"{m}SessionData", "imageSessionData") for m in _PLAIN_SESSIONS),
    DataType(
        "imageScanData",
        None,
        (
            Field("image_session_ID"),
            *_elements("note", "quality", "condition", "series_description", "series_class"),
            *_elements("documentation", "modality"),
            Field("frames", "xs:integer"),
            Field("operator"),
            Field("file", "xnat:abstractResource", repeated=True),
            Field("startTime", "xs:time"),
            Field("start_date", "xs:date"),
            *_elements("requestedProcedureDescription", "protocolName", "bodyPartExamined"),
            *_attrs("ID", "type", "UID", "project"),
        ),
        display="ID",
    ),
    DataType("mrScanData", "imageScanData", (*_MR_SESSION, Field("fileNameUUID"))),
    *(DataType(f"{m}ScanData", "imageScanData") for m in _PLAIN_SCANS),
    DataType(
        "abstractResource",
        None,
        (
            Field("note"),
            Field("label", attribute=True),
            Field("file_count", "xs:integer", attribute=True),
            Field("file_size", "xs:long", attribute=True),
        ),
        display="label",
        abstract=True,
    ),
    DataType(
        "resource",
        "abstractResource",
        (
            Field("URI", "xs:anyURI", attribute=True),
            *_attrs("format", "description", "content", "cachePath"),
        ),
    ),
    DataType("resourceCatalog", "resource"),
)

# The schema list XNAT answers holds many more (security, catalog, project, ...): the sandbox
# serves the two xnatpy always reads.
SCHEMA_NAMES = ("xnat", "xdat")

_BASES = {f"xnat:{t.name}": (f"xnat:{t.base}" if t.base else None) for t in XNAT_TYPES}


_EXTENDED = frozenset(base.lower() for base in _BASES.values() if base is not None)


def is_extended(xsi_type: str) -> bool:
    """Whether another data type extends ``xsi_type`` (``xnat:imageSessionData``): XNAT
    secures only the leaf types of its experiments, not such bases."""
    return xsi_type.lower() in _EXTENDED


def is_a(xsi_type: str, base: str) -> bool:
    """Whether ``xsi_type`` is ``base`` or extends it (``xnat:mrSessionData`` is an
    ``xnat:experimentData``), compared case-insensitively as XNAT compares element names."""
    wanted = base.lower()
    current: str | None = xsi_type
    seen = 0
    while current is not None and seen < 16:
        if current.lower() == wanted:
            return True
        current = _BASES.get(current)
        seen += 1
    return False


@cache
def schema_document(name: str) -> bytes | None:
    """The XML Schema document ``name`` (``xnat`` or ``xdat``), or ``None`` for another name."""
    if name == "xnat":
        body = "".join(_type_xml(t) for t in XNAT_TYPES)
        return _schema(XNAT_NS, body)
    if name == "xdat":
        # XNAT's security and display model; the sandbox has one user and no displays, so the
        # document declares the namespace and no types.
        return _schema(XDAT_NS, "")
    return None


def _schema(target: str, body: str) -> bytes:
    head = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<xs:schema targetNamespace="{target}" '
        f'xmlns:xnat="{XNAT_NS}" xmlns:xdat="{XDAT_NS}" xmlns:xs="{XS_NS}" '
        'elementFormDefault="qualified" attributeFormDefault="unqualified">\n'
    )
    return (head + body + "</xs:schema>\n").encode()


def _type_xml(t: DataType) -> str:
    """One ``xs:complexType``: display identifier, then elements and attributes, wrapped in an
    extension of the base type when there is one."""
    info = ""
    if t.display or t.abstract:
        parts = ' abstract="true"' if t.abstract else ""
        parts += f" displayIdentifiers={quoteattr(t.display)}" if t.display else ""
        info = f"<xs:annotation><xs:appinfo><xdat:element{parts}/></xs:appinfo></xs:annotation>"
    elements = "".join(_element_xml(f) for f in t.fields if not f.attribute)
    attributes = "".join(
        f"<xs:attribute name={quoteattr(f.name)} type={quoteattr(f.xs_type)}/>"
        for f in t.fields
        if f.attribute
    )
    content = (f"<xs:sequence>{elements}</xs:sequence>" if elements else "") + attributes
    if t.base:
        base = quoteattr(f"xnat:{t.base}")
        content = (
            f"<xs:complexContent><xs:extension base={base}>{content}</xs:extension>"
            "</xs:complexContent>"
        )
    return f"<xs:complexType name={quoteattr(t.name)}>{info}{content}</xs:complexType>\n"


def _element_xml(f: Field) -> str:
    occurs = ' minOccurs="0" maxOccurs="unbounded"' if f.repeated else ' minOccurs="0"'
    inner = f"<xs:element name={quoteattr(f.name)} type={quoteattr(f.xs_type)}{occurs}/>"
    if not f.wrapper:
        return inner
    return (
        f'<xs:element name={quoteattr(f.wrapper)} minOccurs="0"><xs:complexType><xs:sequence>'
        f"{inner}</xs:sequence></xs:complexType></xs:element>"
    )
