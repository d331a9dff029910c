"""Synthetic DICOM sessions for tests, benchmarks and demos.

:func:`write_session` writes ``series x instances`` MR or CT images with realistic headers. It is
fast because pydicom encodes each series once: the header is rendered with fixed-width values for
the few elements that change per image (SOP Instance UID, Instance Number, Image Position, Slice
Location), and each file is then that header with those bytes patched, followed by pixel data.
The same seed gives byte-identical files.

Pixel data comes in two kinds (``content``):

- ``simple``: one block of uniformly random 12-bit values per series, repeated in every image of
  the series. Cheapest to write, needs no numpy, but hardly compresses (gzip -1: 1.16x) and
  repeats itself, unlike real images.
- ``realistic``: a head phantom per series (:mod:`xnatio.synth_phantom`, needs numpy) with
  anatomy that changes from slice to slice, air around it, 12-bit values and Rician noise; no
  two images are alike, and gzip and zstd compress it about as much as real uncompressed MR/CT.

UIDs live under pydicom's registered root (``1.2.826.0.1.3680043.8.498.``) with a component derived
from the seed, so sessions written with different seeds never collide.
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, PYDICOM_ROOT_UID, UID

from xnatio import __version__
from xnatio.errors import InputError

if TYPE_CHECKING:
    from xnatio.synth_phantom import HeadPhantom

__all__ = [
    "CONTENTS",
    "PRESETS",
    "SYNTAXES",
    "Content",
    "Preset",
    "Syntax",
    "SynthSummary",
    "write_session",
]

Syntax = Literal["explicit", "implicit", "big-endian", "deflated", "rle", "mixed"]
Content = Literal["simple", "realistic"]

#: The kinds of pixel data :func:`write_session` writes (see the module docstring).
CONTENTS: tuple[str, ...] = ("simple", "realistic")

#: Transfer syntax UID for each name accepted by :func:`write_session` (``mixed`` alternates
#: explicit and implicit VR little endian from one image to the next).
SYNTAXES: dict[str, str] = {
    "explicit": "1.2.840.10008.1.2.1",
    "implicit": "1.2.840.10008.1.2",
    "big-endian": "1.2.840.10008.1.2.2",
    "deflated": "1.2.840.10008.1.2.1.99",
    "rle": "1.2.840.10008.1.2.5",
}
_MIXED = ("explicit", "implicit")

SOP_CLASSES = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}


@dataclass(frozen=True)
class Preset:
    """A named session size for ``xio synth --size``."""

    series: int
    instances: int
    rows: int
    columns: int


#: small: 300 files (~40 MB); medium: 3,000 files (~400 MB); large: 15,000 files (~2.5 GB).
PRESETS: dict[str, Preset] = {
    "small": Preset(series=3, instances=100, rows=256, columns=256),
    "medium": Preset(series=10, instances=300, rows=256, columns=256),
    "large": Preset(series=30, instances=500, rows=320, columns=256),
}


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`write_session` wrote.

    Attributes
    ----------
    out
        The output folder.
    files
        Valid DICOM files, in series then instance order.
    extra_files
        Sidecars and broken files (when asked for), which an upload must skip.
    series, instances
        Series count and images per series.
    total_bytes
        Size of :attr:`files` in bytes.
    study_instance_uid
        The study UID shared by every image.
    transfer_syntax
        The ``transfer_syntax`` argument.
    content
        The ``content`` argument.
    """

    out: Path
    files: tuple[Path, ...]
    extra_files: tuple[Path, ...]
    series: int
    instances: int
    total_bytes: int
    study_instance_uid: str
    transfer_syntax: str
    content: str = "simple"

    @property
    def file_count(self) -> int:
        """Number of valid DICOM files."""
        return len(self.files)


_FIRST_INSTANCE = 100000  # instance UID components are fixed-width: 100000 + index
_NUMBER_WIDTH = 6
_POS_WIDTH = 10
_SLICE = 1.5  # mm between slices


def _uid_base(seed: int) -> str:
    digest = hashlib.sha256(f"xnatio-synth-{seed}".encode()).digest()
    # 10 digits, never a leading zero (PS3.5 9.1)
    return f"{PYDICOM_ROOT_UID}{1_000_000_000 + int.from_bytes(digest[:8], 'big') % 9_000_000_000}"


