"""Small questions and chores on an XNAT server: who am I, which XNAT is this, create a project,
list a session's scans.

The routes are those of docs/xnat-behaviour.md §4.2 (listings) and §5 (creating projects), plus
two that describe the site: ``GET /xapi/siteConfig/buildInfo`` (XNAT 1.7 and later; the sandbox
answers it too) with ``GET /data/version`` as the older servers' answer, and
``GET /xapi/users/username`` (XNAT 1.7.5 and later) or ``GET /data/auth`` (§2.1), which name
the account behind an alias token.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import quote

from xnatio.config import XnatConfig
from xnatio.errors import InputError, ServerResponseError
from xnatio.xnat.listings import experiment_path, list_session_files, result_rows
from xnatio.xnat.naming import validate_label, validate_labels
from xnatio.xnat.session import XnatSession, error_message, looks_like_html, text_rows

__all__ = [
    "ScanSummary",
    "ServerInfo",
    "create_project",
    "list_scans",
    "server_info",
]

ACCESSIBILITY = ("private", "protected", "public")
_LOGGED_IN = re.compile(r"^User '(.+)' is logged in")


@dataclass(frozen=True)
class ServerInfo:
    """What ``xio ping`` and ``xio whoami`` report.

    Attributes
    ----------
    server
        The XNAT URL.
    login
        The name the login used (a username, or an alias token's alias).
    username
        The account the server says the session belongs to (differs from ``login`` for an
        alias token); ``login`` when the server does not say (XNAT before 1.7.5).
    version
        XNAT's version, or None when the server does not tell.
    seconds
        Time taken by the login and the two questions together.
    """

    server: str
    login: str
    username: str
    version: str | None
    seconds: float

    @property
    def via_token(self) -> bool:
        """True when the login name is not the account's name (an alias token)."""
        return self.username != self.login


def _text(xnat: XnatSession, path: str) -> str | None:
    """The body of a GET that answers 200 with text (not an HTML page), else None."""
    response = xnat.request("GET", path, relogin=False)
    if response.status_code != 200 or looks_like_html(response):
        return None
    return response.text.strip() or None


def xnat_version(xnat: XnatSession) -> str | None:
    """XNAT's version from ``/xapi/siteConfig/buildInfo``, else ``/data/version``, else None."""
    response = xnat.request("GET", "/xapi/siteConfig/buildInfo", relogin=False)
    if response.status_code == 200 and not looks_like_html(response):
        try:
            version = response.json().get("version")
        except (ValueError, AttributeError):
            version = None
        if isinstance(version, str) and version.strip():
            return version.strip()
    old = _text(xnat, "/data/version")  # XNAT 1.6 answers its version as plain text
    return old.splitlines()[0][:64] if old else None


def _account(xnat: XnatSession) -> str | None:
    """The account behind the session: ``/xapi/users/username``, else ``/data/auth`` (§2.1)."""
    name = _text(xnat, "/xapi/users/username")
    if name:
        return name.splitlines()[0]
    match = _LOGGED_IN.match(_text(xnat, "/data/auth") or "")
    return match.group(1) if match else None


def server_info(
    *,
    server: str,
    username: str,
    password: str,
    verify_tls: bool | str = True,
    timeout: float = 30.0,
) -> ServerInfo:
    """Log in, ask the server who we are and which XNAT it is, and log out (``xio ping``).

    Parameters
    ----------
    server, username, password, verify_tls
        The XNAT server and account, as for the uploads.
    timeout
        Seconds allowed for each request.

    Returns
    -------
    ServerInfo
        The account, XNAT's version and the time taken.

    Raises
    ------
    AuthenticationError
        The server refused the credentials.
    ConnectionFailedError
        The server could not be reached, or it is not an XNAT.
    """
    config = XnatConfig.given(server, username, password, verify_tls)
    start = time.monotonic()
    with XnatSession(config, timeout=timeout, max_connections=2) as xnat:
        xnat.login()
        version = xnat_version(xnat)
        username = _account(xnat) or config.username
    return ServerInfo(
        server=config.server,
        login=config.username,
        username=username,
        version=version,
        seconds=time.monotonic() - start,
    )


def create_project(
    *,
    server: str,
    username: str,
    password: str,
    project: str,
    verify_tls: bool | str = True,
    description: str | None = None,
    accessibility: str | None = None,
    timeout: float = 60.0,
) -> bool:
    """Create ``project`` unless it exists (docs/xnat-behaviour.md §5); True when created.

    Parameters
    ----------
    server, username, password, verify_tls
        The XNAT server and an account with the right to create projects.
    project
        The project ID (``[A-Za-z0-9_-]``); it is also the project's name and title.
    description
        Sent as ``xnat:projectData/description`` with the creation; an existing project keeps
        its own.
    accessibility
        ``private``, ``protected`` or ``public`` (XNAT's default: private); only at creation.
    timeout
        Seconds allowed for each request.

    Returns
    -------
    bool
        True when the project was created, False when it existed already.

    Raises
    ------
    InputError
        An invalid ID or accessibility.
    ServerResponseError
        The server refused: no right to create projects (403), the ID, name or title taken by a
        project this account cannot see (409), an ID used before (403), or the project still
        missing after the server said it was created.
    """
    validate_label("project", project)
    if accessibility is not None and accessibility not in ACCESSIBILITY:
        raise InputError(f"accessibility {accessibility!r}: give one of {', '.join(ACCESSIBILITY)}")
    path = f"/data/projects/{quote(project, safe='')}"
    config = XnatConfig.given(server, username, password, verify_tls)
    with XnatSession(config, timeout=timeout, max_connections=2) as xnat:
        if xnat.request("GET", path, params={"format": "json"}).status_code == 200:
            return False
        params: dict[str, str] = {}
        if description:
            params["xnat:projectData/description"] = description
        if accessibility:
            params["accessibility"] = accessibility
        response = xnat.request("PUT", path, params=params)
        if response.status_code == 409:
            raise ServerResponseError(
                f"cannot create project {project}: {error_message(response)} (a project you "
                "cannot see may hold this ID, name or title)",
                status_code=409,
            )
        xnat.check(response, f"creating project {project}", ok=(200, 201))
        if xnat.request("GET", path, params={"format": "json"}).status_code != 200:
            raise ServerResponseError(
                f"creating project {project}: the server answered {response.status_code} but "
                "the project cannot be read afterwards"
            )
    return True


@dataclass(frozen=True)
class ScanSummary:
    """One scan of an archived session, as ``xio list-scans`` shows it.

    Attributes
    ----------
    id
        The scan ID.
    type, series_description
        XNAT's scan type and series description ("" when not set).
    files, bytes
        DICOM files of the scan (resource ``DICOM``) and their listed size in bytes.
    """

    id: str
    type: str
    series_description: str
    files: int
    bytes: int


def _scan_order(scan_id: str) -> tuple[int, int, str]:
    return (0, int(scan_id), "") if scan_id.isdigit() else (1, 0, scan_id)


def list_scans(
    *,
    # The keywords every public function on a session takes (XnatConfig.keywords, Labels),
    # the same in each: a caller passes **config.keywords() and **labels.
    server: str,
    username: str,
    password: str,
    project: str,
    subject: str,
    session: str,
    verify_tls: bool | str = True,
    timeout: float = 60.0,
) -> list[ScanSummary] | None:
    """The scans of an archived session with their DICOM files (``xio list-scans``).

    Reads ``.../experiments/{E}/scans`` and the DICOM file listings (docs/xnat-behaviour.md
    §4.2). A session still in the prearchive is not listed here.

    Parameters
    ----------
    server, username, password, verify_tls
        The XNAT server and account.
    project, subject, session
        The session's labels (or accession IDs).
    timeout
        Seconds allowed for each request.

    Returns
    -------
    list of ScanSummary or None
        The scans in scan-number order, or None when the session does not exist or cannot be
        read.
    """
    validate_labels(project, subject, session)
    base = experiment_path(project, subject, session)
    config = XnatConfig.given(server, username, password, verify_tls)
    with XnatSession(config, timeout=timeout, max_connections=8) as xnat:
        response = xnat.request("GET", base + "/scans", params={"format": "json"})
        if response.status_code in (403, 404):
            return None
        what = f"listing the scans of {base}"
        rows = text_rows(result_rows(xnat.check(response, what), what))
        files = list_session_files(xnat, project, subject, session) or []
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for f in files:
        counts[f.scan][0] += 1
        counts[f.scan][1] += f.size or 0
    scans = [
        ScanSummary(
            id=row.get("ID", ""),
            type=row.get("type", ""),
            series_description=row.get("series_description", ""),
            files=counts[row.get("ID", "")][0],
            bytes=counts[row.get("ID", "")][1],
        )
        for row in rows
        if row.get("ID")
    ]
    return sorted(scans, key=lambda s: _scan_order(s.id))
