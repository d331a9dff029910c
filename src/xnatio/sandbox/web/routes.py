"""Every route of the sandbox in one table, and the dispatch of a request to its handler.

A path pattern is a tuple of segments: a literal, ``{}`` for one captured segment, or ``{*}`` (last)
for the rest of the path as one argument. Public routes answer without authentication; every
other request is authenticated first, so an unknown path answers 401 before it answers 404.
Section numbers (§) in the table refer to docs/xnat-behaviour.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from xnatio.sandbox.bodies import UploadError
from xnatio.sandbox.store import StoreError
from xnatio.sandbox.web import (
    anonymize,
    archive,
    auth,
    config,
    control,
    imports,
    prearchive,
    projects,
    resources,
    site,
)
from xnatio.sandbox.web.messages import App, HttpError, Reply, Request, Response

__all__ = ["handle", "iter_routes"]

_Handler = Callable[..., Response]
_Route = tuple[frozenset[str], tuple[str, ...], _Handler]

_EXP = ("data", "projects", "{}", "subjects", "{}", "experiments", "{}")
_PREARC = ("data", "prearchive", "projects", "{}", "{}", "{}")


def _methods(*names: str) -> frozenset[str]:
    return frozenset(names)


# Answered without authentication. The path alone picks the route: the handler answers every
# method itself (the login page to all of them; the auth service 405 without an Allow header).
_PUBLIC: list[_Route] = [
    (_methods("GET"), ("app", "template", "Login.vm"), auth.login_page),
    (_methods("PUT", "POST"), ("data", "services", "auth"), auth.services_auth),
]


def by_experiment_id(app: App, req: Request, experiment_id: str, *rest: str) -> Response:
    """``/data/experiments/{ID}[/...]``: the same answers as the project path."""
    ref = app.store.experiment_ref(experiment_id)
    if ref is None:
        raise HttpError(404, f"Unable to find experiment {experiment_id}")
    # Answer as the equivalent project/subject/experiment path does (same route table).
    project, subject_id, eid = ref
    rest_parts = req.parts[3:]
    alias = Request(
        method=req.method,
        path=req.path,
        parts=[
            "data",
            "projects",
            project,
            "subjects",
            subject_id,
            "experiments",
            eid,
            *rest_parts,
        ],
        query=req.query,
        headers=req.headers,
        body=req.body,
        user=req.user,
        session=req.session,
        cookies=req.cookies,
    )
    route, args = _match(_ROUTES, alias)
    return route(app, alias, *args)


_ROUTES: list[_Route] = [
    # authentication (§2) and sandbox control
    (_methods("GET", "POST", "DELETE"), ("data", "JSESSION"), auth.jsession),
    (_methods("GET"), ("data", "auth"), auth.data_auth),
    (_methods("GET", "POST"), ("data", "services", "tokens", "{}"), auth.tokens),
    (_methods("GET", "POST"), ("data", "services", "tokens", "{}", "{}"), auth.tokens),
    (_methods("GET", "POST"), ("data", "services", "tokens", "{}", "{}", "{}"), auth.tokens),
    (_methods("GET", "PUT"), ("sandbox", "faults"), control.faults),
    (_methods("GET", "DELETE"), ("sandbox", "stats"), control.stats),
    (_methods("POST"), ("data", "services", "refresh", "catalog"), control.refresh_catalog),
    # the import service (§3) and the archive service (§9)
    (_methods("GET", "POST", "PUT", "DELETE"), ("data", "services", "import"),
     imports.import_service),
    (_methods("POST"), ("data", "services", "archive"), prearchive.archive_service),
    (_methods("POST"), ("data", "services", "prearchive", "{}"), prearchive.batch_action),
    # site configuration: DICOM routing rules (§6.2)
    (_methods("GET", "PUT", "DELETE"), ("data", "config", "dicom", "{}"), config.dicom_config),
    # projects, subjects, experiments (§4.2, §5)
    (_methods("GET"), ("data", "projects"), projects.projects),
    (_methods("GET", "PUT"), ("data", "projects", "{}"), projects.project),
    (_methods("GET"), ("data", "projects", "{}", "prearchive_code"),
     projects.prearchive_code_get),
    (_methods("PUT", "POST"), ("data", "projects", "{}", "prearchive_code", "{}"),
     projects.prearchive_code_put),
    (_methods("GET"), ("data", "projects", "{}", "subjects"), projects.subjects),
    (_methods("GET", "PUT"), ("data", "projects", "{}", "subjects", "{}"), projects.subject),
    (_methods("GET"), ("data", "projects", "{}", "experiments"), projects.experiments),
    (_methods("GET"), (*_EXP[:5], "experiments"), projects.experiments),
    (_methods("GET", "PUT"), _EXP, projects.experiment),
    (_methods("GET"), ("data", "projects", "{}", "experiments", "{}"),
     projects.project_experiment),
    (_methods("GET"), ("data", "subjects"), projects.subjects),
    (_methods("GET"), ("data", "subjects", "{}"), projects.subject_by_id),
    (_methods("GET"), ("data", "experiments"), projects.experiments),
    (_methods("GET", "PUT", "POST", "DELETE"), ("data", "experiments", "{}", "{*}"),
     by_experiment_id),
    (_methods("GET"), ("data", "experiments", "{}"), by_experiment_id),
    # archived sessions (§4.2)
    (_methods("GET"), (*_EXP, "scans"), archive.scans),
    (_methods("GET"), (*_EXP, "scans", "{}"), archive.scan),
    (_methods("GET"), (*_EXP, "scans", "{}", "files"), archive.scan_files),
    # resources and their files (§7, §14.4)
    (_methods("GET"), (*_EXP, "resources"), resources.resources),
    (_methods("GET"), (*_EXP, "scans", "{}", "resources"), resources.resources),
    (_methods("GET", "PUT", "POST", "DELETE"), (*_EXP, "resources", "{}"),
     resources.session_resource),
    (_methods("GET", "PUT", "POST", "DELETE"), (*_EXP, "scans", "{}", "resources", "{}"),
     resources.resource),
    (_methods("GET", "PUT", "POST"), (*_EXP, "scans", "{}", "resources", "{}", "files"),
     resources.resource_files),
    (_methods("GET", "PUT", "POST", "DELETE"),
     (*_EXP, "scans", "{}", "resources", "{}", "files", "{*}"), resources.resource_file),
    (_methods("GET", "PUT", "POST"), (*_EXP, "resources", "{}", "files"),
     resources.session_resource_files),
    (_methods("GET", "PUT", "POST", "DELETE"), (*_EXP, "resources", "{}", "files", "{*}"),
     resources.session_resource_file),
    # the prearchive (§4.2, §9) and Direct-Archive (§3.5)
    (_methods("GET"), ("data", "prearchive"), prearchive.prearchive),
    (_methods("GET"), ("data", "prearchive", "projects"), prearchive.prearchive),
    (_methods("GET"), ("data", "prearchive", "projects", "{}"), prearchive.prearchive),
    (_methods("GET", "POST", "DELETE"), _PREARC, prearchive.prearchive_session),
    (_methods("GET"), (*_PREARC, "scans"), prearchive.prearchive_scans),
    (_methods("GET"), (*_PREARC, "scans", "{}", "resources"),
     prearchive.prearchive_scan_resources),
    (_methods("GET"), (*_PREARC, "scans", "{}", "resources", "{}", "files"),
     prearchive.prearchive_scan_files),
    (_methods("GET"), (*_PREARC, "scans", "{}", "resources", "{}", "files", "{*}"),
     prearchive.prearchive_scan_file),
    (_methods("GET", "POST"), ("xapi", "direct-archive", "{}", "{}", "{}"),
     prearchive.direct_archive),
    # the site's build and data-type schemas (§14)
    (_methods("GET"), ("xapi", "siteConfig", "buildInfo"), site.build_info),
    (_methods("GET"), ("xapi", "siteConfig", "buildInfo", "{}"), site.build_info),
    (_methods("GET"), ("xapi", "schemas"), site.schemas),
    (_methods("GET"), ("xapi", "schemas", "{*}"), site.schema),
    (_methods("GET"), ("data", "search", "elements"), site.search_elements),
    (_methods("GET"), ("data", "search", "elements", "{}"), site.search_element_fields),
    # anonymisation scripts: XNAT's API and the config service (docs/anonymisation.md)
    *anonymize.ROUTES,
]  # fmt: skip


def handle(app: App, req: Request) -> Response:
    """Answer one request: public routes, then authentication, then the route table.

    The store's and the body reader's errors become :class:`HttpError` with their status.
    """
    try:
        public = _public(req)
        if public is not None:
            route, args = public
        else:
            auth.authenticate(app, req)
            route, args = _match(_ROUTES, req)
        return route(app, req, *args)
    except Reply as reply:
        return reply.response
    except StoreError as exc:
        raise HttpError(exc.status, str(exc)) from exc
    except UploadError as exc:
        raise HttpError(exc.status, exc.message) from exc


def iter_routes() -> Iterator[tuple[str, str]]:
    """(methods, path pattern) of every route; for documentation and tests."""
    for methods, pattern, _ in (*_PUBLIC, *_ROUTES):
        yield ",".join(sorted(methods)), "/" + "/".join(pattern)


def _public(req: Request) -> tuple[_Handler, list[Any]] | None:
    for _, pattern, route in _PUBLIC:
        args = _match_pattern(pattern, req.parts)
        if args is not None:
            return route, args
    return None


def _match(routes: list[_Route], req: Request) -> tuple[_Handler, list[Any]]:
    """Find the route for a request; 404 for an unknown path, 405 for a wrong method."""
    allowed: set[str] = set()
    for methods, pattern, route in routes:
        args = _match_pattern(pattern, req.parts)
        if args is None:
            continue
        if req.method in methods or (req.method == "HEAD" and "GET" in methods):
            return route, args
        allowed |= methods
    if allowed:
        raise HttpError(405, "Method Not Allowed", {"Allow": ", ".join(sorted(allowed))})
    raise HttpError(404, "The server has not found anything matching the request URI")


def _match_pattern(pattern: tuple[str, ...], parts: list[str]) -> list[Any] | None:
    args: list[Any] = []
    for i, token in enumerate(pattern):
        if token == "{*}":  # noqa: S105 - a path pattern, not a password
            if i >= len(parts):
                return None
            args.append("/".join(parts[i:]))
            return args
        if i >= len(parts):
            return None
        if token == "{}":  # noqa: S105
            args.append(parts[i])
        elif token != parts[i]:
            return None
    return args if len(parts) == len(pattern) else None
