"""Inventory of a DICOM source: which files to send, and what their headers say.

A source is a folder (searched recursively) or a ``.zip``, ``.tar`` or ``.tar.gz``/``.tgz`` file
(:mod:`xnatio.inventory.sources`; tar and zip files in :mod:`xnatio.inventory.tar` and
:mod:`xnatio.inventory.zipped`, loaded only for them). :func:`build_inventory` reads the header
of every candidate file (:mod:`xnatio.inventory.scan`) and returns the DICOM instances sorted for
sending, with the files it left out and why (:mod:`xnatio.inventory.model`).
"""

from xnatio.inventory.model import (
    UNREADABLE,
    DicomFile,
    Inventory,
    ScanProgress,
    SkippedFile,
    Source,
    describe_skipped,
)
from xnatio.inventory.scan import DICOMDIR_SOP_CLASS, build_inventory, read_header
from xnatio.inventory.sources import (
    MAX_EXTRACT_BYTES,
    MAX_RATIO,
    DamagedMemberError,
    FolderSource,
    open_source,
)

__all__ = [
    "DICOMDIR_SOP_CLASS",
    "MAX_EXTRACT_BYTES",
    "MAX_RATIO",
    "UNREADABLE",
    "DamagedMemberError",
    "DicomFile",
    "FolderSource",
    "Inventory",
    "ScanProgress",
    "SkippedFile",
    "Source",
    "build_inventory",
    "describe_skipped",
    "open_source",
    "read_header",
]
