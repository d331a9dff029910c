"""De-identification on the command line: the ``--anonymize`` options of the upload commands,
their ``--dry-run`` preview, and ``xio anonymize SOURCE OUT``, which writes de-identified copies.

The options build one :class:`~xnatio.upload.anonymize.Anonymization`; everything else is the
library's (:mod:`xnatio.upload.anonymize`, :mod:`xnatio.upload.anonymized`). Values of the
elements before and after are shown on the terminal only, never logged or written to reports:
they may identify a patient.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from xnatio.cli.app import HELP_SETTINGS
from xnatio.cli.options import InputPath, server_options, with_options
from xnatio.errors import InputError

if TYPE_CHECKING:  # the engine is imported only when a script is applied (start-up time)
    from xnatio.anonymize import Change, Edit
    from xnatio.inventory import Inventory

__all__ = ["anonymization", "anonymize_options", "command", "dry_run"]

F = TypeVar("F", bound=Callable[..., Any])

_PROFILE_FLAGS = {
    "retain-uids": "retain_uids",
    "retain-device-identity": "retain_device_identity",
    "retain-institution-identity": "retain_institution_identity",
    "retain-patient-characteristics": "retain_patient_characteristics",
    "keep-dates": "keep_dates",
}
_PREVIEW_LINES = 200

_OPTIONS = (
    click.option(
        "--anonymize",
        "anonymize_scripts",
        metavar="server|FILE|none",
        default="none",
        show_default=True,
        help="De-identify every file on this machine before it is sent: server (the XNAT "
        "server's site and project scripts, applied as the XNAT Desktop Client does; over REST "
        "XNAT is told not to apply them again), FILE (a DicomEdit 6 script; XNAT still applies "
        "its own after receipt) or none. Files on disk are never changed (docs/anonymisation.md).",
    ),
    click.option(
        "--anonymize-profile",
        type=click.Choice(["basic"]),
        default=None,
        help="Apply the DICOM Basic Application Level Confidentiality Profile (PS3.15 E.1) "
        "first, then any --anonymize scripts.",
    ),
    click.option(
        "--anonymize-option",
        "anonymize_profile_options",
        multiple=True,
        metavar="NAME",
        help="A Basic Profile option (repeatable): retain-uids, retain-device-identity, "
        "retain-institution-identity, retain-patient-characteristics, keep-dates, shift-days=N.",
    ),
    click.option(
        "--anonymize-var",
        "anonymize_vars",
        multiple=True,
        metavar="NAME=VALUE",
        help="The value of a variable the scripts read, besides project, subject and session "
        "(repeatable).",
    ),
)


def anonymization(
    scripts: str,
    profile: str | None,
    options: Sequence[str] = (),
    variables: Sequence[str] = (),
) -> Any:
    """The :class:`~xnatio.upload.anonymize.Anonymization` the options ask for (None: none).

    Raises
    ------
    InputError
        An unknown or malformed option, a profile option without the profile.
    """
    if scripts == "none" and profile is None and not options and not variables:
        return None  # the usual case, without loading the de-identification code (start-up time)
    from xnatio.upload.anonymize import Anonymization

    values: dict[str, str] = {}
    for item in variables:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--anonymize-var takes NAME=VALUE, not {item!r}")
        values[name.strip()] = value
    if options and profile is None:
        raise InputError("--anonymize-option sets an option of --anonymize-profile basic; give it")
    chosen: dict[str, Any] = {}
    for item in options:
        name, _, value = item.partition("=")
        if name == "shift-days":
            try:
                chosen["shift_days"] = int(value)
            except ValueError:
                raise InputError(
                    f"--anonymize-option shift-days=N takes days, not {value!r}"
                ) from None
        elif name in _PROFILE_FLAGS and not value:
            chosen[_PROFILE_FLAGS[name]] = True
        else:
            known = ", ".join([*_PROFILE_FLAGS, "shift-days=N"])
            raise InputError(f"unknown --anonymize-option {item!r}; one of {known}")
    options_value = None
    try:
        if profile is not None:
            from xnatio.anonymize.profile import BasicProfileOptions

            options_value = BasicProfileOptions(**chosen)
    except ValueError:
        raise InputError(
            "--anonymize-option keep-dates and shift-days=N exclude each other"
        ) from None
    source: str | Path = scripts if scripts in ("server", "none") else Path(scripts)
    anon = Anonymization(source, options_value, values)
    return anon if anon.active else None


def anonymize_options(func: F) -> F:
    """Add ``--anonymize``, ``--anonymize-profile``, ``--anonymize-option`` and
    ``--anonymize-var`` to a command; it receives them as one ``anonymize`` argument (an
    :class:`~xnatio.upload.anonymize.Anonymization` or None)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["anonymize"] = anonymization(
            kwargs.pop("anonymize_scripts"),
            kwargs.pop("anonymize_profile"),
            kwargs.pop("anonymize_profile_options"),
            kwargs.pop("anonymize_vars"),
        )
        return func(*args, **kwargs)

    return cast(F, with_options(wrapper, _OPTIONS))


