"""The DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile as a script.

The rules are generated from Table E.1-1 (:mod:`xnatio.anonymize._basic_table`) as a DicomEdit
script, so the profile runs through the same parser and evaluator as any XNAT script and can be
printed and read (``basic_profile_script``). Every rule applies at every depth (``*/``):

=========  ====================================================================================
action     what the script does
=========  ====================================================================================
X          delete
Z, X/Z     make empty (if present)
D, X/D,    replace (if present) with a dummy value of the element's VR; UIDs are hashed and
Z/D, X/Z/D sequences emptied
U          ``hashUIDList``: every UID replaced with XNAT's ``hashUID`` (same input, same UID,
           in every file and every run)
X/Z/U*     kept; the UIDs inside are replaced by their own ``U`` rows
K          kept
=========  ====================================================================================

Then every private element is removed, Patient Identity Removed (0012,0062) is set to ``YES``,
De-identification Method (0012,0063) names the profile and its options, and the profile's codes
from PS3.16 CID 7050 go into De-identification Method Code Sequence (0012,0064).

Options (PS3.15 table E.1-1's columns) are :class:`BasicProfileOptions`; the "clean" options
(descriptors, structured content, graphics) and Retain Safe Private need judgement about the
content and are not offered: their attributes get the basic action.
"""

from __future__ import annotations

from dataclasses import dataclass

from xnatio.anonymize.engine import Script
from xnatio.anonymize.values import dictionary_vr

__all__ = ["BasicProfileOptions", "basic_profile", "basic_profile_script"]

# Option columns of _basic_table.ROWS.
_UIDS, _DEVICE, _INSTITUTION, _PATIENT, _FULL_DATES, _MODIFIED_DATES = 1, 2, 3, 4, 5, 6
_DUMMY = {
    "PN": "ANONYMIZED", "LO": "ANONYMIZED", "SH": "ANONYMIZED", "CS": "ANONYMIZED",
    "LT": "ANONYMIZED", "ST": "ANONYMIZED", "UT": "ANONYMIZED", "UC": "ANONYMIZED",
    "AE": "ANONYMIZED", "DA": "19000101", "DT": "19000101000000", "TM": "000000",
    "AS": "000Y", "DS": "0", "IS": "0", "US": "0", "SS": "0", "UL": "0", "SL": "0", "FL": "0",
    "FD": "0", "SV": "0", "UV": "0",
}  # fmt: skip
_CODES = {  # PS3.16 CID 7050 De-identification Method
    "profile": ("113100", "Basic Application Confidentiality Profile"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "keep_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "shift_days": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
}


@dataclass(frozen=True, slots=True)
class BasicProfileOptions:
    """Options of the Basic Profile (PS3.15 E.3).

    Attributes
    ----------
    retain_uids
        Keep UIDs (E.3.1); otherwise every UID is replaced by its ``hashUID``.
    retain_device_identity
        Keep device names, serial numbers and station names (E.3.2).
    retain_institution_identity
        Keep institution names and addresses (E.3.3).
    retain_patient_characteristics
        Keep sex, age, size, weight and the like (E.3.5).
    keep_dates
        Keep dates and times as they are (E.3.6, full dates).
    shift_days
        Move every date (DA, DT) by this many days (E.3.6, modified dates; times of day kept).
        ``None`` and ``keep_dates`` false: dates get the basic action.
    """

    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False
    keep_dates: bool = False
    shift_days: int | None = None

    def __post_init__(self) -> None:
        if self.keep_dates and self.shift_days is not None:
            raise ValueError("keep_dates and shift_days are exclusive")

    def chosen(self) -> list[str]:
        """Names of the options that are on."""
        return [
            name
            for name in _CODES
            if name != "profile" and getattr(self, name) not in (False, None)
        ]


def _rule(tag: str, action: str, flags: str, options: BasicProfileOptions) -> list[str]:
    """The script lines for one row (none to keep the element)."""
    keep = (
        (options.retain_uids and flags[_UIDS] == "K")
        or (options.retain_device_identity and flags[_DEVICE] == "K")
        or (options.retain_institution_identity and flags[_INSTITUTION] == "K")
        or (options.retain_patient_characteristics and flags[_PATIENT] == "K")
        or (options.keep_dates and flags[_FULL_DATES] == "K")
    )
    if options.retain_uids and flags[_UIDS] == "X":
        return [f"-*/{tag}"]
    if keep or action in ("X/Z/U*", "K"):
        return []
    vr = "" if "X" in tag[1:5] else dictionary_vr(int(tag[1:5] + tag[6:10], 16)).decode()
    if options.shift_days is not None and flags[_MODIFIED_DATES] == "C":
        if vr == "TM":
            return []  # a time of day moves with no whole-day shift
        if vr in ("DA", "DT"):
            # Top level shifted; DicomEdit's function takes one value, so nested copies get
            # the basic action (nothing identifying is left behind).
            seconds = options.shift_days * 86400
            shifted = f"{tag} ?= shiftDateTimeByIncrement[{tag}, {seconds}]"
            return [shifted, _basic("+/", tag, action, vr)]
    return [_basic("*/", tag, action, vr)]


def _basic(prefix: str, tag: str, action: str, vr: str) -> str:
    if action == "X":
        return f"-{prefix}{tag}"
    if action == "U" or (vr == "UI" and action != "Z"):
        return f"hashUIDList[{prefix}{tag}]"
    if action in ("Z", "X/Z"):
        return f'{prefix}{tag} ?= ""'
    # D, X/D, Z/D, X/Z/D: a dummy value of the VR (sequences and binary values emptied)
    return f'{prefix}{tag} ?= "{_DUMMY.get(vr, "")}"'


def basic_profile_script(options: BasicProfileOptions | None = None) -> str:
    """The Basic Profile with ``options`` as DicomEdit 6 text."""
    # The table is loaded when a profile is built, not with every upload (start-up time).
    from xnatio.anonymize._basic_table import ROWS

    options = options or BasicProfileOptions()
    chosen = options.chosen()
    lines = [
        'version "6.1"',
        "// DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile, generated by",
        f"// xnatio from Table E.1-1; options: {', '.join(chosen) or 'none'}",
    ]
    for tag, action, flags, name in ROWS:
        lines.extend(f"{rule}  // {name}" for rule in _rule(tag, action, flags, options))
    lines.append("removeAllPrivateTags")
    lines.append('(0012,0062) := "YES"')
    method = "DICOM PS3.15 E.1 Basic Profile" + "".join(f", {c}" for c in chosen)
    lines.append(f'(0012,0063) := "{method[:64]}"')
    lines.append("-(0012,0064)")
    for n, name in enumerate(["profile", *chosen]):
        value, meaning = _CODES[name]
        item = f"(0012,0064)[{n}]"
        lines.append(f'{item}/(0008,0100) := "{value}"')
        lines.append(f'{item}/(0008,0102) := "DCM"')
        lines.append(f'{item}/(0008,0104) := "{meaning}"')
    return "\n".join(lines) + "\n"


def basic_profile(options: BasicProfileOptions | None = None) -> Script:
    """The Basic Profile as a compiled :class:`Script` (source name ``basic profile``)."""
    return Script.parse(basic_profile_script(options), source="basic profile")
