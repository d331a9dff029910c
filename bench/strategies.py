"""The upload strategies a benchmark compares; each runs inside :mod:`bench.client`.

REST strategies (against the sandbox, directly or through the shaping proxy):

``xio``
    :func:`xnatio.uploaders.rest.upload_dicom_parallel_rest` with its defaults: 42 byte-balanced
    batches streamed as tar bodies by 42 workers, one commit, then the file-listing check.
``xio-wN`` / ``xio-wN-bM``
    The same with N upload workers (and M batches; default 42), for the sweep.
``sequential``
    One request carrying the whole session as one tar, then the commit: what a simple script does.
``archive-first``
    A model of the earlier public xnatio: split the file list into 42 batches, write every batch
    as a tar file in a temporary folder (5 archive workers, stdlib :mod:`tarfile`), only then
    upload the files with 42 workers, then commit.
``gradual``
    XNAT's ``gradual-DICOM`` handler: one request per file, 42 at a time (xnatio's implementation).
``floor``
    The server-side floor: the whole session as ONE tar file built on disk before the clock starts,
    sent in one plain ``httpx`` POST (streamed from the file) and committed.

DICOM strategies (against storescp, Orthanc or the proxy in front of them):

``xio``
    :func:`xnatio.uploaders.dicom_store.send_dicom_store` with its defaults.
``storescu``
    One DCMTK ``storescu`` process, one association (``+sd +r``), with ``TCP_NODELAY=1`` in its
    environment (DCMTK's switch for disabling Nagle's algorithm; ~40x faster on loopback).
``storescu-x10``
    Ten DCMTK ``storescu`` processes at once, the series shared among them.
``pynetdicom``
    pynetdicom's ``storescu`` app (``python -m pynetdicom storescu -r``).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "DICOM_STRATEGIES",
    "REST_STRATEGIES",
    "Context",
    "dataset_files",
    "is_known",
    "run_strategy",
]

REST_STRATEGIES = ("xio", "sequential", "archive-first", "gradual", "floor")
DICOM_STRATEGIES = ("xio", "storescu", "storescu-x10", "pynetdicom")

_SWEEP = re.compile(r"^xio-w(\d+)(?:-b(\d+))?$")


@dataclass(frozen=True)
class Context:
    """Where and what one run sends.

    Attributes
    ----------
    source
        The dataset folder.
    url
        Base URL of the XNAT-compatible server (REST strategies).
    user, password
        Credentials.
    project, subject, session
        Target labels; the session is new for every run.
    host, port, aet
        The Storage SCP (DICOM strategies).
    workdir
        A scratch folder (temporary archives, the floor's tar).
    """

    source: Path
    url: str = ""
    user: str = "admin"
    password: str = "admin"
    project: str = "P1"
    subject: str = "S1"
    session: str = "E1"
    host: str = "127.0.0.1"
    port: int = 0
    aet: str = "ANY-SCP"
    workdir: Path = Path(tempfile.gettempdir())


# A strategy returns (prepare, run): prepare does untimed set-up work (only the floor has any);
# run does the timed upload and returns extra facts for the record.
Runner = Callable[[], dict[str, Any]]


def dataset_files(source: Path) -> list[Path]:
    """Every file under ``source``, in sorted order.

    Parameters
    ----------
    source
        The dataset folder.

    Returns
    -------
    list of Path
        The files.
    """
    return sorted(p for p in source.rglob("*") if p.is_file())


def is_known(kind: str, name: str) -> bool:
    """Whether ``name`` names a strategy of this kind.

    Parameters
    ----------
    kind
        ``rest`` or ``dicom``.
    name
        A strategy name.

    Returns
    -------
    bool
        True for a known name.
    """
    try:
        run_strategy(kind, name, Context(source=Path()))
    except ValueError:
        return False
    return True


def run_strategy(kind: str, name: str, ctx: Context) -> tuple[Runner, Runner | None]:
    """Look up a strategy.

    Parameters
    ----------
    kind
        ``rest`` or ``dicom``.
    name
        The strategy's name (see the module docstring).
    ctx
        Where to send.

    Returns
    -------
    tuple
        ``(run, prepare)``: ``run()`` does the timed work and returns facts for the record;
        ``prepare`` (or None) is untimed set-up to call first.

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if kind == "rest":
        if name == "xio":
            return (lambda: _xio_rest(ctx, 42, 42, "DICOM-zip")), None
        if m := _SWEEP.match(name):
            workers = int(m.group(1))
            batches = int(m.group(2)) if m.group(2) else 42
            return (lambda: _xio_rest(ctx, batches, workers, "DICOM-zip")), None
        if name == "sequential":
            return (lambda: _xio_rest(ctx, 1, 1, "DICOM-zip")), None
        if name == "gradual":
            return (lambda: _xio_rest(ctx, 42, 42, "gradual-DICOM")), None
        if name == "archive-first":
            return (lambda: _archive_first(ctx, 42, 5, 42)), None
        if name == "floor":
            tar_path = ctx.workdir / "floor.tar"
            return (lambda: _floor(ctx, tar_path)), (lambda: _build_tar(ctx.source, tar_path))
    elif kind == "dicom":
        if name == "xio":
            return (lambda: _xio_dicom(ctx)), None
        if name == "storescu":
            return (lambda: _storescu(ctx, 1)), None
        if m := re.match(r"^storescu-x(\d+)$", name):
            n = int(m.group(1))
            return (lambda: _storescu(ctx, n)), None
        if name == "pynetdicom":
            return (lambda: _pynetdicom(ctx)), None
    raise ValueError(f"unknown {kind} strategy {name!r}")


# -- REST -----------------------------------------------------------------------------------------


def _xio_rest(ctx: Context, batches: int, workers: int, handler: str) -> dict[str, Any]:
    from xnatio.uploaders.rest import upload_dicom_parallel_rest

    result = upload_dicom_parallel_rest(
        server=ctx.url,
        username=ctx.user,
        password=ctx.password,
        source_dir=ctx.source,
        project=ctx.project,
        subject=ctx.subject,
        session=ctx.session,
        num_batches=batches,
        upload_workers=workers,
        import_handler="gradual-DICOM" if handler == "gradual-DICOM" else "DICOM-zip",
    )
    return {
        "success": result.success,
        "error": "; ".join(result.errors[:3]) or None,
        "files": result.files_sent,
        "bytes": result.bytes_sent,
        "requests": len(result.batches),
        "retries": result.retries,
    }


def _client(ctx: Context, connections: int) -> httpx.Client:
    return httpx.Client(
        base_url=ctx.url,
        auth=(ctx.user, ctx.password),
        timeout=httpx.Timeout(3600.0, connect=30.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def _import_params(ctx: Context) -> dict[str, str]:
    return {
        "import-handler": "DICOM-zip",
        "PROJECT_ID": ctx.project,
        "SUBJECT_ID": ctx.subject,
        "EXPT_LABEL": ctx.session,
        "prevent_auto_commit": "true",
        "format": "tar",
    }


def _post_tar(client: httpx.Client, ctx: Context, path: Path) -> str:
    """POST one tar file to the import service; return the prearchive URI it names."""
    with path.open("rb") as fh:
        response = client.post(
            "/data/services/import",
            params=_import_params(ctx),
            content=fh,
            headers={
                "Content-Type": "application/x-tar",
                "Content-Length": str(path.stat().st_size),
            },
        )
    response.raise_for_status()
    return response.text.strip().splitlines()[0].strip()


def _commit(client: httpx.Client, ctx: Context, uris: list[str]) -> None:
    for uri in dict.fromkeys(uris):
        response = client.post(
            "/data/services/archive",
            params={
                "src": uri.removeprefix("/data"),
                "dest": f"/archive/projects/{ctx.project}/subjects/{ctx.subject}"
                f"/experiments/{ctx.session}",
            },
        )
        if response.status_code not in (200, 301, 303):
            raise RuntimeError(f"commit of {uri}: {response.status_code} {response.text[:200]}")


def _build_tar(source: Path, out: Path) -> dict[str, Any]:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in dataset_files(source):
            tar.add(path, arcname=path.relative_to(source).as_posix(), recursive=False)
    return {}


def _floor(ctx: Context, tar_path: Path) -> dict[str, Any]:
    files = dataset_files(ctx.source)
    with _client(ctx, 2) as client:
        uri = _post_tar(client, ctx, tar_path)
        _commit(client, ctx, [uri])
    return {
        "success": True,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "requests": 1,
    }


def _archive_first(
    ctx: Context, batches: int, archive_workers: int, upload_workers: int
) -> dict[str, Any]:
    files = dataset_files(ctx.source)
    n = min(batches, len(files))
    # Contiguous slices of equal file count, as the earlier client split its file list.
    size, extra = divmod(len(files), n)
    groups: list[list[Path]] = []
    start = 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        groups.append(files[start:end])
        start = end
    tmp = Path(tempfile.mkdtemp(prefix="archive-first-", dir=ctx.workdir))
    try:

        def write(i: int) -> Path:
            out = tmp / f"batch_{i:03d}.tar"
            with tarfile.open(out, "w") as tar:
                for path in groups[i]:
                    tar.add(path, arcname=path.relative_to(ctx.source).as_posix(), recursive=False)
            return out

        with cf.ThreadPoolExecutor(archive_workers) as pool:
            archives = list(pool.map(write, range(n)))
        with (
            _client(ctx, upload_workers + 2) as client,
            cf.ThreadPoolExecutor(upload_workers) as pool,
        ):
            uris = list(pool.map(lambda p: _post_tar(client, ctx, p), archives))
            _commit(client, ctx, uris)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "success": True,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "requests": n,
    }


# -- DICOM ----------------------------------------------------------------------------------------


def _xio_dicom(ctx: Context) -> dict[str, Any]:
    from xnatio.uploaders.dicom_store import send_dicom_store

    # With routing tags, as xio sends to XNAT: the in-memory splice is part of the cost.
    result = send_dicom_store(
        source_dir=ctx.source,
        host=ctx.host,
        port=ctx.port,
        called_aet=ctx.aet,
        project=ctx.project,
        subject=ctx.subject,
        session=ctx.session,
    )
    return {
        "success": result.success,
        "error": "; ".join(result.errors[:3]) or None,
        "files": result.sent + result.warned,
        "bytes": result.bytes_sent,
        "requests": result.associations,
    }


def _run_all(commands: list[list[str]]) -> None:
    # DCMTK reads TCP_NODELAY=1 from the environment and then disables Nagle's algorithm; without
    # it storescu waits for a delayed ACK on every instance (~40 ms each on loopback). The
    # baselines get their best setting.
    env = {**os.environ, "TCP_NODELAY": "1"}
    procs = [
        subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        for c in commands
    ]
    errors = []
    for cmd, proc in zip(commands, procs, strict=True):
        _, err = proc.communicate()
        if proc.returncode != 0:
            errors.append(f"{Path(cmd[0]).name} exited {proc.returncode}: {err.decode()[-300:]}")
    if errors:
        raise RuntimeError("; ".join(errors))


def _storescu(ctx: Context, processes: int) -> dict[str, Any]:
    exe = shutil.which("storescu")
    if exe is None:
        raise RuntimeError("storescu is not installed")
    series = sorted(p for p in ctx.source.iterdir() if p.is_dir()) or [ctx.source]
    groups: list[list[Path]] = [[] for _ in range(min(processes, len(series)))]
    for i, s in enumerate(series):
        groups[i % len(groups)].append(s)
    base = [exe, "+sd", "+r", "-aet", "XIO-BENCH", "-aec", ctx.aet, ctx.host, str(ctx.port)]
    _run_all([[*base, *map(str, g)] for g in groups])
    files = dataset_files(ctx.source)
    return {
        "success": True,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "requests": len(groups),
    }


def _pynetdicom(ctx: Context) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "pynetdicom",
        "storescu",
        "-r",
        "-aet",
        "XIO-BENCH",
        "-aec",
        ctx.aet,
        ctx.host,
        str(ctx.port),
        str(ctx.source),
    ]
    _run_all([cmd])
    files = dataset_files(ctx.source)
    return {
        "success": True,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "requests": 1,
    }


def env_without_proxy() -> dict[str, str]:
    """The environment minus HTTP proxy settings (everything here is on 127.0.0.1).

    Returns
    -------
    dict
        A copy of ``os.environ``.
    """
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