# -- the preview ------------------------------------------------------------------------------


def _shown(value: str | None) -> str:
    if value is None:
        return "-"
    text = value if len(value) <= 60 else value[:57] + "..."
    return repr(text)


def change_lines(changes: Sequence[Change]) -> list[str]:
    """One line per edited element: action, path, value before and after."""
    lines = []
    for c in changes[:_PREVIEW_LINES]:
        arrow = "" if c.action == "delete" else f" -> {_shown(c.after)}"
        before = "" if c.action == "add" else _shown(c.before)
        lines.append(f"  {c.action:<6} {c.path}  {before}{arrow}".rstrip())
    if len(changes) > _PREVIEW_LINES:
        lines.append(f"  ... and {len(changes) - _PREVIEW_LINES} more")
    return lines


def _change_dicts(changes: Sequence[Change]) -> list[dict[str, str | None]]:
    return [
        {"path": c.path, "action": c.action, "before": c.before, "after": c.after} for c in changes
    ]


def _first_edit(view: Inventory) -> tuple[str, Edit] | None:
    from xnatio.upload.anonymized import AnonymizedSource

    source = view.source
    if not view.files or not isinstance(source, AnonymizedSource):
        return None
    path = view.files[0].path
    return path, source.plan(path)


def _server_side_line(resolved: Any, looked_up: bool) -> str:
    if resolved.prevent_anon:
        return "XNAT is told not to apply its scripts again (prevent_anon=true)"
    if resolved.server_side:
        names = ", then ".join(f"{s.source} (sha256 {s.sha256[:12]})" for s in resolved.server_side)
        return f"XNAT then applies its own: {names}"
    if looked_up:
        return "XNAT applies no script of its own after receipt"
    return "XNAT applies its own site and project scripts after receipt, if it has any"


def dry_run(
    source: Path,
    *,
    project: str,
    subject: str,
    session: str,
    anonymize: Any,
    creds: Any,
    transport: str,
    allow_multiple_studies: bool,
    skip_unreadable: bool,
    as_json: bool,
) -> int:
    """``--dry-run --anonymize ...``: plan every file, show the scripts and one instance's
    edits, element by element; send nothing. Returns the exit code."""
    from xnatio.cli.display import human_bytes
    from xnatio.inventory import describe_skipped
    from xnatio.plan import plan_upload
    from xnatio.upload.anonymize import resolve
    from xnatio.upload.anonymized import apply_scripts
    from xnatio.upload.steps import Target

    target = Target(project, subject, session)
    with _server(creds, anonymize.from_server) as xnat:
        resolved = resolve(
            anonymize, target=target, xnat=xnat, transport=transport, server_side=xnat is not None
        )
    plan = plan_upload(
        source,
        project=project,
        subject=subject,
        session=session,
        allow_multiple_studies=allow_multiple_studies,
        skip_unreadable=skip_unreadable,
    )
    with plan.inventory:
        view, _ = apply_scripts(
            plan.inventory, resolved, None, resume=False, progress_callback=None
        )
        first = _first_edit(view)
    rejected = [s.path for s in view.skipped if s.reason.startswith("rejected")]
    if as_json:
        data = {
            "files": len(view.files),
            "bytes": view.total_bytes,
            "scripts": [{"source": s.source, "sha256": s.sha256} for s in resolved.local],
            "prevent_anon": resolved.prevent_anon,
            "server_side": [{"source": s.source, "sha256": s.sha256} for s in resolved.server_side],
            "notes": list(resolved.notes),
            "rejected": rejected,
            "preview": None
            if first is None
            else {"path": first[0], "changes": _change_dicts(first[1].changes)},
        }
        click.echo(json.dumps(data, indent=2))
        return 0
    click.echo(
        f"{len(view.files)} DICOM files ({human_bytes(view.total_bytes)} de-identified) for "
        f"{target} over {transport}; {describe_skipped(view.skipped)}"
    )
    click.echo(f"de-identified here with: {resolved.describe()}")
    click.echo(_server_side_line(resolved, xnat is not None))
    for note in resolved.notes:
        click.echo(f"note: {note}")
    if rejected:
        click.echo(f"{len(rejected)} files rejected by the scripts (not sent): {rejected[0]} ...")
    if first is not None:
        path, edit = first
        click.echo(f"{path}: {len(edit.changes)} elements edited (values shown here only):")
        for line in change_lines(edit.changes):
            click.echo(line)
    click.echo("dry run: nothing was sent")
    return 0


