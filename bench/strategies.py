"""The upload strategies a benchmark compares; each runs inside :mod:`bench.client`.

REST strategies (against the sandbox, directly or through the shaping proxy):

``xio``
    :func:`xnatio.uploaders.upload_dicom_parallel_rest` (the public API) with its defaults:
    42 byte-balanced batches streamed by 42 workers as chunked zip bodies that are deflated only
    while the link limits the upload (``compress="auto"``), one commit, then the file-listing
    check.
``xio-wN`` / ``xio-wN-bM`` / ``xio-auto`` (also ``xio-wauto``) / ``xio-auto-bM``
    The same with N upload workers, or ``upload_workers="auto"`` (and M batches; default 42),
    for the sweep.
``xio-…-none`` / ``xio-…-deflate``
    Any of the above with ``compress="none"`` (tar bodies with a Content-Length, as before
    issue 13) or ``compress="deflate"``: ``xio-none``, ``xio-w8-none``, ``xio-auto-deflate``.
``sequential``
    One request carrying the whole session as one tar (``compress="none"``), then the commit:
    what a simple script does.
``archive-first``
    A model of the earlier public xnatio: split the file list into 42 batches, write every batch
    as a tar file in a temporary folder (5 archive workers, stdlib :mod:`tarfile`), only then
    upload the files with 42 workers, then commit.
``gradual``
    XNAT's ``gradual-DICOM`` handler: one request per file, 42 at a time (xnatio's implementation).
``floor``
    The server-side floor: the whole session as ONE tar file built on disk before the clock starts,
    sent in one plain ``httpx`` POST (streamed from the file) and committed.
``xnatctl`` / ``xnatctl-wN``
    The released xnatctl 0.6.0 (:mod:`bench.peers`, its own virtual environment):
    ``xnatctl session upload DIR -P P -S S -E E -w 42 --mode tar`` (N workers for ``-wN``). It
    splits the files into one tar per worker and posts them with ``Direct-Archive=true``; on XNAT a
    background task then archives the session. The run includes that step, done as XNAT's own
    trigger does it (``POST /xapi/direct-archive/P/<StudyInstanceUID>/E``), since the session only
    counts once it is in the archive. Credentials and URL go in through ``XNAT_URL``/``XNAT_USER``/
    ``XNAT_PASS``, with a private ``HOME`` and ``TMPDIR`` per run and update checks off.

Both kinds:

``inventory``
    :func:`xnatio.inventory.build_inventory` alone (its defaults): the header scan every upload
    starts with, measured on its own. Sends nothing, so no server is started for it.

``xio…-anon`` (both kinds)
    Any ``xio`` strategy de-identifying every file on the way out with XNAT's default site script
    (``anonymize=`` a script file): ``xio-anon``, ``xio-none-anon``, ``xio-a10-anon``.

``xio`` also reports when each phase of its run began (from its progress events), as
``phases``: seconds spent scanning, setting up (login, checks, planning the archive bodies),
uploading, committing and verifying.

DICOM strategies (against storescp, Orthanc or the proxy in front of them):

``xio``
    :func:`xnatio.uploaders.send_dicom_store` (the public API) with its defaults.
``xio-aN``
    The same with N associations (``num_batches=N``), for a sweep.
``storescu``
    One DCMTK ``storescu`` process, one association (``+sd +r``), with ``TCP_NODELAY=1`` in its
    environment (DCMTK's switch for disabling Nagle's algorithm; ~40x faster on loopback).
``storescu-x10``
    Ten DCMTK ``storescu`` processes at once, the series shared among them.
``pynetdicom``
    pynetdicom's ``storescu`` app (``python -m pynetdicom storescu -r``).
``xnatctl`` / ``xnatctl-wN``
    xnatctl 0.6.0's C-STORE command, ``xnatctl session upload-dicom DIR --host H --port P
    --called-aet AET -w 42`` (pynetdicom associations in parallel; N for ``-wN``). It logs in to
    XNAT's REST API first, even for C-STORE, so the runner gives it a REST-only sandbox.
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "DICOM_STRATEGIES",
    "LOCAL_STRATEGIES",
    "REST_STRATEGIES",
    "Context",
    "PhaseClock",
    "dataset_files",
    "is_known",
    "run_strategy",
]

REST_STRATEGIES = (
    "xio",
    "sequential",
    "archive-first",
    "gradual",
    "floor",
    "inventory",
    "xnatctl",
)
DICOM_STRATEGIES = ("xio", "storescu", "storescu-x10", "pynetdicom", "inventory", "xnatctl")

#: Strategies that send nothing: the runner starts no server for them and counts nothing.
LOCAL_STRATEGIES = frozenset({"inventory"})

_SWEEP = re.compile(r"^xio(?:-w(\d+)|-w?(auto))?(?:-b(\d+))?(?:-(none|deflate))?$")
_XNATCTL = re.compile(r"^xnatctl(?:-w(\d+))?$")

#: Workers for ``xnatctl`` without ``-wN``: the seed's 42.
XNATCTL_WORKERS = 42


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
    anonymize: bool = False


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
    if name == "inventory" and kind in ("rest", "dicom"):
        return (lambda: _inventory(ctx)), None
    if name.startswith("xio") and name.endswith("-anon"):
        return run_strategy(kind, name.removesuffix("-anon"), replace(ctx, anonymize=True))
    if (m := _XNATCTL.match(name)) and kind in ("rest", "dicom"):
        workers = int(m.group(1) or XNATCTL_WORKERS)
        if kind == "dicom":
            return (lambda: _xnatctl_dicom(ctx, workers)), None
        found: dict[str, Any] = {}

        def prepare() -> dict[str, Any]:
            found["study"] = _study_uid(ctx.source)  # untimed: read one header
            return found

        return (lambda: _xnatctl_rest(ctx, workers, found["study"])), prepare
    if kind == "rest":
        if m := _SWEEP.match(name):
            count: int | str = "auto" if m.group(2) else int(m.group(1) or 42)
            batches = int(m.group(3)) if m.group(3) else 42
            compress = m.group(4) or "auto"
            return (lambda: _xio_rest(ctx, batches, count, "DICOM-zip", compress)), None
        if name == "sequential":
            return (lambda: _xio_rest(ctx, 1, 1, "DICOM-zip", "none")), None
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
        if m := re.match(r"^xio-a(\d+)$", name):
            associations = int(m.group(1))
            return (lambda: _xio_dicom(ctx, associations)), None
        if name == "storescu":
            return (lambda: _storescu(ctx, 1)), None
        if m := re.match(r"^storescu-x(\d+)$", name):
            n = int(m.group(1))
            return (lambda: _storescu(ctx, n)), None
        if name == "pynetdicom":
            return (lambda: _pynetdicom(ctx)), None
    raise ValueError(f"unknown {kind} strategy {name!r}")


# -- both kinds -----------------------------------------------------------------------------------


def _inventory(ctx: Context) -> dict[str, Any]:
    from xnatio.inventory import build_inventory

    with build_inventory(ctx.source) as inv:
        return {
            "success": True,
            "files": len(inv.files),
            "bytes": inv.total_bytes,
            "skipped": len(inv.skipped),
            "requests": 0,
        }


class PhaseClock:
    """A progress callback that notes when each phase was first and last reported.

    xio's uploaders emit ``scanning`` events while reading headers, ``uploading`` ones while
    sending (the first once every archive body is planned), then ``committing``, ``verifying``
    and ``done``. :meth:`phases` turns the first/last times into seconds per phase. Callbacks
    come from worker threads; dict updates of distinct keys are atomic enough for this.

    A daemon thread also samples the process's resident memory every ``interval`` seconds
    (from ``/proc/self/statm``; nothing where that is missing), so that :meth:`rss_by_phase`
    can tell in which phase the peak happened.

    Parameters
    ----------
    interval
        Seconds between RSS samples; 0 turns sampling off.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.t0 = time.perf_counter()
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval > 0 and Path("/proc/self/statm").exists():
            self._thread = threading.Thread(
                target=self._sample, args=(interval,), name="bench-rss", daemon=True
            )
            self._thread.start()

    def _sample(self, interval: float) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/statm", "rb", buffering=0) as fh:
            while not self._stop.is_set():
                fh.seek(0)
                resident = int(fh.read().split()[1]) * page
                self.samples.append((time.perf_counter() - self.t0, resident))
                self._stop.wait(interval)

    def stop(self) -> None:
        """Stop sampling (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __call__(self, event: Any) -> None:
        self.mark(str(getattr(event, "phase", "")))

    def mark(self, phase: str) -> None:
        """Note that ``phase`` is happening now.

        Parameters
        ----------
        phase
            A progress phase, or ``import`` (the uploader's modules are loaded).
        """
        now = time.perf_counter() - self.t0
        self.first.setdefault(phase, now)
        self.last[phase] = now

    def phases(self, end: float | None = None) -> dict[str, float]:
        """Seconds per phase.

        Parameters
        ----------
        end
            Seconds since the clock started when the run ended (default: now).

        Returns
        -------
        dict
            ``import`` (loading xnatio's uploader modules, part of the timed run), ``scan``
            (from there to the last scanning event), ``setup`` (from there to the first
            sending event: login, checks, archive planning), ``send`` (to the first committing
            event), ``commit`` (to the first verifying event), ``verify`` (to the done event) and
            ``total``; a phase never reported is left out.
        """
        total = (time.perf_counter() - self.t0) if end is None else end
        out: dict[str, float] = {}
        prev = 0.0
        for name, at in self._bounds(total):
            out[name] = at - prev
            prev = at
        out["total"] = total
        return out

    def rss_by_phase(self) -> dict[str, float]:
        """Peak resident memory (MB) sampled in each phase of :meth:`phases`.

        Returns
        -------
        dict
            Phase name to the largest sample in it, plus ``after`` for samples past the last
            phase; empty without samples. Stops the sampling.
        """
        self.stop()
        bounds = self._bounds(self.samples[-1][0] if self.samples else 0.0)
        out: dict[str, float] = {}
        for t, resident in self.samples:
            name = next((n for n, at in bounds if t <= at), "after")
            out[name] = max(out.get(name, 0.0), resident / 2**20)
        return out

    def _bounds(self, end: float) -> list[tuple[str, float]]:
        """Each phase with the time (since the start) it ended, in order.

        A phase runs from its start mark to the next phase's start (or ``done``): ``import``
        from 0, ``scan`` from the import, ``setup`` from the last scanning event, ``send`` from
        the first sending event, ``commit`` and ``verify`` from their first events; the last
        ends at ``done`` or, without one, at ``end``. A phase whose start was never reported
        (C-STORE has no commit) is left out.
        """
        starts = [
            ("import", 0.0),
            ("scan", self.first.get("import")),
            ("setup", self.last.get("scanning")),
            ("send", self.first.get("uploading", self.first.get("archiving"))),
            ("commit", self.first.get("committing")),
            ("verify", self.first.get("verifying")),
        ]
        present = [(name, at) for name, at in starts if at is not None]
        out: list[tuple[str, float]] = []
        for i, (name, _) in enumerate(present):
            stop = present[i + 1][1] if i + 1 < len(present) else self.first.get("done", end)
            out.append((name, stop))
        return out


# -- REST -----------------------------------------------------------------------------------------


def _xio_rest(
    ctx: Context, batches: int, workers: int | str, handler: str, compress: str = "auto"
) -> dict[str, Any]:
    clock = PhaseClock()
    from xnatio.uploaders import upload_dicom_parallel_rest

    clock.mark("import")
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
        compress="none" if compress == "none" else "deflate" if compress == "deflate" else "auto",
        progress_callback=clock,
        anonymize=_site_script(ctx),
    )
    return {
        "success": result.success,
        "error": "; ".join(result.errors[:3]) or None,
        "files": result.files_sent,
        "bytes": result.bytes_sent,
        "wire_bytes": sum(b.sent for b in result.batches),
        "adaptive": result.adaptive,
        "requests": len(result.batches),
        "retries": result.retries,
        "phases": clock.phases(),
        "phase_rss_mb": clock.rss_by_phase(),
    }


def _site_script(ctx: Context) -> Path | None:
    """XNAT's default site script in a file, for the ``-anon`` strategies (else None)."""
    if not ctx.anonymize:
        return None
    from xnatio.anonymize import XNAT_DEFAULT_SCRIPT

    path = ctx.workdir / "site.das"
    path.write_text(XNAT_DEFAULT_SCRIPT, encoding="utf-8")
    return path


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


# -- xnatctl (a released peer, in its own virtual environment) -----------------------------------


def _study_uid(source: Path) -> str:
    import pydicom

    first = next(p for p in dataset_files(source) if p.suffix == ".dcm")
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def _run_xnatctl(ctx: Context, args: list[str]) -> None:
    from bench.peers import executable

    exe = executable("xnatctl")
    if not exe.exists():
        raise RuntimeError("xnatctl is not installed (python -m bench.peers)")
    home = ctx.workdir / "xnatctl-home"
    tmp = ctx.workdir / "xnatctl-tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env = {
        **env_without_proxy(),
        "HOME": str(home),  # no config file or token cache from the user's own HOME
        "TMPDIR": str(tmp),
        "XNAT_URL": ctx.url,
        "XNAT_USER": ctx.user,
        "XNAT_PASS": ctx.password,
        "NO_UPDATE_NOTIFIER": "1",  # it would otherwise ask PyPI for a newer release
        "XNAT_NO_UPDATE_CHECK": "1",
        "NO_COLOR": "1",
    }
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-300:]
        raise RuntimeError(f"xnatctl exited {proc.returncode}: {tail}")


