"""The flags of the earlier public xnatio (0.2), accepted so that its users' commands keep working.

Each is mapped onto its xio counterpart; where the meaning changed, one ``xio: note:`` line on
stderr says so (not with ``-q``). docs/migrating.md lists them all with the reasons.

=======================  ==========================================================================
xnatio 0.2               xio
=======================  ==========================================================================
``--batches N``          ``--num-batches N`` with ``--transport rest`` (ignored for C-STORE, as in
                         0.2)
``--dicom-batches N``    ``--num-batches N`` with ``--transport dicom-store`` (ignored for REST)
``--no-direct-archive``  the default now (note)
``--ignore-unparsable``  what xio always does: files that are not DICOM are never sent (note)
``--dicom-cleanup``      nothing to clean: xio keeps no temporary workspace (note)
``--zip-name NAME``      (upload-resource) no effect: XNAT unpacks the zip and keeps no archive
                         (note)
``--env PATH``           reads that file, as ``--env NAME`` reads ``.env.NAME``
=======================  ==========================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from xnatio.cli.options import with_options
from xnatio.errors import InputError

__all__ = ["note", "resource_options", "upload_options"]

F = TypeVar("F", bound=Callable[..., Any])

_SEE = "see docs/migrating.md"


def note(text: str, *, quiet: bool) -> None:
    """One ``xio: note: ...`` line on stderr, unless ``quiet``."""
    if not quiet:
        click.echo(f"xio: note: {text}", err=True)


_UPLOAD_OPTIONS = (
    click.option(
        "--batches",
        "xnatio02_batches",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="xnatio 0.2's name for --num-batches with --transport rest.",
    ),
    click.option(
        "--dicom-batches",
        "xnatio02_dicom_batches",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="xnatio 0.2's name for --num-batches with --transport dicom-store.",
    ),
    click.option(
        "--no-direct-archive",
        "xnatio02_no_direct_archive",
        is_flag=True,
        help="xnatio 0.2's flag; now the default (Direct-Archive is off unless --direct-archive).",
    ),
    click.option(
        "--ignore-unparsable",
        "xnatio02_ignore_unparsable",
        is_flag=True,
        help="xnatio 0.2's flag; xio never sends files that are not DICOM (--dry-run lists them).",
    ),
    click.option(
        "--dicom-cleanup",
        "xnatio02_dicom_cleanup",
        is_flag=True,
        help="xnatio 0.2's flag; xio keeps no temporary workspace, so there is nothing to clean.",
    ),
)


def _num_batches(kwargs: dict[str, Any], batches: int | None, dicom_batches: int | None) -> None:
    """Put the 0.2 batch count that applies to the chosen transport into ``num_batches``."""
    rest = kwargs.get("transport", "rest") != "dicom-store"
    chosen, flag = (batches, "--batches") if rest else (dicom_batches, "--dicom-batches")
    if chosen is None:
        return
    given = kwargs.get("num_batches")
    if given is not None and given != chosen:
        raise InputError(f"--num-batches {given} and {flag} {chosen} disagree; give one of them")
    kwargs["num_batches"] = chosen


def upload_options(func: F) -> F:
    """Add xnatio 0.2's upload-dicom flags to ``xio upload-dicom`` and map them onto xio's.

    The command must have ``transport``, ``num_batches``, ``direct_archive`` and ``quiet``
    parameters; it never sees the 0.2 flags themselves.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        batches = kwargs.pop("xnatio02_batches")
        dicom_batches = kwargs.pop("xnatio02_dicom_batches")
        no_da = kwargs.pop("xnatio02_no_direct_archive")
        ignore_unparsable = kwargs.pop("xnatio02_ignore_unparsable")
        cleanup = kwargs.pop("xnatio02_dicom_cleanup")
        quiet = bool(kwargs.get("quiet"))
        _num_batches(kwargs, batches, dicom_batches)
        if no_da and kwargs.get("direct_archive"):
            raise InputError("--direct-archive and --no-direct-archive cannot both be given")
        if no_da:
            note(
                "--no-direct-archive is the default now: Direct-Archive is off unless "
                f"--direct-archive is given; {_SEE}",
                quiet=quiet,
            )
        if ignore_unparsable:
            note(
                "--ignore-unparsable is what xio always does: files that are not DICOM are "
                f"skipped and never sent (--dry-run lists them); {_SEE}",
                quiet=quiet,
            )
        if cleanup:
            note(
                "--dicom-cleanup has no effect: xio keeps no temporary workspace (0.2 kept its "
                f"per-batch logs there); {_SEE}",
                quiet=quiet,
            )
        return func(*args, **kwargs)

    return cast(F, with_options(wrapper, _UPLOAD_OPTIONS))


def resource_options(func: F) -> F:
    """Add xnatio 0.2's ``--zip-name`` to ``xio upload-resource`` (accepted, with a note)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        zip_name = kwargs.pop("xnatio02_zip_name")
        if zip_name is not None:
            note(
                f"--zip-name {zip_name} has no effect: XNAT unpacks the uploaded zip into the "
                f"resource and keeps no archive of it; {_SEE}",
                quiet=bool(kwargs.get("quiet")),
            )
        return func(*args, **kwargs)

    option = click.option(
        "--zip-name",
        "xnatio02_zip_name",
        metavar="NAME",
        default=None,
        help="xnatio 0.2's option; no effect (XNAT unpacks the zip and keeps no archive).",
    )
    return cast(F, option(wrapper))
