"""Reports of a run: one row per session as CSV or JSON lines, or a self-contained HTML page.

The HTML page needs nothing but a browser: the styles and the throughput chart (an inline SVG)
are in the file. The chart spreads each session's bytes evenly over the time it was sending,
which is what the reports record, so merged shard reports draw the same chart as one run.
"""

from __future__ import annotations

import csv
import html
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xnatio.errors import InputError
from xnatio.many.outcome import SessionOutcome

__all__ = [
    "CSV_FIELDS",
    "check_report_path",
    "merge_reports",
    "throughput_series",
    "write_report",
]

CSV_FIELDS = (
    "key", "project", "subject", "session", "origin", "transport", "status", "files", "bytes",
    "files_sent", "bytes_sent", "already_present", "verified", "matched", "started", "finished",
    "duration", "errors", "journal", "worker", "attempts",
)  # fmt: skip
_SUFFIXES = (".csv", ".jsonl", ".html")


def check_report_path(path: str | Path) -> Path:
    """Validate a ``--report`` path before anything is sent."""
    p = Path(path)
    if p.suffix.lower() not in _SUFFIXES:
        raise InputError(f"--report {p}: the file name must end in .csv, .jsonl or .html")
    if not p.parent.is_dir():
        raise InputError(f"--report {p}: folder {p.parent} does not exist")
    return p


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) if t else ""


def _csv_row(o: SessionOutcome) -> dict[str, Any]:
    row = o.to_dict()
    row["started"] = _iso(o.started)
    row["finished"] = _iso(o.finished)
    row["verified"] = "" if o.verified is None else str(o.verified).lower()
    row["errors"] = "; ".join(o.errors)
    return {k: row.get(k, "") for k in CSV_FIELDS}