def _pos(z: float) -> str:
    return f"{z:{_POS_WIDTH}.3f}"


def _pixels(rng: random.Random, rows: int, columns: int) -> bytes:
    """Random 12-bit values stored in 16 bits, little endian."""
    n = rows * columns
    out = bytearray(2 * n)
    out[0::2] = rng.randbytes(n)
    out[1::2] = rng.randbytes(n).translate(bytes(b & 0x0F for b in range(256)))
    return bytes(out)


def _rle(pixels: bytes, rows: int, columns: int) -> bytes:
    # pydicom's own RLE Lossless encoder works on raw bytes, without numpy.
    from pydicom.pixels.encoders.base import RLELosslessEncoder

    return RLELosslessEncoder.encode(
        pixels,
        encoding_plugin="pydicom",
        rows=rows,
        columns=columns,
        samples_per_pixel=1,
        bits_allocated=16,
        bits_stored=12,
        pixel_representation=0,
        photometric_interpretation="MONOCHROME2",
        number_of_frames=1,
    )


def _pixel_element(pixels: bytes, syntax: str, rle_frame: bytes | None) -> bytes:
    """Encoded Pixel Data (7FE0,0010) element."""
    if syntax == "implicit":
        return struct.pack("<HHI", 0x7FE0, 0x0010, len(pixels)) + pixels
    if syntax == "big-endian":
        swapped = bytearray(len(pixels))
        swapped[0::2] = pixels[1::2]
        swapped[1::2] = pixels[0::2]
        return struct.pack(">HH2sHI", 0x7FE0, 0x0010, b"OW", 0, len(pixels)) + bytes(swapped)
    if syntax == "rle":
        assert rle_frame is not None
        frame = rle_frame + b"\x00" * (len(rle_frame) % 2)
        return (
            struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
            + struct.pack("<HHI", 0xFFFE, 0xE000, 0)  # empty Basic Offset Table
            + struct.pack("<HHI", 0xFFFE, 0xE000, len(frame))
            + frame
            + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        )
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, len(pixels)) + pixels


@dataclass
class _Template:
    """One series' encoded header with the byte offsets of the per-image values."""

    preamble_meta: bytearray
    meta_uid_at: list[int]
    dataset: bytearray
    uid_at: list[int]
    number_at: list[int]
    pos_at: list[int]
    pixel_element: bytes
    deflate: bool


def _find_all(data: bytes | bytearray, needle: bytes) -> list[int]:
    found: list[int] = []
    i = data.find(needle)
    while i >= 0:
        found.append(i)
        i = data.find(needle, i + 1)
    return found


