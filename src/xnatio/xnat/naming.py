"""XNAT's rules for where a DICOM instance is filed: scan folder and stored file name.

Shared by the client (to predict and verify stored names) and the sandbox (to reproduce XNAT).
See ``xnat-server-behaviour.md`` §3.4 step 8 and §4.3.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_WORD = re.compile(r"[\w.-]+", re.ASCII)
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def safe_name(name: str) -> str:
    """Replace every character outside ``[A-Za-z0-9_.-]`` by ``_`` (XNAT's file-name cleaning)."""
    return _UNSAFE.sub("_", name)


def scan_folder(series_number: str, series_instance_uid: str) -> str:
    """The scan folder (= scan ID) XNAT files an instance under.

    SeriesNumber when it is a valid file name (a leading ``+`` becomes ``_``), otherwise the
    SeriesInstanceUID with unsafe characters replaced by ``_``, otherwise ``NA``.
    """
    number = series_number.strip()
    if number.startswith("+"):
        number = "_" + number[1:]
    if number and _WORD.fullmatch(number) and number.strip(".") != "":
        return number
    uid = safe_name(series_instance_uid.strip())
    if uid and uid.strip(".") != "":
        return uid
    return "NA"


def java_list_hash_base36(values: list[str]) -> str:
    """Java's ``List.hashCode()`` of ``values``, as an unsigned 32-bit number in base 36.

    Java hashes strings over UTF-16 code units; UIDs are ASCII, so characters suffice.
    """
    h = 1
    for s in values:
        sh = 0
        for ch in s:
            sh = (31 * sh + ord(ch)) & 0xFFFFFFFF
        h = (31 * h + sh) & 0xFFFFFFFF
    if h == 0:
        return "0"
    out = []
    while h:
        h, r = divmod(h, 36)
        out.append(_BASE36[r])
    return "".join(reversed(out))


def template_file_name(
    study_instance_uid: str,
    series_number: str,
    instance_number: str,
    sop_class_uid: str,
    sop_instance_uid: str,
) -> str:
    """XNAT's default stored name, used with ``rename=true`` or when the entry name collides.

    ``${StudyInstanceUID}-${SeriesNumber}-${InstanceNumber}-${HashSOPClassUIDWithSOPInstanceUID}``
    plus ``.dcm``, cleaned, with leading dots removed.
    """
    name = "-".join(
        [
            study_instance_uid,
            series_number,
            instance_number,
            java_list_hash_base36([sop_class_uid, sop_instance_uid]),
        ]
    )
    return safe_name(name).lstrip(".") + ".dcm"