def write_report(path: str | Path, outcomes: Sequence[SessionOutcome], title: str = "") -> None:
    """Write ``outcomes`` to ``path`` as ``.csv``, ``.jsonl`` or ``.html`` (by its suffix)."""
    p = check_report_path(path)
    suffix = p.suffix.lower()
    try:
        if suffix == ".jsonl":
            with open(p, "w", encoding="utf-8") as fh:
                for o in outcomes:
                    fh.write(json.dumps(o.to_dict(), ensure_ascii=False) + "\n")
        elif suffix == ".csv":
            with open(p, "w", encoding="utf-8", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
                writer.writeheader()
                writer.writerows(_csv_row(o) for o in outcomes)
        else:
            p.write_text(render_html(outcomes, title or "xio upload-many"), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write the report {p}: {exc}") from exc


def merge_reports(paths: Sequence[str | Path]) -> list[SessionOutcome]:
    """Read JSON-lines reports (one per shard) into one list; a session reported by several
    keeps the row that ended last.

    Raises
    ------
    InputError
        A file that is not a ``.jsonl`` report, or a line that is not a report row.
    """
    rows: dict[str, SessionOutcome] = {}
    for path in paths:
        p = Path(path)
        if p.suffix.lower() != ".jsonl":
            raise InputError(f"--merge-reports {p}: give the .jsonl reports of the shards")
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InputError(f"--merge-reports: cannot read {p}: {exc}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                outcome = SessionOutcome.from_dict(json.loads(line))
            except (ValueError, TypeError) as exc:
                raise InputError(f"{p.name} line {n}: not a report row ({exc})") from None
            earlier = rows.get(outcome.key)
            if earlier is None or outcome.finished >= earlier.finished:
                rows[outcome.key] = outcome
    return sorted(rows.values(), key=lambda o: (o.started or float("inf"), o.key))


def throughput_series(
    outcomes: Sequence[SessionOutcome], bins: int = 120
) -> tuple[float, float, list[float]]:
    """Bytes per second over the run: ``(start, bin width in seconds, rate of each bin)``.

    Each session's ``bytes_sent`` is spread evenly over ``sending`` to ``finished``.
    """
    spans = [
        (o.sending, o.finished, o.bytes_sent)
        for o in outcomes
        if o.bytes_sent > 0 and o.sending and o.finished > o.sending
    ]
    if not spans:
        return 0.0, 1.0, []
    start = min(s for s, _, _ in spans)
    end = max(e for _, e, _ in spans)
    width = max((end - start) / bins, 0.05)
    count = max(1, int((end - start) / width + 0.999))
    rates = [0.0] * count
    for s, e, n in spans:
        per_second = n / (e - s)
        first, last = int((s - start) / width), min(count - 1, int((e - start) / width))
        for b in range(first, last + 1):
            lo, hi = max(s, start + b * width), min(e, start + (b + 1) * width)
            if hi > lo:
                rates[b] += per_second * (hi - lo) / width
    return start, width, rates


def _chart(outcomes: Sequence[SessionOutcome]) -> str:
    _, width, rates = throughput_series(outcomes)
    if not rates:
        return '<p class="empty">Nothing was sent in this run.</p>'
    w, h, left, bottom = 900, 260, 60, 30
    top = max(rates) / 1e6 or 1.0
    xs = [left + (i + 0.5) * (w - left - 10) / len(rates) for i in range(len(rates))]
    ys = [h - bottom - (r / 1e6) / top * (h - bottom - 10) for r in rates]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    area = f"{left},{h - bottom} {points} {xs[-1]:.1f},{h - bottom}"
    total = width * len(rates)
    anchors = {0.0: "start", 1.0: "end"}
    ticks = "".join(
        f'<text x="{left + f * (w - left - 10):.0f}" y="{h - 8}" class="tick" '
        f'text-anchor="{anchors.get(f, "middle")}">{f * total:.0f} s</text>'
        for f in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    return (
        f'<svg id="throughput" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="throughput over time">'
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" class="axis"/>'
        f'<line x1="{left}" y1="10" x2="{left}" y2="{h - bottom}" class="axis"/>'
        f'<text x="4" y="18" class="tick">{top:.1f} MB/s</text>'
        f'<text x="4" y="{h - bottom}" class="tick">0</text>{ticks}'
        f'<polygon points="{area}" class="area"/><polyline points="{points}" class="line"/>'
        "</svg>"
    )


_STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#1d2430;background:#fff}
h1{font-size:20px;margin:0 0 4px} .sum{color:#465;margin:0 0 16px}
.axis{stroke:#888;stroke-width:1} .tick{font-size:11px;fill:#555}
.area{fill:#2a7ab9;fill-opacity:.25} .line{fill:none;stroke:#2a7ab9;stroke-width:2}
table{border-collapse:collapse;margin-top:16px;width:100%}
th,td{border-bottom:1px solid #dde;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f8} td.n{text-align:right;font-variant-numeric:tabular-nums}
.landed,.done-earlier{color:#0a7a2f} .failed,.blocked{color:#b3261e;font-weight:600}
.interrupted,.not-started{color:#8a5a00}
"""


def render_html(outcomes: Sequence[SessionOutcome], title: str) -> str:
    """The self-contained HTML page of a report."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    sent = sum(o.bytes_sent for o in outcomes)
    times = [t for o in outcomes for t in (o.started, o.finished) if t]
    span = (max(times) - min(times)) if times else 0.0
    rate = sent / span / 1e6 if span else 0.0
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    rows = "".join(
        f'<tr><td>{html.escape(o.key)}</td><td class="{o.status}">{o.status}</td>'
        f'<td class="n">{o.files}</td><td class="n">{o.bytes / 1e6:.1f}</td>'
        f'<td class="n">{o.files_sent}</td><td class="n">{o.duration:.1f}</td>'
        f"<td>{'' if o.verified is None else ('yes' if o.verified else 'no')}</td>"
        f"<td>{html.escape(o.worker)}</td><td>{html.escape('; '.join(o.errors[:3]))}</td></tr>"
        for o in outcomes
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="sum">{len(outcomes)} sessions: {summary}. {sent / 1e6:.1f} MB sent in '
        f"{span:.1f} s ({rate:.1f} MB/s).</p>"
        f"<h2>Throughput over time</h2>{_chart(outcomes)}"
        '<table id="sessions"><thead><tr><th>session</th><th>status</th><th>files</th>'
        "<th>MB</th><th>files sent</th><th>seconds</th><th>verified</th><th>worker</th>"
        f"<th>errors</th></tr></thead><tbody>{rows}</tbody></table></body></html>\n"
    )
