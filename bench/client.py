"""Run one strategy once, in this process, and print one JSON line with what it cost.

The runner starts a fresh ``python -m bench.client`` for every run, so the peak RSS and CPU time
reported here belong to that strategy alone. Time, CPU and RSS cover the upload itself, not the
interpreter start; external tools the strategy runs (DCMTK, pynetdicom's app) are counted through
``RUSAGE_CHILDREN``.

Usage::

    python -m bench.client rest xio --source DIR --url URL --session E1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench.strategies import Context, run_strategy

__all__ = ["main", "measure"]


def _peak_rss_kib() -> int:
    """This process's own peak resident memory in KiB.

    ``VmHWM`` from ``/proc/self/status`` where there is one: it belongs to this program's address
    space alone. ``ru_maxrss`` of ``RUSAGE_SELF`` is not: Linux carries it over from the process
    image before ``exec``, and Python starts children with ``vfork``, so a client started by a
    runner that once held a large listing would report the runner's peak.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def measure(kind: str, name: str, ctx: Context) -> dict[str, Any]:
    """Run one strategy and measure it.

    Parameters
    ----------
    kind
        ``rest`` or ``dicom``.
    name
        The strategy.
    ctx
        Where to send.

    Returns
    -------
    dict
        ``duration`` (s), ``cpu`` (user+sys s, this process and its children), ``peak_rss_mb``,
        ``success``, ``error`` and what the strategy reported (``files``, ``bytes``, ...).
    """
    run, prepare = run_strategy(kind, name, ctx)
    if prepare is not None:
        prepare()
    cpu0 = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        facts = run()
    except Exception as exc:  # reported as a failed run, not a crash
        facts = {"success": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    duration = time.perf_counter() - t0
    cpu = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN) - cpu0
    # KiB; for children (storescu, pynetdicom's app) ru_maxrss of the largest single child.
    rss_kib = max(_peak_rss_kib(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {
        "strategy": name,
        "duration": duration,
        "cpu": cpu,
        "peak_rss_mb": rss_kib / 1024,
        **{"success": False, "error": None, "files": 0, "bytes": 0},
        **facts,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: run one strategy and print its measurements as JSON.

    Parameters
    ----------
    argv
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when the strategy succeeded, 1 otherwise.
    """
    p = argparse.ArgumentParser(prog="python -m bench.client")
    p.add_argument("kind", choices=["rest", "dicom"])
    p.add_argument("strategy")
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--url", default="")
    p.add_argument("--project", default="P1")
    p.add_argument("--subject", default="S1")
    p.add_argument("--session", default="E1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--aet", default="ANY-SCP")
    p.add_argument("--workdir", type=Path, required=True)
    a = p.parse_args(argv)
    ctx = Context(
        source=a.source,
        url=a.url,
        project=a.project,
        subject=a.subject,
        session=a.session,
        host=a.host,
        port=a.port,
        aet=a.aet,
        workdir=a.workdir,
    )
    record = measure(a.kind, a.strategy, ctx)
    sys.stdout.write(json.dumps(record) + "\n")
    return 0 if record["success"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
