"""``xio upload-many MANIFEST`` or ``xio upload-many --discover ROOT``: many sessions, one run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from xnatio.cli.anonymize import anonymize_options
from xnatio.cli.app import HELP_SETTINGS, configure_logging
from xnatio.cli.display import human_bytes
from xnatio.cli.many_progress import ManyProgress
from xnatio.cli.options import (
    ServerOptions,
    output_options,
    seconds_option,
    server_options,
)
from xnatio.cli.upload_dicom import default_dicom_host
from xnatio.config import XnatConfig
from xnatio.errors import InputError
from xnatio.many import (
    LabelTemplate,
    ManyOptions,
    PlannedSession,
    ProjectMap,
    RunPlan,
    RunResult,
    SessionSpec,
    discover,
    parse_shard,
    plan_many,
    read_manifest,
    take_shard,
    upload_many,
)
from xnatio.many.report import check_report_path, merge_reports, write_report
from xnatio.options import DicomOptions, RestOptions

__all__ = ["command"]

EXIT_OK, EXIT_PARTIAL, EXIT_INPUT, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _specs(
    spec: tuple[Path, ...],
    root: Path | None,
    templates: tuple[str | None, str, str, Path | None],
    quiet: bool,
) -> tuple[list[SessionSpec], str]:
    """The sessions, and the name of the run (for the default run journal)."""
    if (root is None) == (len(spec) != 1):
        raise InputError("give one MANIFEST, or --discover ROOT (not both)")
    if root is None:
        return read_manifest(spec[0]), str(spec[0].resolve())
    project, subject, session, project_map = templates
    found = discover(
        root,
        subject=LabelTemplate.parse("--subject", subject),
        session=LabelTemplate.parse("--session", session),
        project=LabelTemplate.parse("--project", project) if project else None,
        project_map=ProjectMap.read(project_map) if project_map else None,
    )
    if found.skipped and not quiet:
        click.echo(
            f"discover: {len(found.skipped)} files skipped (not DICOM or unreadable)", err=True
        )
    return found.sessions, f"discover {root.resolve()}"


def _options(
    config: XnatConfig | None, transport: str, counts: tuple[int, int, int | None, int | None],
    rest: dict[str, Any], dicom: dict[str, Any], flags: dict[str, Any],
) -> ManyOptions:  # fmt: skip
    max_connections, max_sessions, num_batches, upload_workers = counts
    dicom_options = None
    if transport == "dicom-store" or dicom.get("host"):
        host = dicom.pop("host") or default_dicom_host(config) or ""
        per_session = num_batches or max(1, math.ceil(max_connections / max_sessions))
        dicom_options = DicomOptions(host=host, associations=per_session, **dicom)
    return ManyOptions(
        transport="dicom-store" if transport == "dicom-store" else "rest",
        rest=RestOptions(
            num_batches=num_batches or max_connections,
            upload_workers=upload_workers or max_connections,
            **rest,
        ),
        dicom=dicom_options,
        max_connections=max_connections,
        max_sessions=max_sessions,
        **flags,
    )


def _plan_lines(plan: RunPlan) -> list[str]:
    header = ("#", "project", "subject", "session", "files", "size", "studies", "series", "action")
    rows = [header]
    for n, p in enumerate(plan.sessions, 1):
        s = p.spec

        def num(v: int | None) -> str:
            return "?" if v is None else str(v)

        size = "?" if p.bytes is None else human_bytes(p.bytes)
        rows.append((str(n), s.project, s.subject, s.session, num(p.files), size,
                     num(p.studies), num(p.series), p.action))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out = []
    for n, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            continue
        p = plan.sessions[n - 1]
        out += [f"    ! {x}" for x in p.problems] + [f"    - {x}" for x in p.notes]
    return out


def _plan_json(plan: RunPlan) -> dict[str, Any]:
    return {
        "server_checked": plan.server_checked,
        "sessions": [_row_json(p) for p in plan.sessions],
    }


def _row_json(p: PlannedSession) -> dict[str, Any]:
    s = p.spec
    return {
        "project": s.project, "subject": s.subject, "session": s.session, "origin": s.origin,
        "source": s.source, "files": p.files, "bytes": p.bytes, "studies": p.studies,
        "series": p.series, "action": p.action, "problems": p.problems, "notes": p.notes,
    }  # fmt: skip


def _show_plan(plan: RunPlan, as_json: bool) -> int:
    if as_json:
        click.echo(json.dumps(_plan_json(plan), indent=2))
    else:
        for line in _plan_lines(plan):
            click.echo(line)
        files = sum(p.files or 0 for p in plan.sessions)
        size = sum(p.bytes or 0 for p in plan.sessions)
        checked = "" if plan.server_checked else "; the server was not checked (no --server)"
        click.echo(
            f"{len(plan.sessions)} sessions, {files} files, {human_bytes(size)}; "
            f"{len(plan.blocked)} blocked{checked}; dry run: nothing was sent"
        )
    return EXIT_INPUT if plan.blocked else EXIT_OK


def _summary(result: RunResult, as_json: bool, quiet: bool) -> None:
    if as_json:
        click.echo(json.dumps({
            "ok": result.ok, "counts": result.counts(), "journal": result.journal,
            "peak_connections": result.peak_connections, "cancelled": result.cancelled,
            "sessions": [o.to_dict() for o in result.outcomes],
        }, indent=2))  # fmt: skip
        return
    for o in result.outcomes:
        if not o.ok:
            click.echo(f"{o.status}: {o.key} ({o.origin}): {'; '.join(o.errors[:2])}", err=True)
    if quiet and result.ok:
        return
    sent = sum(o.bytes_sent for o in result.outcomes)
    span = max(result.finished - result.started, 1e-3)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(result.counts().items()))
    click.echo(
        f"{'OK' if result.ok else 'INCOMPLETE'}: {len(result.outcomes)} sessions: {counts}; "
        f"{human_bytes(sent)} sent in {span:.1f} s ({human_bytes(sent / span)}/s), at most "
        f"{result.peak_connections} connections at once"
    )
    if result.journal:
        click.echo(f"run journal: {result.journal}")


def _merge(paths: tuple[Path, ...], report: Path | None, as_json: bool, quiet: bool) -> int:
    if not paths or report is None:
        raise InputError("--merge-reports needs the shards' .jsonl reports and --report OUT")
    outcomes = merge_reports(paths)
    write_report(report, outcomes, "xio upload-many (merged)")
    ok = all(o.ok for o in outcomes)
    if as_json:
        click.echo(json.dumps({"ok": ok, "sessions": len(outcomes), "report": str(report)}))
    elif not quiet:
        click.echo(f"{len(outcomes)} sessions from {len(paths)} reports written to {report}")
    return EXIT_OK if ok else EXIT_PARTIAL


def _exit_code(result: RunResult) -> int:
    if result.fatal:
        return EXIT_AUTH
    if result.cancelled:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_PARTIAL


_HELP = {
    "discover": "Find the sessions under ROOT (folders, .zip, .tar, .tar.gz), one per study.",
    "project": "Project ID, or a template such as '{InstitutionName}' (with --discover).",
    "project_map": "CSV/TSV mapping an attribute's values to projects (header: KEYWORD,project).",
    "subject": "Subject label template (with --discover).",
    "session": "Session label template (with --discover).",
    "max_connections": "HTTP connections and DICOM associations to the server at once, in total.",
    "max_sessions": "Sessions uploading at once.",
    "num_batches": "Per session: REST batches (default: --max-connections) or associations.",
    "resume": "Check every session on the server and send only what is missing.",
    "fail_fast": "Stop at the first failed session.",
    "run_journal": "Run journal file (default: under ~/.cache/xnatio/runs).",
    "report": "Write one row per session to FILE (.csv, .jsonl or .html).",
    "dask": "Run the sessions on this Dask scheduler (tcp://host:8786); needs xnatio[dask].",
    "shard": "Take only shard K of N (0 <= K < N) by a stable hash of each session.",
    "merge": "Merge the .jsonl reports given as arguments into --report.",
}


@click.command(context_settings=HELP_SETTINGS)
@click.argument("spec", nargs=-1, type=click.Path(path_type=Path))
@click.option("--discover", "root", type=click.Path(path_type=Path), help=_HELP["discover"])
@click.option("--project", help=_HELP["project"])
@click.option("--project-map", type=click.Path(path_type=Path), help=_HELP["project_map"])
@click.option("--subject", default="{PatientID}", show_default=True, help=_HELP["subject"])
@click.option(
    "--session", "session_tpl", default="{PatientID}_{StudyDate}", show_default=True,
    help=_HELP["session"],
)  # fmt: skip
@click.option("--transport", type=click.Choice(["rest", "dicom-store"]), default="rest",
              help="REST import service, or DICOM C-STORE, for every session.")  # fmt: skip
@click.option("--max-connections", type=click.IntRange(min=1), default=12, show_default=True,
              help=_HELP["max_connections"])  # fmt: skip
@click.option("--max-sessions", type=click.IntRange(min=1), default=4, show_default=True,
              help=_HELP["max_sessions"])  # fmt: skip
@click.option("--num-batches", type=click.IntRange(min=1), help=_HELP["num_batches"])
@click.option("--upload-workers", type=click.IntRange(min=1), help="Per session (REST).")
@click.option("--overwrite", type=click.Choice(["none", "append", "delete"]), default="none",
              help="As for upload-dicom: none (sessions must be new), append, delete.")  # fmt: skip
@click.option("--direct-archive", is_flag=True, help="Use Direct-Archive (new sessions only).")
@click.option("--allow-multiple-studies", is_flag=True,
              help="Accept several studies in one session's source.")  # fmt: skip
@server_options
@anonymize_options
@click.option("--dicom-host", help="C-STORE host (default: the XNAT server's host).")
@click.option("--dicom-port", type=click.IntRange(1, 65535), default=8104, show_default=True,
              help="C-STORE: the DICOM receiver's port.")  # fmt: skip
@click.option("--dicom-called-aet", default="XNAT", show_default=True,
              help="C-STORE: the receiver's AE title.")  # fmt: skip
@click.option("--dicom-calling-aet", default="XNATIO", show_default=True,
              help="C-STORE: our AE title.")  # fmt: skip
@seconds_option("--wait", 600.0, "C-STORE: seconds to wait for XNAT to archive each session.")
@click.option("--verify", "verify_mode", type=click.Choice(["none", "listing", "deep"]),
              help="Check each session as upload-dicom does (default: listing).")  # fmt: skip
@click.option("--no-verify", is_flag=True, help="Same as --verify none.")
@click.option("--resume", is_flag=True, help=_HELP["resume"])
@click.option("--fail-fast", is_flag=True, help=_HELP["fail_fast"])
@click.option("--run-journal", type=click.Path(path_type=Path, dir_okay=False),
              help=_HELP["run_journal"])  # fmt: skip
@click.option("--no-run-journal", is_flag=True, help="Keep no run journal.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              help=_HELP["report"])  # fmt: skip
@click.option("--dask", "dask_address", metavar="ADDRESS", help=_HELP["dask"])
@click.option("--shard", metavar="K/N", help=_HELP["shard"])
@click.option("--merge-reports", is_flag=True, help=_HELP["merge"])
@click.option("--dry-run", is_flag=True, help="Print the plan and send nothing.")
@output_options(progress="Progress display on stderr (json: one event per line).",
                json_help="Machine-readable output on stdout.")  # fmt: skip
@click.pass_context
def command(ctx: click.Context, /, spec: tuple[Path, ...], **kw: Any) -> None:
    """Upload many sessions: the rows of MANIFEST (.csv, .tsv, .jsonl with the columns project,
    subject, session, source) or the studies found with --discover ROOT.

    Exit codes: 0 every session landed, 1 some failed (listed), 2 bad input or a plan with
    problems (nothing sent), 3 login, server or Dask scheduler unreachable (nothing sent),
    130 interrupted.
    """
    configure_logging(kw["verbose"], kw["quiet"])
    if kw["report_path"] is not None:
        check_report_path(kw["report_path"])
    if kw["merge_reports"]:
        ctx.exit(_merge(spec, kw["report_path"], kw["as_json"], kw["quiet"]))
    templates = (kw["project"], kw["subject"], kw["session_tpl"], kw["project_map"])
    specs, name = _specs(spec, kw["root"], templates, kw["quiet"])
    shard = parse_shard(kw["shard"]) if kw["shard"] else None
    if shard is not None:
        specs = take_shard(specs, *shard)
    creds: ServerOptions = kw["creds"]
    config = creds.config(required=not kw["dry_run"])
    options = _build_options(config, kw)
    if kw["dry_run"]:
        plan = plan_many(specs, server=config, options=options)
        ctx.exit(_show_plan(plan, kw["as_json"]))
    ctx.exit(_run(specs, config, options, kw, name, shard))


def _build_options(config: XnatConfig | None, kw: dict[str, Any]) -> ManyOptions:
    verify: bool | str = kw["verify_mode"] or True
    if kw["no_verify"]:
        verify = "none"
    dicom = {
        "host": kw["dicom_host"],
        "port": kw["dicom_port"],
        "called_aet": kw["dicom_called_aet"],
        "calling_aet": kw["dicom_calling_aet"],
        "wait": kw["wait"],
    }
    rest = {"overwrite": kw["overwrite"], "direct_archive": kw["direct_archive"]}
    counts = (kw["max_connections"], kw["max_sessions"], kw["num_batches"], kw["upload_workers"])
    flags = {
        "verify": verify,
        "resume": kw["resume"],
        "fail_fast": kw["fail_fast"],
        "allow_multiple_studies": kw["allow_multiple_studies"],
        "anonymize": kw["anonymize"],
    }
    return _options(config, kw["transport"], counts, rest, dicom, flags)


def _run(
    specs: list[SessionSpec], config: XnatConfig | None, options: ManyOptions,
    kw: dict[str, Any], name: str, shard: tuple[int, int] | None,
) -> int:  # fmt: skip
    assert config is not None
    if not specs:
        click.echo("no sessions in this shard; nothing to do", err=True)
        return EXIT_OK
    if kw["no_run_journal"] and (kw["run_journal"] or kw["resume"]):
        raise InputError("--no-run-journal cannot be combined with --run-journal or --resume")
    journal: Path | bool = False if kw["no_run_journal"] else (kw["run_journal"] or True)
    mode = kw["progress_mode"]
    if kw["quiet"] and mode == "auto":
        mode = "none"
    with ManyProgress(mode) as display:
        result = upload_many(
            specs, server=config, options=options, run_journal=journal, name=name,
            shard=shard, dask=kw["dask_address"], progress_callback=display,
        )  # fmt: skip
    if kw["report_path"] is not None:
        write_report(kw["report_path"], result.outcomes)
    _summary(result, kw["as_json"], kw["quiet"])
    if result.cancelled:
        click.echo(
            "xio: interrupted: the sessions in flight stopped after their current requests; "
            "run the same command with --resume to finish",
            err=True,
        )
    return _exit_code(result)
