"""Where a DICOM file's data set starts, worked out with pydicom, not with xnatio's reader.

Tests that compare data set bytes use this, so that an error in :mod:`xnatio.dicom` cannot shift
both sides of a comparison alike.
"""

from __future__ import annotations

import io

import pydicom


def dataset_offset(raw: bytes) -> int:
    """Offset of the data set: after the preamble, ``DICM`` and the file meta group.

    The meta group's length is (0002,0000) as pydicom reads it, plus the 12 bytes of that
    element itself (explicit VR little endian, PS3.10 section 7.1). A file without a preamble
    must also be without a meta group here.
    """
    if raw[128:132] != b"DICM":
        assert raw[:2] != b"\x02\x00", "a meta group without a preamble"
        return 0
    meta = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True, force=True).file_meta
    return 132 + 12 + int(meta.FileMetaInformationGroupLength)
