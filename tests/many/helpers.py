"""Helpers for the upload-many tests: sessions on disk, manifests, and the counting relay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from bench.relay import CountingProxy, Gauge

from xnatio.synth import SynthSummary, write_session

__all__ = ["CountingProxy", "Gauge", "manifest", "write_sessions"]


def write_sessions(
    root: Path, count: int, *, series: int = 2, instances: int = 4, first_seed: int = 100
) -> Iterator[tuple[int, SynthSummary]]:
    """``count`` small one-study sessions under ``root/sNN`` (patients P000, P001...)."""
    for i in range(count):
        yield (
            i,
            write_session(
                root / f"s{i:02d}",
                series=series,
                instances=instances,
                rows=16,
                columns=16,
                seed=first_seed + i,
                patient_id=f"P{i:03d}",
            ),
        )


def manifest(path: Path, rows: list[tuple[str, str, str, str]], extra: str = "") -> Path:
    """A CSV manifest with the four required columns (and ``extra`` lines appended)."""
    lines = ["project,subject,session,source"] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path
