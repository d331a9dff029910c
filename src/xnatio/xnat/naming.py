"""Every XNAT naming rule xnatio relies on, in one place.

Labels (what XNAT accepts as a project, subject or session), the archive entry name xnatio gives an
instance, the scan folder and stored file name XNAT derives from it, XNAT's template name for
renamed files, and the Patient Comments string that routes a C-STORE instance. The client uses
them to predict and verify what the server holds; the sandbox uses the same functions to behave
like XNAT. See docs/xnat-behaviour.md §1.2, §3.4 (step 8), §4.3 and §6.2.
"""

from __future__ import annotations

import re
from typing import Protocol, TypedDict

from xnatio.errors import InputError

__all__ = [
    "MAX_LABEL_LENGTH",
    "InstanceKeys",
    "Labels",
    "entry_name",
    "java_list_hash_base36",
    "routing_comment",
    "safe_name",
    "scan_folder",
    "scan_id_for",
    "stored_name",
    "template_file_name",
    "template_name",
    "validate_label",
    "validate_labels",
]


class Labels(TypedDict):
    """A session's project, subject and session labels; ``**labels`` passes them on as the
    keywords every upload, plan and check takes."""

    project: str
    subject: str
    session: str


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


# -- labels -----------------------------------------------------------------------------------

_LABEL = re.compile(r"[A-Za-z0-9_-]+")

# The longest labels XNAT can store (docs/xnat-behaviour.md §13). Every ID and label is a
# VARCHAR(255) column (XFT's default string size; longer values fail validation). A session
# label also names the prearchive folder, and a build writes <label>.xml beside that folder; a
# clash of folder names adds "_1" to "_3". That file name must fit the 255 bytes a Linux file
# system allows: 255 - len("_3.xml") = 249.
MAX_LABEL_LENGTH = {"project": 255, "subject": 255, "session": 249}


def validate_label(kind: str, value: str) -> None:
    """Check an XNAT project ID, subject or session label (docs/xnat-behaviour.md §1.2, §13).

    Parameters
    ----------
    kind
        What the value is, for the message (``"project"``, ``"subject"``, ``"session"``).
    value
        The label.

    Raises
    ------
    InputError
        If ``value`` is empty, longer than XNAT can store (:data:`MAX_LABEL_LENGTH`: 255
        characters, 249 for a session label) or has characters outside ``A-Z a-z 0-9 _ -``
        (XNAT's ``REGEX_VALID_ID``; labels with other characters are refused or silently
        rewritten).
    """
    if not value:
        raise InputError(f"{kind} label is empty; use letters, digits, '_' or '-'")
    limit = MAX_LABEL_LENGTH.get(kind, 255)
    if len(value) > limit:
        raise InputError(
            f"{kind} label {value[:16]!r}... is {len(value)} characters long; XNAT can store at "
            f"most {limit}"
        )
    if _LABEL.fullmatch(value):
        return
    bad = "".join(sorted({c for c in value if not _LABEL.fullmatch(c)}))
    raise InputError(
        f"{kind} label {value!r} has characters XNAT does not accept ({bad!r}); "
        "use only letters A-Z a-z, digits 0-9, '_' and '-'"
    )


def validate_labels(project: str, subject: str, session: str) -> None:
    """:func:`validate_label` for a session's three labels, project first."""
    for kind, value in (("project", project), ("subject", subject), ("session", session)):
        validate_label(kind, value)


def routing_comment(project: str, subject: str, session: str) -> str:
    """Patient Comments (0010,4000) value that routes a C-STORE instance in XNAT (§6.2)."""
    return f"Project:{project} Subject:{subject} Session:{session}"


# -- names of one instance --------------------------------------------------------------------


class InstanceKeys(Protocol):
    """The header values the naming rules need (an inventory's ``DicomFile`` has them)."""

    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def sop_class_uid(self) -> str: ...
    @property
    def study_instance_uid(self) -> str: ...
    @property
    def series_instance_uid(self) -> str: ...
    @property
    def series_number(self) -> str: ...
    @property
    def instance_number(self) -> str: ...


def entry_name(f: InstanceKeys) -> str:
    """Archive entry name xnatio gives an instance: ``<SOPInstanceUID>.dcm``.

    With ``rename=false`` XNAT stores the entry path with unsafe characters replaced (§4.3); a
    UID is already safe, so the stored name is predictable.
    """
    return f"{f.sop_instance_uid}.dcm"


def stored_name(f: InstanceKeys) -> str:
    """The file name XNAT stores for an instance sent by xnatio (``rename=false``)."""
    return safe_name(entry_name(f))


def scan_id_for(f: InstanceKeys) -> str:
    """The scan folder XNAT files an instance under (see :func:`scan_folder`)."""
    return scan_folder(f.series_number, f.series_instance_uid)


def template_name(f: InstanceKeys) -> str:
    """The name XNAT gives the instance with ``rename=true`` or on a name collision."""
    return template_file_name(
        f.study_instance_uid,
        f.series_number,
        f.instance_number,
        f.sop_class_uid,
        f.sop_instance_uid,
    )