def _file_meta(sop_class: str, uid0: str, syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(uid0)
    meta.TransferSyntaxUID = UID(SYNTAXES[syntax])
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"XNATIO_{__version__}"[:16]

    return meta


def _header(
    *,
    base: str,
    k: int,
    modality: str,
    rows: int,
    columns: int,
    sop_class: str,
    uid0: str,
    number_sentinel: str,
    pos_sentinel: str,
    patient_id: str,
    patient_name: str,
    study_description: str,
    study_id: str,
) -> Dataset:
    """The data set of series ``k``'s first image, with sentinels where per-image values go."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid0
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240115"
    ds.StudyTime = "093000"
    ds.SeriesTime = ds.ContentTime = f"{9 + k // 60:02d}{k % 60:02d}00"
    ds.AccessionNumber = f"ACC{base[-6:]}"
    ds.Modality = modality
    ds.Manufacturer = "xnatio synthetic"
    ds.InstitutionName = "Synthetic Hospital"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_description
    ds.SeriesDescription = f"{'T1w' if modality == 'MR' else 'Axial'} series {k}"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "O"
    ds.SliceThickness = str(_SLICE)
    if modality == "MR":
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime = "2300"
        ds.EchoTime = "2.98"
        ds.MagneticFieldStrength = "3"
    else:
        ds.KVP = "120"
    # A short sequence, so readers meet at least one on their way to the identifiers.
    code = Dataset()
    code.CodeValue = "T-A0100"
    code.CodingSchemeDesignator = "SRT"
    code.CodeMeaning = "Brain"
    ds.AnatomicRegionSequence = DicomSequence([code])
    ds.StudyInstanceUID = f"{base}.1"
    ds.SeriesInstanceUID = f"{base}.2.{k}"
    ds.StudyID = study_id
    ds.SeriesNumber = str(k)
    ds.InstanceNumber = number_sentinel
    ds.ImagePositionPatient = ["-120.0", "-120.0", pos_sentinel]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = f"{base}.4"
    ds.SliceLocation = pos_sentinel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = ["0.9375", "0.9375"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if modality == "CT":
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
    return ds


def _template(
    *,
    base: str,
    k: int,
    modality: str,
    rows: int,
    columns: int,
    syntax: str,
    pixel_element: bytes,
    patient_id: str,
    patient_name: str,
    study_description: str,
    study_id: str,
) -> _Template:
    sop_class = SOP_CLASSES[modality]
    uid0 = f"{base}.3.{k}.{_FIRST_INSTANCE}"
    number_sentinel = "+" + "9" * (_NUMBER_WIDTH - 1)  # "+" never occurs in a UID
    pos_sentinel = "-99999.999"  # _POS_WIDTH characters, never a real position here
    assert len(pos_sentinel) == _POS_WIDTH

    meta = _file_meta(sop_class, uid0, syntax)
    ds = _header(
        base=base,
        k=k,
        modality=modality,
        rows=rows,
        columns=columns,
        sop_class=sop_class,
        uid0=uid0,
        number_sentinel=number_sentinel,
        pos_sentinel=pos_sentinel,
        patient_id=patient_id,
        patient_name=patient_name,
        study_description=study_description,
        study_id=study_id,
    )

    meta_io = DicomBytesIO()
    meta_io.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(meta_io, meta, enforce_standard=True)
    ds_io = DicomBytesIO()
    ds_io.is_implicit_VR = syntax == "implicit"
    ds_io.is_little_endian = syntax != "big-endian"
    write_dataset(ds_io, ds)
    preamble_meta = bytearray(meta_io.getvalue())
    dataset = bytearray(ds_io.getvalue())

    uid_tail = len(uid0) - len(str(_FIRST_INSTANCE))
    meta_uid_at = [i + uid_tail for i in _find_all(preamble_meta, uid0.encode())]
    uid_at = [i + uid_tail for i in _find_all(dataset, uid0.encode())]
    number_at = _find_all(dataset, number_sentinel.encode())
    pos_at = _find_all(dataset, pos_sentinel.encode())
    if len(meta_uid_at) != 1 or len(uid_at) != 1 or len(number_at) != 1 or len(pos_at) != 2:
        raise AssertionError("synthetic template: per-image values not found exactly once")
    return _Template(
        preamble_meta=preamble_meta,
        meta_uid_at=meta_uid_at,
        dataset=dataset,
        uid_at=uid_at,
        number_at=number_at,
        pos_at=pos_at,
        pixel_element=pixel_element,
        deflate=syntax == "deflated",
    )


def _render(t: _Template, i: int, pixel_element: bytes | None = None) -> tuple[bytes, bytes]:
    """Header bytes and tail bytes (pixel data) of image ``i`` (0-based).

    ``pixel_element`` replaces the series' own (realistic content has one per image).
    """
    pixel = t.pixel_element if pixel_element is None else pixel_element
    uid_part = str(_FIRST_INSTANCE + i).encode()
    number = f"{i + 1:<{_NUMBER_WIDTH}}".encode()
    pos = _pos(i * _SLICE).encode()
    head = bytearray(t.preamble_meta)
    for at in t.meta_uid_at:
        head[at : at + len(uid_part)] = uid_part
    ds = bytearray(t.dataset)
    for at in t.uid_at:
        ds[at : at + len(uid_part)] = uid_part
    for at in t.number_at:
        ds[at : at + _NUMBER_WIDTH] = number
    for at in t.pos_at:
        ds[at : at + _POS_WIDTH] = pos
    if t.deflate:
        c = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = c.compress(bytes(ds)) + c.compress(pixel) + c.flush()
        return bytes(head), body
    return bytes(head + ds), pixel


def _phantom_class(content: str) -> type[HeadPhantom] | None:
    """The phantom for realistic content (numpy is imported only then), None for simple."""
    if content == "simple":
        return None
    if content != "realistic":
        raise InputError(f"content {content!r} is not supported; use {' or '.join(CONTENTS)}")
    try:
        from xnatio.synth_phantom import HeadPhantom
    except ImportError as exc:
        raise InputError(
            f"realistic content needs numpy ({exc}); install it or use content 'simple'"
        ) from None
    return HeadPhantom


def _check_label(kind: str, value: str, limit: int) -> None:
    if len(value) > limit or "\\" in value or any(ord(c) < 32 or ord(c) > 126 for c in value):
        raise InputError(
            f"{kind} {value!r} must be printable ASCII without '\\', at most {limit} characters"
        )


def _write_sidecars(out: Path, first_series: Path) -> list[Path]:
    paths = {
        out / "session.json": b'{"source": "xnatio synth", "note": "not DICOM"}\n',
        out / "README.txt": b"Synthetic DICOM session written by xnatio. Not for clinical use.\n",
        out / ".DS_Store": b"\x00\x00\x00\x01Bud1" + b"\x00" * 26,
        out / "Thumbs.db": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 24,
        first_series / "protocol.json": b'{"sequence": "T1w"}\n',
    }
    for path, data in paths.items():
        path.write_bytes(data)
    # A minimal DICOMDIR (Media Storage Directory Storage), which uploads must leave out.
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.1.3.10")
    meta.MediaStorageSOPInstanceUID = UID(f"{PYDICOM_ROOT_UID}1.99")
    meta.TransferSyntaxUID = UID(SYNTAXES["explicit"])
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fileset = Dataset()
    fileset.FileSetID = "SYNTH"
    fileset.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    fileset.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    fileset.FileSetConsistencyFlag = 0
    fileset.DirectoryRecordSequence = DicomSequence([])
    head = DicomBytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_implicit_VR = False
    body.is_little_endian = True
    write_dataset(body, fileset)
    dicomdir = out / "DICOMDIR"
    dicomdir.write_bytes(head.getvalue() + body.getvalue())
    return [*paths, dicomdir]


def _write_broken(out: Path, sample: bytes, study_uid: str) -> list[Path]:
    folder = out / "broken"
    folder.mkdir(exist_ok=True)
    # Cut inside the Study Instance UID value: the header cannot be read to the end.
    cut = sample.find(study_uid.encode()) + len(study_uid) // 2
    truncated = folder / "truncated.dcm"
    truncated.write_bytes(sample[:cut])
    fake = folder / "not_dicom.dcm"
    fake.write_bytes(b"This file has a .dcm name but is plain text, not DICOM.\n" * 4)
    return [truncated, fake]


def _check_arguments(
    *,
    series: int,
    instances: int,
    modality: str,
    transfer_syntax: str,
    content: str,
    rows: int,
    columns: int,
    labels: tuple[str, str, str],
) -> type[HeadPhantom] | None:
    """Refuse arguments :func:`write_session` cannot honour; return the phantom class to use."""
    if series < 1 or instances < 1:
        raise InputError(f"--series and --instances must be at least 1 (got {series}, {instances})")
    if instances > 899_999:
        raise InputError("at most 899,999 instances per series; use more series")
    if modality not in SOP_CLASSES:
        raise InputError(f"modality {modality!r} is not supported; use MR or CT")
    if transfer_syntax not in SYNTAXES and transfer_syntax != "mixed":
        raise InputError(
            f"transfer syntax {transfer_syntax!r} is not supported; use one of "
            f"{', '.join([*SYNTAXES, 'mixed'])}"
        )
    phantom_class = _phantom_class(content)
    if not (1 <= rows <= 4096 and 1 <= columns <= 4096):
        raise InputError(f"rows and columns must be between 1 and 4096 (got {rows}x{columns})")
    for what, value in zip(
        ("patient ID", "patient name", "study description"), labels, strict=True
    ):
        _check_label(what, value, 64)
    return phantom_class


def write_session(
    out: Path,
    *,
    series: int,
    instances: int,
    modality: str = "MR",
    rows: int = 256,
    columns: int = 256,
    transfer_syntax: str = "explicit",
    seed: int = 0,
    content: str = "simple",
    sidecars: bool = False,
    broken: bool = False,
    patient_id: str = "SYNTH001",
    patient_name: str = "Synthetic^Patient",
    study_description: str = "Synthetic study",
) -> SynthSummary:
    """Write a synthetic DICOM session (one study) into ``out``.

    Parameters
    ----------
    out
        Output folder, created if needed. Files go to ``series_NNN/IMNNNNN.dcm``.
    series, instances
        Number of series, and images per series (each at least 1).
    modality
        ``"MR"`` (MR Image Storage) or ``"CT"`` (CT Image Storage).
    rows, columns
        Image size; each image is ``2 * rows * columns`` bytes of 12-bit pixel data.
    transfer_syntax
        ``explicit`` or ``implicit`` VR little endian, ``big-endian`` (explicit VR, retired),
        ``deflated``, ``rle`` (RLE Lossless, encoded by pydicom), or ``mixed`` (explicit and
        implicit alternating image by image).
    seed
        Same seed, same bytes; different seeds give different UIDs and pixels.
    content
        ``simple`` (one random pixel block per series) or ``realistic`` (a head phantom with
        noise, different in every image; needs numpy). See the module docstring.
    sidecars
        Also write non-DICOM files an upload must skip (``.json``, ``.txt``, ``.DS_Store``,
        ``Thumbs.db``, a ``DICOMDIR``).
    broken
        Also write ``broken/truncated.dcm`` (header cut short) and ``broken/not_dicom.dcm``.
    patient_id, patient_name, study_description
        Header values (printable ASCII).

    Returns
    -------
    SynthSummary
        The files written, their total size and the study UID.

    Raises
    ------
    InputError
        For counts below 1, an unknown modality, syntax or content, unusable labels, or
        realistic content without numpy.
    """
    phantom_class = _check_arguments(
        series=series,
        instances=instances,
        modality=modality,
        transfer_syntax=transfer_syntax,
        content=content,
        rows=rows,
        columns=columns,
        labels=(patient_id, patient_name, study_description),
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = _uid_base(seed)
    written: list[Path] = []
    total = 0
    sample = b""
    for k in range(1, series + 1):
        syntaxes = _MIXED if transfer_syntax == "mixed" else (transfer_syntax,)
        phantom = (
            phantom_class([seed, k], rows, columns, instances, modality) if phantom_class else None
        )
        if phantom is None:
            pixels = _pixels(random.Random(f"{seed}-{k}"), rows, columns)
            rle_frame = _rle(pixels, rows, columns) if "rle" in syntaxes else None
        templates = [
            _template(
                base=base,
                k=k,
                modality=modality,
                rows=rows,
                columns=columns,
                syntax=s,
                # realistic content renders one per image instead
                pixel_element=b"" if phantom else _pixel_element(pixels, s, rle_frame),
                patient_id=patient_id,
                patient_name=patient_name,
                study_description=study_description,
                study_id=str(1 + seed % 9999),
            )
            for s in syntaxes
        ]
        folder = out / f"series_{k:03d}"
        folder.mkdir(exist_ok=True)
        for i in range(instances):
            element = None
            if phantom is not None:
                own = phantom.pixels(i)
                syntax = syntaxes[i % len(syntaxes)]
                frame = _rle(own, rows, columns) if syntax == "rle" else None
                element = _pixel_element(own, syntax, frame)
            head, tail = _render(templates[i % len(templates)], i, element)
            path = folder / f"IM{i + 1:05d}.dcm"
            with open(path, "wb") as fh:
                fh.write(head)
                fh.write(tail)
            total += len(head) + len(tail)
            written.append(path)
            if not sample:
                sample = head + tail[:64]
    study_uid = f"{base}.1"
    extra: list[Path] = []
    if sidecars:
        extra += _write_sidecars(out, out / "series_001")
    if broken:
        extra += _write_broken(out, sample, study_uid)
    return SynthSummary(
        out=out,
        files=tuple(written),
        extra_files=tuple(extra),
        series=series,
        instances=instances,
        total_bytes=total,
        study_instance_uid=study_uid,
        transfer_syntax=transfer_syntax,
        content=content,
    )
