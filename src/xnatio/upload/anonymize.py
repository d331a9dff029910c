"""Which scripts de-identify an upload, where they come from, and which ones XNAT adds.

An upload asks for de-identification with an :class:`Anonymization`: the server's own scripts
(``"server"``), a local DicomEdit 6 script, the DICOM Basic Profile, or a profile followed by
either. :func:`resolve` turns that into a :class:`Resolved` set of scripts before anything is read
or sent, fetching the server's scripts as the XNAT Desktop Client does:

- the site-wide script from ``GET /data/config/anon/script?format=json`` and the project's from
  ``GET /data/projects/{P}/config/anon/projects/{P}?format=json`` (XNAT's config service, tool
  ``anon``); the first row's ``contents`` is the script unless its ``status`` is ``disabled``;
  404 (or 204) means there is none, and so does an enabled script with no text;
- applied site first, then project: XNAT's own order (the site script as each file arrives, the
  project script when the session is archived; docs/anonymisation.md);
- sent with ``prevent_anon=true`` over REST, so that XNAT does not apply them a second time
  (docs/xnat-behaviour.md §3.3, §3.4 step 12).

A local script or the profile does not replace the server's scripts: XNAT still applies them
after receipt (REST without ``prevent_anon``; over C-STORE always, unless the receiver's
anonymisation is switched off). :attr:`Resolved.server_side` lists them, so the verification
can expect what XNAT stores.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from xnatio.errors import InputError

if TYPE_CHECKING:
    # The engine loads only when something is to be applied: an upload without --anonymize
    # does not pay for importing it (start-up time, docs/benchmarks.md).
    from xnatio.anonymize import Anonymizer, Script
    from xnatio.anonymize.profile import BasicProfileOptions
    from xnatio.upload.steps import Target
    from xnatio.xnat.session import XnatSession

__all__ = [
    "Anonymization",
    "AnonymizeSpec",
    "Resolved",
    "ServerScripts",
    "as_anonymization",
    "fetch_server_scripts",
    "resolve",
]

logger = logging.getLogger(__name__)

SITE_SCRIPT_PATH = "/data/config/anon/script"


def project_script_path(project: str) -> str:
    """Where XNAT's config service keeps a project's script (tool ``anon``)."""
    return f"/data/projects/{project}/config/anon/projects/{project}"


@dataclass(frozen=True, slots=True)
class Anonymization:
    """What an upload de-identifies its files with, on this machine, before they are sent.

    Attributes
    ----------
    scripts
        ``"server"``: the XNAT server's site-wide and project scripts, fetched and applied as
        the XNAT Desktop Client does (site, then project), and sent so that XNAT does not apply
        them again. ``"none"``: no script. A path (:class:`~pathlib.Path`, or any other
        string): a DicomEdit 6 script file. A compiled :class:`~xnatio.anonymize.Script`, or a
        tuple of them applied in order.
    profile
        Apply the DICOM PS3.15 Basic Application Level Confidentiality Profile first, with
        these options (``BasicProfileOptions()`` for none).
    variables
        Values of variables the scripts read besides ``project``, ``subject`` and ``session``
        (which are always the upload's labels).
    """

    scripts: str | Path | Script | tuple[Script, ...] = "none"
    profile: BasicProfileOptions | None = None
    variables: Mapping[str, str] = field(default_factory=dict)

    @property
    def from_server(self) -> bool:
        """Whether the server's scripts are applied."""
        return isinstance(self.scripts, str) and self.scripts == "server"

    @property
    def active(self) -> bool:
        """Whether anything is applied at all."""
        none = isinstance(self.scripts, str) and self.scripts == "none"
        return self.profile is not None or not none


#: What the entry points take as ``anonymize=``: an :class:`Anonymization`, ``"server"``,
#: ``"none"``, a script file, or compiled scripts.
AnonymizeSpec: TypeAlias = "Anonymization | str | Path | Script | Sequence[Script] | None"


def as_anonymization(value: AnonymizeSpec) -> Anonymization | None:
    """Normalise an ``anonymize=`` argument; None when nothing is to be applied.

    Raises
    ------
    InputError
        For a value of another type.
    """
    if value is None:
        return None
    if isinstance(value, Anonymization):
        anon = value
    elif isinstance(value, str | Path):
        anon = Anonymization(scripts=value)
    else:
        # Only compiled scripts are left, so the engine is loaded already: the import is free.
        from xnatio.anonymize import Script

        if isinstance(value, Script):
            anon = Anonymization(scripts=value)
        elif isinstance(value, Sequence) and all(isinstance(s, Script) for s in value):
            anon = Anonymization(scripts=tuple(cast("Sequence[Script]", value)))
        else:
            raise InputError(
                "anonymize= takes 'server', 'none', a script file, compiled scripts or an "
                f"Anonymization, not {type(value).__name__}"
            )
    return anon if anon.active else None


@dataclass(frozen=True, slots=True)
class ServerScripts:
    """The scripts an XNAT server applies to a project's DICOM data, as its config service says.

    Attributes
    ----------
    site, project
        The enabled, non-empty scripts (None: absent, disabled or empty).
    notes
        What was found instead where a script is missing (``"site script: disabled"``).
    """

    site: Script | None
    project: Script | None
    notes: tuple[str, ...] = ()

    @property
    def scripts(self) -> tuple[Script, ...]:
        """The scripts in XNAT's order: site, then project."""
        return tuple(s for s in (self.site, self.project) if s is not None)


def fetch_server_scripts(xnat: XnatSession, project: str) -> ServerScripts:
    """Fetch the site-wide and ``project``'s scripts the way the XNAT Desktop Client does.

    Raises
    ------
    InputError
        The server answered in a way that does not say which scripts it applies (another
        status, a page that is not the config service's listing, a script that does not
        compile): nothing should be sent.
    AuthenticationError, ConnectionFailedError
        From the login.
    """
    notes: list[str] = []
    site = _config_script(xnat, SITE_SCRIPT_PATH, "site script", notes)
    proj = _config_script(xnat, project_script_path(project), f"project {project} script", notes)
    return ServerScripts(site, proj, tuple(notes))


def _config_script(xnat: XnatSession, path: str, what: str, notes: list[str]) -> Script | None:
    """One script from the config service; None (with a note) when XNAT applies none."""
    from xnatio.anonymize import Script

    response = xnat.request("GET", path, params={"format": "json"})
    where = f"{xnat.config.server}{path}"
    if response.status_code in (204, 404):
        notes.append(f"{what}: none")
        return None
    if response.status_code != 200:
        raise InputError(
            f"{where} answered {response.status_code} for the {what}; cannot tell which "
            "anonymisation scripts XNAT applies, so nothing was sent"
        )
    row = _first_row(response.content)
    if row is None:
        raise InputError(
            f"{where} did not answer with XNAT's config listing for the {what}; cannot tell "
            "which anonymisation scripts XNAT applies, so nothing was sent"
        )
    if not row:
        notes.append(f"{what}: none")
        return None
    status, contents = row.get("status", "enabled"), row.get("contents", "")
    if not isinstance(contents, str) or not isinstance(status, str):
        raise InputError(f"{where}: the {what}'s row has no text contents; nothing was sent")
    if status.lower() == "disabled":
        notes.append(f"{what}: disabled")
        return None
    if not contents.strip():
        notes.append(f"{what}: empty")
        return None
    return Script.parse(contents, source=what)


def _first_row(content: bytes) -> dict[str, Any] | None:
    """The first row of a config listing (``{}`` when it has none); None for anything else."""
    import json

    try:
        data = json.loads(content)
        rows = data["ResultSet"]["Result"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(rows, list):
        return None
    if not rows:
        return {}
    return rows[0] if isinstance(rows[0], dict) else None


@dataclass(frozen=True, slots=True)
class Resolved:
    """The scripts of one upload, ready to apply.

    Attributes
    ----------
    local
        Applied here, in this order, to every file before it is sent.
    server_side
        Applied by XNAT after receipt, in this order (what the verification expects it to
        store); empty when the upload prevents it.
    prevent_anon
        Send ``prevent_anon=true`` with REST imports (the server's scripts are applied here).
    variables
        The values the scripts read.
    notes
        What was found on the server (missing or disabled scripts).
    """

    local: tuple[Script, ...]
    server_side: tuple[Script, ...] = ()
    prevent_anon: bool = False
    variables: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """SHA-256 of the local scripts (in order) and the variables: what a journal records,
        so that a resume never mixes two de-identifications in one session."""
        h = hashlib.sha256()
        for s in self.local:
            h.update(s.sha256.encode("ascii") + b"\n")
        for name in sorted(self.variables):
            h.update(f"{name}={self.variables[name]}\n".encode())
        return h.hexdigest()

    def describe(self) -> str:
        """The scripts in order, by name and hash (never their text)."""
        return ", then ".join(f"{s.source} (sha256 {s.sha256[:12]})" for s in self.local)

    def anonymizer(self, salt: str | None = None) -> Anonymizer:
        """The local scripts as an :class:`~xnatio.anonymize.Anonymizer`."""
        from xnatio.anonymize import Anonymizer

        return Anonymizer(self.local, self.variables, salt=salt, echo=_echo)

    def expecting(self, salt: str | None = None) -> Anonymizer | None:
        """The local scripts, then the server's: what XNAT stores (None when XNAT adds none)."""
        from xnatio.anonymize import Anonymizer

        if not self.server_side:
            return None
        return Anonymizer(self.local + self.server_side, self.variables, salt=salt, echo=None)


def _echo(line: str) -> None:
    logger.info("script echo: %s", line)


def resolve(
    anon: Anonymization,
    *,
    target: Target | None,
    xnat: XnatSession | None,
    transport: str,
    server_side: bool = True,
) -> Resolved:
    """Compile and fetch the scripts of ``anon`` for an upload to ``target``.

    Parameters
    ----------
    anon
        What to apply.
    target
        The upload's labels (the scripts' ``project``, ``subject`` and ``session``).
    xnat
        The XNAT server, when there is one (needed for ``"server"``; for the others it tells
        which scripts XNAT applies after receipt).
    transport
        ``rest`` (the server's scripts can be prevented) or ``dicom-store`` (they cannot).
    server_side
        Look up what XNAT applies after receipt (for the verification and a resume).

    Raises
    ------
    ScriptError
        A script does not compile, or reads a variable nobody gives.
    InputError
        ``"server"`` without a server or without any enabled script, an unreadable answer.
    """
    from xnatio.anonymize import Script
    from xnatio.anonymize.profile import basic_profile

    variables = _variables(anon, target)
    local: list[Script] = []
    if anon.profile is not None:
        local.append(basic_profile(anon.profile))
    server: ServerScripts | None = None
    if anon.from_server or (server_side and xnat is not None and target is not None):
        server = _server(anon, target, xnat)
    if anon.from_server:
        assert server is not None
        assert target is not None
        if not server.scripts and anon.profile is None:
            raise InputError(
                f"--anonymize server: {_server_name(xnat)} applies no anonymisation script to "
                f"project {target.project} ({'; '.join(server.notes)}), so nothing would be "
                "de-identified; give --anonymize FILE or --anonymize-profile basic, or enable "
                "a site or project script"
            )
        local += server.scripts
    elif isinstance(anon.scripts, Script):
        local.append(anon.scripts)
    elif isinstance(anon.scripts, tuple):
        local += anon.scripts
    elif not (isinstance(anon.scripts, str) and anon.scripts == "none"):
        local.append(Script.from_file(anon.scripts))
    prevented = anon.from_server and transport == "rest"
    after = () if prevented or server is None else server.scripts
    resolved = Resolved(
        tuple(local), after, prevented, variables, server.notes if server is not None else ()
    )
    _check_variables(resolved, target)
    return resolved


def _server(anon: Anonymization, target: Target | None, xnat: XnatSession | None) -> ServerScripts:
    if xnat is None or target is None:
        raise InputError(
            "--anonymize server fetches the scripts from the XNAT server: give the server "
            "(--server, a profile or XNAT_SERVER) and the PROJECT SUBJECT SESSION labels"
        )
    return fetch_server_scripts(xnat, target.project)


def _server_name(xnat: XnatSession | None) -> str:
    return xnat.config.server if xnat is not None else "the server"


def _variables(anon: Anonymization, target: Target | None) -> dict[str, str]:
    from xnatio.anonymize import XNAT_VARIABLES

    clash = sorted(set(anon.variables) & set(XNAT_VARIABLES))
    if clash:
        raise InputError(
            f"anonymisation variable {clash[0]} is the upload's label; give the label instead"
        )
    variables = dict(anon.variables)
    if target is not None:
        variables.update(project=target.project, subject=target.subject, session=target.session)
    return variables


def _check_variables(resolved: Resolved, target: Target | None) -> None:
    """A ScriptError now, before any file is read, for a variable nobody gives."""
    from xnatio.anonymize import XNAT_VARIABLES, ScriptError

    for script in (*resolved.local, *resolved.server_side):
        for name, (line, column) in script.free_variables.items():
            if name in resolved.variables:
                continue
            if name in XNAT_VARIABLES and target is None:
                raise ScriptError(
                    f"reads {name}: give the PROJECT, SUBJECT and SESSION labels",
                    line,
                    column,
                    script.source,
                )
            raise ScriptError(
                f"unknown variable {name!r}; give it with --anonymize-var {name}=VALUE",
                line,
                column,
                script.source,
            )
