"""Regenerate the performance tables of README.md and docs/benchmarks.md from stored results.

No benchmark number in those tables is typed by hand: each is computed here from the results
files in ``bench/results/`` (every single run is stored there), between marker comments:

- README.md, ``<!-- bench-table:start -->`` ... ``<!-- bench-table:end -->``: one row per
  comparison in :data:`README_ROWS`, xio against one other strategy from the same run (never
  from two runs), with medians of the successful runs. Rows with fewer than
  :data:`MIN_RUNS` runs on either side, or from a tree with uncommitted changes, say so in the
  row. The list keeps the comparisons xio loses or only ties.
- docs/benchmarks.md, ``<!-- bench-results:start -->`` ... ``<!-- bench-results:end -->``: every
  results file of :data:`DOCS_RESULTS` as :func:`bench.report.markdown` renders it;
  ``<!-- bench-extra:start -->`` ... ``<!-- bench-extra:end -->``: the Markdown tables that
  ``bench.startup``, ``bench.overload`` and ``bench.verify_cost`` store beside their JSON
  (:data:`DOCS_EXTRA`); and
  ``<!-- bench-compressibility:start -->`` ... ``<!-- ...:end -->``: the table of
  ``bench/compressibility.py``.

Usage::

    python -m bench.readme            # rewrite both files
    python -m bench.readme --check    # exit 1 if either file differs from what would be written

``tests/test_bench_readme.py`` runs the check, so a table cannot drift from its results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.compressibility import markdown as compressibility_markdown
from bench.report import link_summary
from bench.report import markdown as report_markdown

__all__ = [
    "DOCS_EXTRA",
    "DOCS_RESULTS",
    "MIN_RUNS",
    "README_ROWS",
    "Comparison",
    "comparison_row",
    "main",
    "render_docs",
    "render_readme",
    "replace_between",
]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
DOCS = REPO / "docs" / "benchmarks.md"

#: Fewer successful runs than this on either side of a comparison and the row says so.
MIN_RUNS = 3


@dataclass(frozen=True)
class Comparison:
    """One README row: xio against another strategy, both from one results file.

    Attributes
    ----------
    what
        The comparison, in words.
    results
        The results file's name without ``.json``.
    other
        The other strategy's row in that file.
    other_label
        How the table names it.
    xio
        xio's row in that file.
    """

    what: str
    results: str
    other: str
    other_label: str
    xio: str = "xio"


CAP12, CAP4, WAN = "rest-wan-medium-wan-cap12", "rest-wan-medium-wan-cap4", "rest-wan-medium"
ARCHIVE_FIRST = "archive-first (42 tar files written first, then 42 workers)"
XNATCTL_REST = "xnatctl 0.6.0 `session upload -w 42 --mode tar`"
XNATCTL_DICOM = "xnatctl 0.6.0 `session upload-dicom -w 42`"
SEQUENTIAL = "one request with the whole session"
STORESCU = "one DCMTK `storescu`"

#: The README table, in order. Keep the ones xio loses or ties: they are part of the picture.
README_ROWS: tuple[Comparison, ...] = (
    Comparison("REST over a WAN", CAP12, "archive-first", ARCHIVE_FIRST),
    Comparison("REST over a WAN", CAP12, "xnatctl", XNATCTL_REST),
    Comparison("REST over a WAN", CAP12, "sequential", SEQUENTIAL),
    Comparison("REST over a WAN", CAP4, "archive-first", ARCHIVE_FIRST),
    Comparison("REST over a WAN", CAP4, "xnatctl", XNATCTL_REST),
    Comparison("REST over a WAN", WAN, "archive-first", ARCHIVE_FIRST),
    Comparison("REST over a WAN", WAN, "xnatctl", XNATCTL_REST),
    Comparison("REST over a WAN", WAN, "sequential", SEQUENTIAL),
    Comparison(
        "REST into the sandbox",
        "rest-loopback-medium",
        "floor",
        "the sandbox ingesting one pre-built tar",
    ),
    Comparison("C-STORE to DCMTK `storescp`", "dicom-loopback-medium", "storescu", STORESCU),
    Comparison("C-STORE to DCMTK `storescp`", "dicom-loopback-medium", "xnatctl", XNATCTL_DICOM),
    Comparison(
        "C-STORE to Orthanc (default settings)",
        "dicom-orthanc-medium",
        "storescu-x10",
        "ten DCMTK `storescu` processes",
    ),
    Comparison(
        "C-STORE to Orthanc (default settings)", "dicom-orthanc-medium", "xnatctl", XNATCTL_DICOM
    ),
)

#: Tables that other tools write as Markdown next to their JSON (``bench.startup``,
#: ``bench.overload``), shown in docs/benchmarks.md between ``bench-extra`` markers.
DOCS_EXTRA: tuple[str, ...] = (
    "startup",
    "overload-xl-15k",
    "overload-xl-15k-equal-batches",
    "verify-cost-medium",
)

#: Results files shown in full in docs/benchmarks.md, in order: issue 13's clean runs first.
DOCS_RESULTS: tuple[str, ...] = (
    CAP12,
    f"{CAP12}-deep-queue",
    CAP4,
    WAN,
    "rest-loopback-medium",
    "dicom-loopback-medium",
    "dicom-orthanc-medium",
    "rest-scale-xl-deflate",
    "rest-scale-xl",
    "rest-scale-xl-after-fixes",
    "dicom-scale-xl",
    "rest-wan-medium-xio-vs-archive-first",
    "rest-wan-small",
    "rest-loopback-large",
    "rest-sweep-small",
    "dicom-loopback-small",
    "dicom-orthanc-small",
    "dicom-wan-small",
    "dicom-loopback-medium-pynetdicom",
    "dicom-orthanc-medium-storescu",
    # Issue 12: the commit before the restructure and the one after, back to back in one session.
    *(
        f"restructure-{side}-{name}"
        for name in (
            "rest-loopback-medium",
            "rest-wan-medium",
            "dicom-loopback-medium",
            "rest-loopback-large",
        )
        for side in ("before", "after")
    ),
)


def replace_between(text: str, name: str, body: str) -> str:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->``.

    Parameters
    ----------
    text
        The document.
    name
        The marker name.
    body
        The new content (without the markers).

    Returns
    -------
    str
        The document with the new content.

    Raises
    ------
    ValueError
        When the markers are missing or out of order.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"markers {start} ... {end} not found")
    return text[: i + len(start)] + "\n" + body.rstrip("\n") + "\n" + text[j:]


def _times(report: dict[str, Any], row: str) -> list[float]:
    return [
        float(r["duration"])
        for r in report["runs"]
        if r.get("row", r.get("strategy")) == row and r.get("success")
    ]


def _ratio_words(xio: float, other: float) -> str:
    if other >= 1.1 * xio:
        return (
            f"xio {other / xio:.1f}x faster"
            if other / xio >= 3
            else f"xio {other / xio:.2f}x faster"
        )
    if xio >= 1.1 * other:
        return f"**xio {xio / other:.2f}x slower**"
    return f"tie (xio at {xio / other:.2f}x its time)"


def _source(report: dict[str, Any], name: str, runs: int) -> str:
    m = report["machine"]
    notes = []
    if 0 < runs < MIN_RUNS:
        notes.append(f"**only {runs} run{'s' if runs != 1 else ''}**")
    if m.get("dirty"):
        notes.append("**uncommitted changes**")
    content = report.get("content") or "simple"
    notes.append(f"{content} data")
    return f"`{name}` @ `{(m.get('commit') or '?')[:7]}`, " + ", ".join(notes)


def comparison_row(c: Comparison, report: dict[str, Any]) -> str:
    """One README table row from one results file.

    Parameters
    ----------
    c
        The comparison.
    report
        The results file's content.

    Returns
    -------
    str
        A Markdown table row. A side without a successful run (the server did not hold every
        file, or the tool failed) is shown as failed, with the first error.
    """
    xs, os_ = _times(report, c.xio), _times(report, c.other)
    ds = report["dataset"]
    cells = [
        f"{c.what} ({link_summary(report)}; {ds['files']:,} files, {ds['bytes'] / 1e6:.0f} MB)"
    ]
    if xs and os_:
        x, o = statistics.median(xs), statistics.median(os_)
        cells += [f"{x:.1f} s", f"{c.other_label}: {o:.1f} s", _ratio_words(x, o)]
    else:
        cells += [
            f"{statistics.median(xs):.1f} s" if xs else _failed(report, c.xio),
            f"{c.other_label}: "
            + (f"{statistics.median(os_):.1f} s" if os_ else _failed(report, c.other)),
            "no comparison",
        ]
    cells.append(_source(report, c.results, min(len(xs), len(os_)) if xs and os_ else 0))
    return "| " + " | ".join(cells) + " |"


def _failed(report: dict[str, Any], row: str) -> str:
    mine = [r for r in report["runs"] if r.get("row", r.get("strategy")) == row]
    error = next((str(r.get("error") or "") for r in mine if not r.get("success")), "")
    # A tool's own "Error: ..." line says what went wrong, else the first line; pipes would
    # break the table.
    lines = [ln.strip() for ln in error.splitlines() if ln.strip()] or ["no run"]
    reason = next((ln for ln in reversed(lines) if ln.startswith("Error")), lines[0])
    reason = reason.replace("|", "/")[:120]
    return f"**failed in {len(mine)} of {len(mine)} runs** (first: {reason})"


def _load(results: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results / f"{name}.json").read_text())
    return data


def render_readme(text: str, results: Path = RESULTS) -> str:
    """README.md with its table regenerated.

    Parameters
    ----------
    text
        README.md as it is.
    results
        The results folder.

    Returns
    -------
    str
        README.md as it should be.
    """
    lines = [
        "| comparison | xio (median) | the other (median) | result | runs, source |",
        "|---|---|---|---|---|",
    ]
    lines += [comparison_row(c, _load(results, c.results)) for c in README_ROWS]
    lines += [
        "",
        f"Medians of {MIN_RUNS} runs side by side in one run of the harness unless the row says "
        "otherwise; `source` names the results file in `bench/results/` and the commit it ran "
        "at. Generated by `python -m bench.readme`.",
    ]
    return replace_between(text, "bench-table", "\n".join(lines))


def render_docs(text: str, results: Path = RESULTS) -> str:
    """docs/benchmarks.md with its generated sections regenerated.

    Parameters
    ----------
    text
        docs/benchmarks.md as it is.
    results
        The results folder.

    Returns
    -------
    str
        docs/benchmarks.md as it should be.
    """
    sections = []
    for name in DOCS_RESULTS:
        sections += [f"### {name}", "", report_markdown(_load(results, name), name), ""]
    text = replace_between(text, "bench-results", "\n".join(sections))
    extra = []
    for name in DOCS_EXTRA:  # each file names its command, commit and machine itself
        extra += [f"### {name}", "", (results / f"{name}.md").read_text().strip(), ""]
    text = replace_between(text, "bench-extra", "\n".join(extra))
    return replace_between(
        text, "bench-compressibility", compressibility_markdown(_load(results, "compressibility"))
    )


def main(argv: list[str] | None = None) -> int:
    """Rewrite README.md and docs/benchmarks.md, or check them.

    Parameters
    ----------
    argv
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when written (or up to date with ``--check``), 1 when ``--check`` finds a difference.
    """
    p = argparse.ArgumentParser(prog="python -m bench.readme", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="only check that the files are current")
    a = p.parse_args(argv)
    stale = []
    for path, render in ((README, render_readme), (DOCS, render_docs)):
        old = path.read_text()
        new = render(old)
        if new != old:
            stale.append(path.name)
            if not a.check:
                path.write_text(new)
    if a.check and stale:
        print(f"out of date: {', '.join(stale)} (run python -m bench.readme)", file=sys.stderr)
        return 1
    print("updated: " + (", ".join(stale) if stale else "nothing (already current)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
