"""Transfer syntaxes: the UIDs xnatio names, and how each one encodes a data set.

:func:`classify` is the one place that says how a transfer syntax lays out the data set that
follows the file meta group (DICOM PS3.5 section 10 and annex A):

- **Implicit VR Little Endian** (``1.2.840.10008.1.2``, A.1) is the only implicit VR syntax.
- **Explicit VR Big Endian** (``1.2.840.10008.1.2.2``, A.3, retired) is the only big endian one.
- Every other standard syntax (``1.2.840.10008.1.2.*``) is explicit VR little endian.
- **Deflated** means that the whole data set after the meta group is one raw deflate stream
  (RFC 1951): Deflated Explicit VR Little Endian (``1.2.840.10008.1.2.1.99``, A.5), JPIP
  Referenced Deflate (``1.2.840.10008.1.2.4.95``, A.7) and JPIP HTJ2K Referenced Deflate
  (``1.2.840.10008.1.2.4.205``, A.12). Deflated Image Frame Compression
  (``1.2.840.10008.1.2.8.1``, A.4.13) is *not* one of them: it deflates each frame of the pixel
  data and leaves the data set itself in plain explicit VR little endian.
- **Encapsulated** means that Pixel Data holds fragments (PS3.5 A.4): the JPEG, JPEG-LS,
  JPEG 2000, HTJ2K, JPEG XL, MPEG and HEVC families (``1.2.840.10008.1.2.4.*`` except the four
  JPIP syntaxes, which reference their pixel data instead), RLE Lossless (``1.2.840.10008.1.2.5``),
  Encapsulated Uncompressed (``1.2.840.10008.1.2.1.98``) and Deflated Image Frame Compression.

A UID outside ``1.2.840.10008.1.2[.*]`` (a private syntax, or none at all) gets ``None``: the
reader then recognises the encoding by the bytes (see :mod:`xnatio.dicom.reader`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN",
    "DEFLATED_IMAGE_FRAME_COMPRESSION",
    "ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN",
    "EXPLICIT_VR_BIG_ENDIAN",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "IMPLICIT_VR_LITTLE_ENDIAN",
    "JPIP_HTJ2K_REFERENCED_DEFLATE",
    "JPIP_REFERENCED_DEFLATE",
    "RLE_LOSSLESS",
    "Encoding",
    "classify",
    "native_uid",
]

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.98"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
JPIP_REFERENCED = "1.2.840.10008.1.2.4.94"
JPIP_REFERENCED_DEFLATE = "1.2.840.10008.1.2.4.95"
JPIP_HTJ2K_REFERENCED = "1.2.840.10008.1.2.4.204"
JPIP_HTJ2K_REFERENCED_DEFLATE = "1.2.840.10008.1.2.4.205"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
DEFLATED_IMAGE_FRAME_COMPRESSION = "1.2.840.10008.1.2.8.1"

_STANDARD_ROOT = IMPLICIT_VR_LITTLE_ENDIAN + "."
_DEFLATED = frozenset(
    {DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, JPIP_REFERENCED_DEFLATE, JPIP_HTJ2K_REFERENCED_DEFLATE}
)
_JPIP = frozenset(
    {
        JPIP_REFERENCED,
        JPIP_REFERENCED_DEFLATE,
        JPIP_HTJ2K_REFERENCED,
        JPIP_HTJ2K_REFERENCED_DEFLATE,
    }
)
_ENCAPSULATED = frozenset(
    {
        ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN,
        RLE_LOSSLESS,
        DEFLATED_IMAGE_FRAME_COMPRESSION,
    }
)


@dataclass(frozen=True, slots=True)
class Encoding:
    """How a data set is encoded.

    Attributes
    ----------
    explicit_vr
        Each element carries its VR (PS3.5 section 7.1.2); otherwise implicit VR (7.1.3).
    little_endian
        Byte order of tags, lengths and binary values.
    deflated
        The data set is one raw deflate stream, to be inflated before reading.
    encapsulated
        Pixel Data is in the encapsulated (fragment) format.
    """

    explicit_vr: bool
    little_endian: bool
    deflated: bool = False
    encapsulated: bool = False


_IMPLICIT = Encoding(explicit_vr=False, little_endian=True)
_EXPLICIT_LE = Encoding(explicit_vr=True, little_endian=True)
_EXPLICIT_BE = Encoding(explicit_vr=True, little_endian=False)
_DEFLATED_ENCODING = Encoding(explicit_vr=True, little_endian=True, deflated=True)
_ENCAPSULATED_ENCODING = Encoding(explicit_vr=True, little_endian=True, encapsulated=True)


def classify(transfer_syntax_uid: str) -> Encoding | None:
    """How the data set of a file in ``transfer_syntax_uid`` is encoded.

    Parameters
    ----------
    transfer_syntax_uid
        The value of (0002,0010), without padding.

    Returns
    -------
    Encoding or None
        ``None`` for an empty, private or otherwise unknown UID.

    Examples
    --------
    >>> classify("1.2.840.10008.1.2.1.99").deflated
    True
    >>> classify("1.2.840.10008.1.2.8.1").deflated, classify("1.2.840.10008.1.2.8.1").encapsulated
    (False, True)
    >>> classify("1.2.840.113619.5.2") is None
    True
    """
    uid = transfer_syntax_uid
    if uid == IMPLICIT_VR_LITTLE_ENDIAN:
        return _IMPLICIT
    if not uid.startswith(_STANDARD_ROOT):
        return None
    if uid == EXPLICIT_VR_BIG_ENDIAN:
        return _EXPLICIT_BE
    if uid in _DEFLATED:
        return _DEFLATED_ENCODING
    if uid in _ENCAPSULATED or (uid.startswith("1.2.840.10008.1.2.4.") and uid not in _JPIP):
        return _ENCAPSULATED_ENCODING
    return _EXPLICIT_LE


def native_uid(explicit_vr: bool, little_endian: bool) -> str:
    """The native (uncompressed) transfer syntax with this VR style and byte order.

    It names the encoding of a data set that came without a transfer syntax: implicit VR is
    always little endian (there is no implicit VR big endian syntax).
    """
    if not explicit_vr:
        return IMPLICIT_VR_LITTLE_ENDIAN
    return EXPLICIT_VR_LITTLE_ENDIAN if little_endian else EXPLICIT_VR_BIG_ENDIAN
