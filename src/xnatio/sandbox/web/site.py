"""What the site says about itself: its build and its data-type schemas (docs/xnat-behaviour.md
§14.1, §14.2).

``/data/version`` stays unanswered (404), as on XNAT 1.7 and later; clients ask
``/xapi/siteConfig/buildInfo`` instead.
"""

from __future__ import annotations

from xnatio.sandbox.schemas import SCHEMA_NAMES, XNAT_TYPES, schema_document
from xnatio.sandbox.web.messages import App, HttpError, Request, Response, json_response, table

__all__ = [
    "XNAT_VERSION",
    "build_info",
    "schema",
    "schemas",
    "search_element_fields",
    "search_elements",
]

# The XNAT release whose behaviour the sandbox follows. Clients pick features by it: xnatpy sends
# Direct-Archive and Ignore-Unparsable only to 1.8.3 or later.
XNAT_VERSION = "1.8.10"

_BUILD_INFO = {
    "version": XNAT_VERSION,
    "buildNumber": "sandbox",
    "buildDate": "",
    "commit": "",
    "sha": "",
    "branch": "",
}


def build_info(app: App, req: Request, prop: str | None = None) -> Response:
    """``GET /xapi/siteConfig/buildInfo[/{property}]``: the build's properties as JSON, or one
    of them as text."""
    if prop is None:
        return json_response(_BUILD_INFO)
    value = _BUILD_INFO.get(prop)
    if value is None:
        raise HttpError(404, f"No build property {prop}")
    return Response(200, value.encode(), "text/plain")


def schemas(app: App, req: Request) -> Response:
    """``GET /xapi/schemas``: the names of the schema documents, as a JSON list."""
    return json_response(list(SCHEMA_NAMES))


def schema(app: App, req: Request, name: str) -> Response:
    """``GET /xapi/schemas/{name}``: one schema document (XML Schema)."""
    document = schema_document(name)
    if document is None:
        raise HttpError(404, f"No schema named {name}")
    return Response(200, document, "application/xml")


# The data types with their own rows (XNAT's element securities): projects, subjects and the
# session types, with XNAT's singular and plural names where the sandbox knows them.
_NAMES = {
    "xnat:projectData": ("Project", "Projects"),
    "xnat:subjectData": ("Subject", "Subjects"),
    "xnat:mrSessionData": ("MR Session", "MR Sessions"),
    "xnat:ctSessionData": ("CT Session", "CT Sessions"),
    "xnat:petSessionData": ("PET Session", "PET Sessions"),
}
_SESSION_TYPES = [f"xnat:{t.name}" for t in XNAT_TYPES if t.name.endswith("SessionData")]
_ELEMENTS = ("xnat:projectData", "xnat:subjectData", *_SESSION_TYPES[1:])  # not the base


def search_elements(app: App, req: Request) -> Response:
    """``GET /data/search/elements``: the searchable data types, with how many of each the
    archive holds (§14.3)."""
    counts = app.store.catalog.type_counts()
    rows = []
    for element in _ELEMENTS:
        singular, plural = _NAMES.get(element, (element, element))
        rows.append(
            {
                "ELEMENT_NAME": element,
                "SINGULAR": singular,
                "PLURAL": plural,
                "SECURED": "true",
                "COUNT": str(counts.get(element, 0)),
            }
        )
    return table(req, rows, "Data-Types")


def search_element_fields(app: App, req: Request, element: str) -> Response:
    """``GET /data/search/elements/{type}``: the type's display fields; the sandbox defines none,
    so the table is empty (§14.3)."""
    if element not in _ELEMENTS:
        raise HttpError(404, f"Unable to find element {element}")
    return table(req, [], "Fields")