def _xnatctl_rest(ctx: Context, workers: int, study_uid: str) -> dict[str, Any]:
    files = dataset_files(ctx.source)
    _run_xnatctl(
        ctx,
        [
            *("session", "upload", str(ctx.source), "-P", ctx.project, "-S", ctx.subject),
            *("-E", ctx.session, "-w", str(workers), "--mode", "tar", "-q"),
        ],
    )
    # XNAT archives a Direct-Archive session in the background; this is its trigger, so the
    # session is in the archive (and countable) when the run ends, as with the other strategies.
    with _client(ctx, 2) as client:
        response = client.post(f"/xapi/direct-archive/{ctx.project}/{study_uid}/{ctx.session}")
    if response.status_code >= 300:
        raise RuntimeError(f"direct-archive: {response.status_code} {response.text[:200]}")
    return {
        "success": True,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "requests": workers,
    }


def _xnatctl_dicom(ctx: Context, workers: int) -> dict[str, Any]:
    files = dataset_files(ctx.source)
    _run_xnatctl(
        ctx,
        [
            *("session", "upload-dicom", str(ctx.source), "--host", ctx.host),
            *("--port", str(ctx.port), "--called-aet", ctx.aet, "-w", str(workers), "-q"),
        ],
    )
    return {
        "success": True,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "requests": workers,
    }


# -- DICOM ----------------------------------------------------------------------------------------


def _xio_dicom(ctx: Context, associations: int = 45) -> dict[str, Any]:
    clock = PhaseClock()
    from xnatio.uploaders import send_dicom_store

    clock.mark("import")
    # With routing tags, as xio sends to XNAT: the in-memory splice is part of the cost.
    result = send_dicom_store(
        source_dir=ctx.source,
        host=ctx.host,
        port=ctx.port,
        called_aet=ctx.aet,
        project=ctx.project,
        subject=ctx.subject,
        session=ctx.session,
        num_batches=associations,
        progress_callback=clock,
        anonymize=_site_script(ctx),
    )
    return {
        "success": result.success,
        "error": "; ".join(result.errors[:3]) or None,
        "files": result.sent + result.warned,
        "bytes": result.bytes_sent,
        "requests": result.associations,
        "phases": clock.phases(),
        "phase_rss_mb": clock.rss_by_phase(),
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
    from bench.servers import find_tool

    exe = find_tool("storescu")
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
