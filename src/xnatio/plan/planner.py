"""The plan of one upload: the checked inventory, its batches, and counts per study and scan."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from xnatio.errors import InputError
from xnatio.inventory import Inventory, build_inventory
from xnatio.plan.batches import Batch, plan_batches
from xnatio.plan.checks import check_inventory
from xnatio.progress import ProgressCallback, scan_reporter
from xnatio.xnat.naming import scan_id_for, validate_labels

__all__ = ["UploadPlan", "plan_inventory", "plan_upload"]


@dataclass(frozen=True)
class UploadPlan:
    """What an upload would send (``--dry-run``).

    Attributes
    ----------
    inventory
        The checked inventory; its source stays open until the upload (or the caller) closes it.
    batches
        The byte-balanced batches (REST requests; C-STORE spreads the same files over its
        associations).
    studies, series
        Files per StudyInstanceUID and per scan folder.
    """

    inventory: Inventory
    batches: list[Batch]
    studies: dict[str, int]
    series: dict[str, int]

    def with_batches(self, num_batches: int) -> UploadPlan:
        """The same plan cut into ``num_batches`` batches (never more than there are files).

        Returns itself when it has that many batches already.
        """
        files = self.inventory.files
        if not files or len(self.batches) == min(num_batches, len(files)):
            return self
        return dataclasses.replace(self, batches=plan_batches(files, num_batches))


def plan_upload(
    source_dir: str | Path,
    *,
    project: str,
    subject: str,
    session: str,
    num_batches: int = 42,
    allow_multiple_studies: bool = False,
    progress_callback: ProgressCallback | None = None,
    skip_unreadable: bool = False,
) -> UploadPlan:
    """Scan ``source_dir`` and cut it into batches, sending nothing.

    Parameters
    ----------
    source_dir
        A folder (searched recursively) or a ``.zip``, ``.tar``, ``.tar.gz``/``.tgz`` file.
    project, subject, session
        Target labels, checked against XNAT's ``[A-Za-z0-9_-]`` rule.
    num_batches
        How many byte-balanced batches to cut (never more than there are files).
    allow_multiple_studies
        Accept a source holding several StudyInstanceUIDs.
    progress_callback
        Receives ``scanning`` events while headers are read.
    skip_unreadable
        Leave out files and folders that cannot be read (listed as skipped) instead of
        refusing the source.

    Returns
    -------
    UploadPlan
        The inventory (its source stays open: close it, or hand the plan to an upload function,
        which does), the batches, and file counts per study and per scan.

    Raises
    ------
    InputError
        Bad labels, no DICOM files, several studies (unless allowed), conflicting duplicates.
    """
    validate_labels(project, subject, session)
    if num_batches < 1:
        raise InputError("--num-batches must be at least 1")

    inventory = build_inventory(
        source_dir, progress=scan_reporter(progress_callback), skip_unreadable=skip_unreadable
    )
    return plan_inventory(
        inventory, num_batches=num_batches, allow_multiple_studies=allow_multiple_studies
    )


def plan_inventory(
    inventory: Inventory, *, num_batches: int = 42, allow_multiple_studies: bool = False
) -> UploadPlan:
    """:func:`plan_upload` for an inventory already built (its source is closed on failure).

    Raises
    ------
    InputError
        Several studies (unless allowed), conflicting duplicates.
    """
    try:
        inventory = check_inventory(inventory, allow_multiple_studies=allow_multiple_studies)
        batches = plan_batches(inventory.files, num_batches)
    except BaseException:
        inventory.source.close()
        raise
    studies: dict[str, int] = {}
    series: dict[str, int] = {}
    for f in inventory.files:
        studies[f.study_instance_uid] = studies.get(f.study_instance_uid, 0) + 1
        series[scan_id_for(f)] = series.get(scan_id_for(f), 0) + 1
    return UploadPlan(inventory=inventory, batches=batches, studies=studies, series=series)
