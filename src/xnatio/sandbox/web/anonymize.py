"""The anonymisation scripts over HTTP, as XNAT serves them (docs/anonymisation.md).

Two sets of routes reach the same scripts (:mod:`xnatio.sandbox.store.anonymize`):

- XNAT's anonymisation API, ``/xapi/anonymize/...``: the default script, the site script and
  its ``enabled`` flag, a project's script and its flag. A project without an enabled script
  answers 204; the flags are set with ``PUT .../enabled?enable=true|false`` and a JSON
  content type (415 without one, as Spring answers).
- The config service, which the XNAT Desktop Client reads: ``/data/config/anon/script`` and
  ``/data/projects/{P}/config/anon/projects/{P}``; ``format=json`` lists the record (``status``
  ``enabled`` or ``disabled``), ``contents=true`` gives the text (404 when missing or disabled,
  204 with ``accept-not-found=true``); PUT stores a new version (201, or 200 when unchanged)
  and/or sets ``status``; DELETE disables.
"""

from __future__ import annotations

from collections.abc import Callable

from xnatio.sandbox.store.anonymize import DEFAULT_SCRIPT, AnonScripts, anon_scripts
from xnatio.sandbox.web.config import _config_body, status_flag
from xnatio.sandbox.web.messages import App, HttpError, Request, Response, table, true

__all__ = ["ROUTES"]

_TEXT = "text/plain;charset=UTF-8"


def _scripts(app: App) -> AnonScripts:
    return anon_scripts(app.store.index)


def _project(app: App, project: str) -> str:
    if not app.store.project_exists(project):
        raise HttpError(404, f"No project with ID {project} was found")
    return project


def default_script(app: App, req: Request) -> Response:
    """``GET /xapi/anonymize/default``: XNAT's built-in site script."""
    return Response(200, DEFAULT_SCRIPT.encode(), _TEXT)


# Each route has its own named handler, as in the other route modules; the site and project
# handlers of the script (here) and of its flag (site_enabled, project_enabled) look alike
# because both only pick the project and pass it to the one body (_script, _enabled).
def site_script(app: App, req: Request) -> Response:
    """``GET|PUT /xapi/anonymize/site``: the site script's text (empty when none)."""
    return _script(app, req, None)


def project_script(app: App, req: Request, project: str) -> Response:
    """``GET|PUT /xapi/anonymize/projects/{P}``: 204 when the project has no enabled script."""
    return _script(app, req, _project(app, project))


def _script(app: App, req: Request, project: str | None) -> Response:
    scripts = _scripts(app)
    if req.method == "PUT":
        scripts.put(project, _config_body(app, req), user=req.user)
        return Response(200, b"")
    info = scripts.info(project)
    text = info["contents"] if info is not None else ""
    if project is not None and (info is None or info["status"] != "enabled" or not text.strip()):
        return Response(204, b"")
    return Response(200, text.encode(), _TEXT)


def site_enabled(app: App, req: Request) -> Response:
    """``GET|PUT /xapi/anonymize/site/enabled``: the site preference, true by default."""
    return _enabled(app, req, None)


def project_enabled(app: App, req: Request, project: str) -> Response:
    """``GET|PUT /xapi/anonymize/projects/{P}/enabled``: false when the project has no script."""
    return _enabled(app, req, _project(app, project))


def _enabled(app: App, req: Request, project: str | None) -> Response:
    scripts = _scripts(app)
    if req.method == "PUT":
        if req.media_type != "application/json":
            raise HttpError(415, "Content type not supported; send application/json")
        value = req.param("enable")
        scripts.set_enabled(project, value is None or true(value), user=req.user)
        return Response(200, b"")
    info = scripts.info(project)
    on = info["status"] == "enabled" if info is not None else project is None
    return Response(200, b"true" if on else b"false", "application/json")


def site_config(app: App, req: Request) -> Response:
    """``GET|PUT|DELETE /data/config/anon/script``: the config service's record."""
    return _config(app, req, None)


def project_config(app: App, req: Request, project: str, again: str) -> Response:
    """``GET|PUT|DELETE /data/projects/{P}/config/anon/projects/{P}``."""
    if again != project:
        raise HttpError(
            404, f"Couldn't find config for user {req.user} and project {project} on tool [anon]"
        )
    return _config(app, req, _project(app, project))


def _config(app: App, req: Request, project: str | None) -> Response:
    scripts = _scripts(app)
    if req.method == "DELETE":
        scripts.set_enabled(project, False, user=req.user)
        return Response(200, b"")
    if req.method == "PUT":
        return _config_put(app, req, scripts, project)
    info = scripts.info(project)
    path = "script" if project is None else f"projects/{project}"
    owner = project or "null"
    if true(req.param("contents")) and not true(req.param("meta")):
        if info is None or info["status"] == "disabled":
            if true(req.param("accept-not-found")):
                return Response(204, b"")
            raise HttpError(
                404,
                f"Config not found for user {req.user} and project {owner} on tool [anon] "
                f"path [{path}]",
            )
        return Response(200, info["contents"].encode(), _TEXT)
    if info is None:
        raise HttpError(
            404, f"Couldn't find config for user {req.user} and project {owner} on tool [anon] "
            f"path [{path}]"
        )  # fmt: skip
    row = {
        "tool": "anon",
        "path": path if project is None else f"/{path}",
        "project": project or "",
        "user": info["user"],
        "create_date": info["create_date"],
        "reason": "",
        "contents": "" if true(req.param("meta")) else info["contents"],
        "unversioned": "false",
        "version": info["version"],
        "status": info["status"],
    }
    return table(req, [row], "Configuration")


def _config_put(app: App, req: Request, scripts: AnonScripts, project: str | None) -> Response:
    enabled = status_flag(req)
    if enabled is not None:
        if scripts.info(project) is None and not _has_body(req):
            raise HttpError(400, "No configuration to set the status of")
        if not _has_body(req):
            scripts.set_enabled(project, enabled, user=req.user)
            return Response(200, b"")
    elif not _has_body(req):
        raise HttpError(400, "Nothing to set: give the script as the body or a status")
    changed = scripts.put(project, _config_body(app, req), user=req.user)
    if enabled is not None:
        scripts.set_enabled(project, enabled, user=req.user)
    return Response(201 if changed else 200, b"")


def _has_body(req: Request) -> bool:
    return req.body.length is None or req.body.length > 0


def _methods(*names: str) -> frozenset[str]:
    return frozenset(names)


_XAPI = ("xapi", "anonymize")
_PROJECT_CONFIG = ("data", "projects", "{}", "config", "anon", "projects", "{}")

#: The routes, in the shape of :mod:`xnatio.sandbox.web.routes`'s table.
ROUTES: list[tuple[frozenset[str], tuple[str, ...], Callable[..., Response]]] = [
    (_methods("GET"), (*_XAPI, "default"), default_script),
    (_methods("GET", "PUT"), (*_XAPI, "site"), site_script),
    (_methods("GET", "PUT"), (*_XAPI, "site", "enabled"), site_enabled),
    (_methods("GET", "PUT"), (*_XAPI, "projects", "{}"), project_script),
    (_methods("GET", "PUT"), (*_XAPI, "projects", "{}", "enabled"), project_enabled),
    (_methods("GET", "PUT", "DELETE"), ("data", "config", "anon", "script"), site_config),
    (_methods("GET", "PUT", "DELETE"), _PROJECT_CONFIG, project_config),
]