@contextlib.contextmanager
def _server(creds: Any, needed: bool) -> Iterator[Any]:
    """An XNAT session when ``needed`` (the server's scripts), else None."""
    if not needed:
        yield None
        return
    from xnatio.upload.steps import server_session

    with server_session(creds.required_config(), None, timeout=300.0) as xnat:
        yield xnat


# -- xio anonymize SOURCE OUT -----------------------------------------------------------------


def _check_out(source: Path, out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"OUT {str(out)!r} exists and is not an empty folder; choose another")
    src, dst = source.resolve(), out.resolve()
    if src.is_dir() and (dst == src or src in dst.parents):
        raise InputError("OUT is inside SOURCE; choose a folder outside it")


def write_copies(view: Inventory, out: Path) -> int:
    """Write every file of the de-identified ``view`` under ``out`` as
    ``<scan folder>/<SOP Instance UID>.dcm`` (names from the edited headers, not the source's
    paths, which may name the patient). Returns the bytes written."""
    import shutil

    from xnatio.xnat.naming import entry_name, scan_id_for

    written = 0
    for f in view.files:
        dest = out / scan_id_for(f) / entry_name(f)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.part")
        with view.source.open(f.path) as src, open(part, "xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(part, dest)
        written += f.size
    return written


def _labels(project: str | None, subject: str | None, session: str | None) -> Any:
    from xnatio.upload.steps import Target
    from xnatio.xnat.naming import validate_label

    given = {"project": project, "subject": subject, "session": session}
    if all(v is None for v in given.values()):
        return None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise InputError(
            f"give --project, --subject and --session together (missing: {missing[0]})"
        )
    for kind, value in given.items():
        validate_label(kind, str(value))
    return Target(str(project), str(subject), str(session))


@click.command(
    context_settings=HELP_SETTINGS,
)
@click.argument("source", type=InputPath())
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@anonymize_options
@click.option("--project", metavar="ID", help="The project label the scripts see (project).")
@click.option("--subject", metavar="LABEL", help="The subject label the scripts see (subject).")
@click.option("--session", metavar="LABEL", help="The session label the scripts see (session).")
@click.option(
    "--skip-unreadable",
    is_flag=True,
    help="Leave out files and folders of SOURCE that cannot be read instead of stopping.",
)
@click.option(
    "--preview",
    is_flag=True,
    help="Also print the first instance's edits, element by element (values shown only here).",
)
@server_options
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def command(
    source: Path,
    out: Path,
    anonymize: Any,
    project: str | None,
    subject: str | None,
    session: str | None,
    skip_unreadable: bool,
    preview: bool,
    creds: Any,
    quiet: bool,
) -> None:
    """Write de-identified copies of the DICOM files in SOURCE into the new folder OUT.

    The same scripts as an upload with the same --anonymize options, so the copies show what
    would leave this machine: check them before an upload, or share them. Copies are named
    <scan>/<SOPInstanceUID>.dcm after their edited headers. SOURCE is never changed.

    Exit codes: 0 written, 2 input error (nothing written), 3 no login to the server.
    """
    from xnatio.cli.display import human_bytes
    from xnatio.inventory import build_inventory
    from xnatio.plan import check_inventory
    from xnatio.upload.anonymize import resolve
    from xnatio.upload.anonymized import apply_scripts

    if anonymize is None:
        raise InputError("give --anonymize server|FILE or --anonymize-profile basic")
    _check_out(source, out)
    target = _labels(project, subject, session)
    with _server(creds, anonymize.from_server) as xnat:
        resolved = resolve(
            anonymize, target=target, xnat=xnat, transport="local", server_side=False
        )
    with build_inventory(source, skip_unreadable=skip_unreadable) as inventory:
        view, _ = apply_scripts(inventory, resolved, None, resume=False, progress_callback=None)
        view = check_inventory(view, allow_multiple_studies=True)
        first = _first_edit(view) if preview else None
        out.mkdir(parents=True, exist_ok=True)
        written = write_copies(view, out)
    if first is not None:
        click.echo(f"{first[0]}: {len(first[1].changes)} elements edited (values shown here only):")
        for line in change_lines(first[1].changes):
            click.echo(line)
    if not quiet:
        rejected = sum(1 for s in view.skipped if s.reason.startswith("rejected"))
        click.echo(
            f"wrote {len(view.files)} de-identified files ({human_bytes(written)}) to {out} "
            f"with {resolved.describe()}; {rejected} rejected by the scripts"
        )
