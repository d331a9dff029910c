"""Throughput of the de-identification editor (xnatio.anonymize) on one core.

Writes ``xio synth``'s ``medium`` session (3,000 files, ~400 MB) to a temporary folder, reads it
once so it is in the page cache, then for each script measures, file by file on one thread:

- ``read``: the plain cost of reading every file into a 1 MiB buffer (what an upload without
  anonymisation does at the least);
- ``plan``: opening the file, reading its header and applying the scripts (the length of the
  edited file is then known, as a tar body needs);
- ``stream``: producing the edited bytes into the same 1 MiB buffer through ``Edit.open``.

MB/s are of source bytes (10^6 bytes per second). Peak memory is the process's VmHWM after the
session was written (the counter is reset before the measured loops).

Usage::

    python -m bench.anonymize                      # XNAT default site script and basic profile
    python -m bench.anonymize --syntax implicit --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from xnatio.anonymize import Anonymizer, Script
from xnatio.anonymize.profile import basic_profile
from xnatio.synth import PRESETS, write_session

XNAT_DEFAULT_SITE_SCRIPT = """version "6.1"
project != "Unassigned" ? (0008,1030) := project
(0010,0010) := subject
(0010,0020) := session
"""
VARIABLES = {"project": "BENCH", "subject": "SUBJ01", "session": "SUBJ01_MR1"}
_BUFFER = 1 << 20


def _peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    # Not Linux, or not allowed: the peak then includes the set-up.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _read_all(files: list[Path]) -> float:
    buf = bytearray(_BUFFER)
    start = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return time.perf_counter() - start


def _anonymise_all(files: list[Path], anon: Anonymizer) -> tuple[float, float, int]:
    buf = bytearray(_BUFFER)
    view = memoryview(buf)
    plan_s = stream_s = 0.0
    produced = 0
    for path in files:
        with open(path, "rb", buffering=0) as f:
            t0 = time.perf_counter()
            edit = anon.plan(f, key=str(path))
            t1 = time.perf_counter()
            f.seek(0)
            edited = edit.open(f)
            while n := edited.readinto(view):
                produced += n
            t2 = time.perf_counter()
        plan_s += t1 - t0
        stream_s += t2 - t1
    return plan_s, stream_s, produced


def _best_read(repeats: int, files: list[Path]) -> float:
    return min(_read_all(files) for _ in range(repeats))


def _best_edit(repeats: int, files: list[Path], anon: Anonymizer) -> tuple[float, float, int]:
    runs = [_anonymise_all(files, anon) for _ in range(repeats)]
    return min(runs, key=lambda r: r[0] + r[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="medium", choices=sorted(PRESETS))
    parser.add_argument(
        "--syntax", default="explicit", choices=["explicit", "implicit", "big-endian", "deflated"]
    )
    parser.add_argument("--repeats", type=int, default=3, help="best of N (default 3)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    scripts = {
        "xnat-default-site": [Script.parse(XNAT_DEFAULT_SITE_SCRIPT, source="site")],
        "basic-profile": [basic_profile()],
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="xio-bench-anon-") as tmp:
        summary = write_session(
            Path(tmp),
            series=preset.series,
            instances=preset.instances,
            rows=preset.rows,
            columns=preset.columns,
            transfer_syntax=args.syntax,
        )
        files = sorted(Path(tmp).rglob("*.dcm"))
        total = sum(p.stat().st_size for p in files)
        _read_all(files)  # into the page cache
        _reset_peak()
        read_s = _best_read(args.repeats, files)
        print(f"{args.preset}: {len(files)} files, {total / 1e6:.0f} MB, {args.syntax}; "
              f"best of {args.repeats}; one thread")  # fmt: skip
        print(f"{'script':<20}{'read MB/s':>11}{'plan ms/file':>14}{'edit MB/s':>11}"
              f"{'files/s':>9}{'vs read':>9}")  # fmt: skip
        for name, compiled in scripts.items():
            anon = Anonymizer(compiled, VARIABLES, salt="bench")
            plan_s, stream_s, produced = _best_edit(args.repeats, files, anon)
            edit_s = plan_s + stream_s
            row = {
                "script": name,
                "files": len(files),
                "source_mb": total / 1e6,
                "output_mb": produced / 1e6,
                "read_mb_s": total / 1e6 / read_s,
                "plan_ms_per_file": plan_s / len(files) * 1e3,
                "stream_mb_s": total / 1e6 / stream_s,
                "edit_mb_s": total / 1e6 / edit_s,
                "files_s": len(files) / edit_s,
                "vs_read": edit_s / read_s,
            }
            rows.append(row)
            line = f"{name:<20}{row['read_mb_s']:>11.0f}{row['plan_ms_per_file']:>14.3f}"
            line += f"{row['edit_mb_s']:>11.0f}{row['files_s']:>9.0f}{row['vs_read']:>8.2f}x"
            print(line)
        peak = _peak_kib()
    print(f"peak RSS {peak / 1024:.0f} MiB (study {summary.study_instance_uid[:24]}...)")
    if args.json:
        result = {"preset": args.preset, "syntax": args.syntax, "peak_rss_mib": peak / 1024}
        args.json.write_text(json.dumps({**result, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
