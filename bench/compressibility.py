"""How much gzip -1 and zstd -1 shrink real and synthetic DICOM files.

Real files: every MR or CT image with pixel data in an uncompressed transfer syntax (implicit or
explicit VR little endian, explicit big endian) among pydicom's test files, which include the
``pydicom-data`` package's when it is installed. Synthetic files: ``xio synth``'s ``small`` preset
(300 files) with ``simple`` content, and with ``realistic`` content as MR and as CT.

For each set the table gives the smallest and largest ratio of single files and the ratio of the
whole set concatenated into one stream (as an upload sends it). Ratios are original size /
compressed size. The results go to ``bench/results/compressibility.json``, from which
``python -m bench.readme`` renders the table in docs/benchmarks.md.

Usage::

    python -m bench.compressibility            # print the table, write the JSON
    python -m bench.compressibility --files    # also list every real file
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.metadata
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

__all__ = ["UNCOMPRESSED", "main", "measure", "ratios", "real_files"]

UNCOMPRESSED = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})
RESULTS = Path(__file__).resolve().parent / "results" / "compressibility.json"


def ratios(data: bytes) -> tuple[float, float]:
    """gzip -1 and zstd -1 ratios (original / compressed) of ``data``.

    Parameters
    ----------
    data
        The bytes.

    Returns
    -------
    tuple of float
        ``(gzip, zstd)``.
    """
    import zstandard

    gz = len(gzip.compress(data, compresslevel=1, mtime=0))
    zs = len(zstandard.ZstdCompressor(level=1).compress(data))
    return len(data) / gz, len(data) / zs


def real_files() -> list[tuple[Path, str]]:
    """Real uncompressed MR and CT images shipped with pydicom (and pydicom-data).

    Returns
    -------
    list of tuple
        ``(path, modality)``, sorted by file name.
    """
    import pydicom
    from pydicom.data import get_testdata_files

    found: list[tuple[Path, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some test files are deliberately odd
        for name in sorted(get_testdata_files(), key=lambda p: Path(p).name):
            try:
                ds = pydicom.dcmread(name, defer_size=1024)
            except Exception:
                continue
            meta = getattr(ds, "file_meta", None)
            syntax = str(getattr(meta, "TransferSyntaxUID", ""))
            modality = str(ds.get("Modality", ""))
            if modality in ("MR", "CT") and syntax in UNCOMPRESSED and "PixelData" in ds:
                found.append((Path(name), modality))
    return found


def _row(name: str, blobs: list[bytes], note: str) -> dict[str, Any]:
    per = [ratios(b) for b in blobs]
    stream = ratios(b"".join(blobs))
    return {
        "set": name,
        "files": len(blobs),
        "bytes": sum(len(b) for b in blobs),
        "gzip_min": min(g for g, _ in per),
        "gzip_max": max(g for g, _ in per),
        "gzip_stream": stream[0],
        "zstd_min": min(z for _, z in per),
        "zstd_max": max(z for _, z in per),
        "zstd_stream": stream[1],
        "note": note,
    }


def measure() -> dict[str, Any]:
    """Measure the real and the synthetic sets.

    Returns
    -------
    dict
        ``rows`` (one per set, see :func:`_row`), ``real_files`` (name, modality, bytes, gzip,
        zstd per file) and the package versions.
    """
    from xnatio.synth import PRESETS, write_session

    real = real_files()
    blobs = {path: path.read_bytes() for path, _ in real}
    rows = [
        _row("real MR + CT", list(blobs.values()), "pydicom + pydicom-data, uncompressed"),
        _row("real MR", [blobs[p] for p, m in real if m == "MR"], ""),
        _row("real CT", [blobs[p] for p, m in real if m == "CT"], ""),
    ]
    preset = PRESETS["small"]
    for content, modality in (("simple", "MR"), ("realistic", "MR"), ("realistic", "CT")):
        with tempfile.TemporaryDirectory(prefix="xio-compress-") as tmp:
            summary = write_session(
                Path(tmp),
                series=preset.series,
                instances=preset.instances,
                rows=preset.rows,
                columns=preset.columns,
                modality=modality,
                content=content,
            )
            data = [p.read_bytes() for p in summary.files]
        rows.append(_row(f"xio synth {content} {modality}", data, "small preset, seed 0"))
    files = []
    for path, modality in real:
        g, z = ratios(blobs[path])
        files.append(
            {
                "name": path.name,
                "modality": modality,
                "bytes": len(blobs[path]),
                "gzip": g,
                "zstd": z,
            }
        )
    versions = {}
    for pkg in ("pydicom", "pydicom-data", "zstandard", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    return {"rows": rows, "real_files": files, "versions": versions}


def markdown(result: dict[str, Any]) -> str:
    """The sets as a Markdown table.

    Parameters
    ----------
    result
        From :func:`measure` (or the stored JSON).

    Returns
    -------
    str
        The table.
    """
    lines = [
        "| set | files | MB | gzip -1 per file | gzip -1 stream | zstd -1 per file | "
        "zstd -1 stream |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['set']} | {r['files']} | {r['bytes'] / 1e6:.1f} | "
            f"{r['gzip_min']:.2f}-{r['gzip_max']:.2f}x | {r['gzip_stream']:.2f}x | "
            f"{r['zstd_min']:.2f}-{r['zstd_max']:.2f}x | {r['zstd_stream']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, store the JSON.

    Parameters
    ----------
    argv
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0, or 2 when zstandard is missing.
    """
    p = argparse.ArgumentParser(prog="python -m bench.compressibility")
    p.add_argument("--files", action="store_true", help="also list every real file")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    a = p.parse_args(argv)
    try:
        import zstandard  # noqa: F401
    except ImportError:
        print("zstandard is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    result = measure()
    print(markdown(result))
    if a.files:
        print()
        for f in result["real_files"]:
            print(
                f"{f['name']:40s} {f['modality']} {f['bytes']:>9,d} B  gzip {f['gzip']:.2f}x  "
                f"zstd {f['zstd']:.2f}x"
            )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nresults: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
