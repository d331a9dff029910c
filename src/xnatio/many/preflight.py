"""One look at the server for a whole run: which projects exist, which sessions they hold.

Two listings per project, whatever the number of sessions (docs/xnat-behaviour.md §4.2):
``GET /data/projects/{P}`` (403/404: missing or unreadable) and
``GET /data/projects/{P}/experiments?columns=ID,label,subject_label``.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from xnatio.errors import ConnectionFailedError
from xnatio.xnat.session import XnatSession, describe_connect_error

__all__ = ["ServerView", "look_at_server"]


@dataclass
class ServerView:
    """What the server holds for the projects of a run.

    Attributes
    ----------
    projects
        Project ID -> whether it exists and is readable.
    sessions
        Project ID -> session label -> subject label (``""`` when the listing has none).
    """

    projects: dict[str, bool] = field(default_factory=dict)
    sessions: dict[str, dict[str, str]] = field(default_factory=dict)

    def project_exists(self, project: str) -> bool:
        """True when the project exists and can be read."""
        return self.projects.get(project, False)

    def session_subject(self, project: str, session: str) -> str | None:
        """The subject of an existing session, ``""`` if unknown, None when it does not exist."""
        return self.sessions.get(project, {}).get(session)


def _project(xnat: XnatSession, project: str) -> tuple[bool, dict[str, str]]:
    path = f"/data/projects/{quote(project, safe='')}"
    response = xnat.request("GET", path, params={"format": "json"})
    if response.status_code in (403, 404):
        return False, {}
    xnat.check(response, f"checking project {project}")
    rows = xnat.result_rows(
        f"{path}/experiments",
        f"listing the sessions of {project}",
        {"columns": "ID,label,subject_label"},
    )
    return True, {r.get("label", ""): r.get("subject_label", "") for r in rows}


def look_at_server(xnat: XnatSession, projects: Iterable[str], workers: int = 4) -> ServerView:
    """List every project of a run once (``workers`` at a time).

    Raises
    ------
    AuthenticationError, ConnectionFailedError, ServerResponseError
        As :class:`~xnatio.xnat.session.XnatSession` does.
    """
    names = sorted({p for p in projects if p})
    view = ServerView()
    xnat.ensure_login()
    try:
        with cf.ThreadPoolExecutor(max(1, workers), thread_name_prefix="xio-look") as pool:
            for name, (exists, sessions) in zip(
                names, pool.map(lambda p: _project(xnat, p), names), strict=True
            ):
                view.projects[name] = exists
                view.sessions[name] = sessions
    except httpx.TransportError as exc:
        raise ConnectionFailedError(describe_connect_error(xnat.config.server, exc)) from None
    return view
