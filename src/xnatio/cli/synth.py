"""``xio synth OUT``: write a synthetic DICOM session."""

from __future__ import annotations

import time
from pathlib import Path

import click

from xnatio.errors import InputError
from xnatio.synth import CONTENTS, PRESETS, SYNTAXES, write_session

__all__ = ["command"]


@click.command(name="synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--size",
    type=click.Choice(sorted(PRESETS)),
    default="small",
    show_default=True,
    help="small: 300 files (~40 MB); medium: 3,000 (~400 MB); large: 15,000 (~2.5 GB).",
)
@click.option("--series", type=click.IntRange(min=1), help="Series count (overrides --size).")
@click.option(
    "--instances", type=click.IntRange(min=1), help="Images per series (overrides --size)."
)
@click.option("--rows", type=click.IntRange(1, 4096), help="Image rows (overrides --size).")
@click.option("--columns", type=click.IntRange(1, 4096), help="Image columns (overrides --size).")
@click.option("--modality", type=click.Choice(["MR", "CT"]), default="MR", show_default=True,
              help="Modality of the series (XNAT makes an MR or a CT session).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option(
    "--syntax",
    type=click.Choice([*SYNTAXES, "mixed"]),
    default="explicit",
    show_default=True,
    help="Transfer syntax; mixed alternates explicit and implicit VR little endian.",
)
@click.option(
    "--content",
    type=click.Choice(CONTENTS),
    default="simple",
    show_default=True,
    help="Pixel data: simple (one random block per series, fastest) or realistic (a head "
    "phantom with noise that changes every slice and compresses like real MR/CT; needs numpy).",
)
@click.option("--sidecars", is_flag=True, help="Add non-DICOM files (.json, .txt, DICOMDIR, ...).")
@click.option("--broken", is_flag=True, help="Add a truncated DICOM and a non-DICOM .dcm file.")
@click.option("--patient-id", default="SYNTH001", show_default=True,
              help="Patient ID (0010,0020) of every file.")  # fmt: skip
def command(
    out: Path,
    size: str,
    series: int | None,
    instances: int | None,
    rows: int | None,
    columns: int | None,
    modality: str,
    seed: int,
    syntax: str,
    content: str,
    sidecars: bool,
    broken: bool,
    patient_id: str,
) -> None:
    """Write a synthetic DICOM session (one study) into OUT."""
    preset = PRESETS[size]
    started = time.perf_counter()
    try:
        summary = write_session(
            out,
            series=series or preset.series,
            instances=instances or preset.instances,
            modality=modality,
            rows=rows or preset.rows,
            columns=columns or preset.columns,
            transfer_syntax=syntax,
            seed=seed,
            content=content,
            sidecars=sidecars,
            broken=broken,
            patient_id=patient_id,
        )
    except OSError as exc:  # a folder that cannot be made or written, a full disk
        raise InputError(f"cannot write the session to {out}: {exc.strerror or exc}") from None
    elapsed = time.perf_counter() - started
    extra = f" +{len(summary.extra_files)} extra files" if summary.extra_files else ""
    click.echo(
        f"synth out={summary.out} files={summary.file_count} series={summary.series} "
        f"bytes={summary.total_bytes} ({summary.total_bytes / 1e6:.1f} MB){extra} "
        f"syntax={syntax} content={content} study={summary.study_instance_uid} "
        f"seconds={elapsed:.1f}"
    )
