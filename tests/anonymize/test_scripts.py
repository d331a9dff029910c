"""Whole scripts as sites write them, applied as XNAT orders them (site script, then project)."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from xnatio.anonymize import Anonymizer, InstanceRejected, Script, hash_uid

from .helpers import PIXELS, VARIABLES, dataset, encode, flat

# XNAT's default site script (META-INF/xnat/defaults/id.das), with comment lines of our own.
XNAT_DEFAULT = """//
// The default site script of a fresh XNAT (comment lines as a site might keep them)
//
version "6.1"
project != "Unassigned" ? (0008,1030) := project
(0010,0010) := subject
(0010,0020) := session
"""

# A project script in the style of multi-site research deployments (written for these tests).
PROJECT = """version "6.1"
// Multi-site study: remove direct identifiers, hash UIDs, keep the CSA header for analysis.
describe trial "Clinical trial identifier"
trial := "XYZ-TRIAL"
(0010,0030) := ""
-(0010,1000)
-(0010,1002)
-(0010,1030)
(0008,0080) ?= "Site"
-(0008,0090)
(0008,0050) := ""
(0020,000D) := hashUID[(0020,000D)]
(0020,000E) := hashUID[(0020,000E)]
(0008,0018) := hashUID[(0008,0018)]
(0020,0052) := hashUID[(0020,0052)]
hashUIDList[*/(0008,1155)]
retainPrivateTags[(0029,{SIEMENS CSA HEADER}10)]
(0012,0062) := "YES"
(0012,0063) := format["{0} project script, {1}", project, trial]
(0012,0020) := trial
(0008,0060) = "SR" ? reject[]
if ((0008,0060) = "MR") {
    (0008,103E) := uppercase[(0008,103E)]
} elseif ((0008,0060) ~ "CT|PT") {
    -(0018,1030)
} else {
    (0008,103E) := "OTHER"
}
"""

STUDY = "1.2.826.0.1.3680043.2.1125.1"


def apply_both(raw: bytes, salt: str = "run") -> Dataset:
    site = Script.parse(XNAT_DEFAULT, source="site script")
    project = Script.parse(PROJECT, source="project script")
    anon = Anonymizer([site, project], VARIABLES, salt=salt)
    edit = anon.plan(io.BytesIO(raw))
    out = b"".join(edit.chunks(io.BytesIO(raw)))
    assert len(out) == edit.length
    return pydicom.dcmread(io.BytesIO(out))


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_site_then_project_script(syntax: str) -> None:
    before = dataset()
    after = apply_both(encode(before, syntax))
    expected: dict[str, object] = {
        "00081030": "PROJ1",
        "00100010": "SUBJ01",
        "00100020": "SUBJ01_MR1",
        "00100030": "",
        "00101002": None,
        "00101002[0]/00100010": None,
        "00101002[0]/00100020": None,
        "00101030": None,
        "00080080": "Site",
        "00080090": None,
        "00080050": "",
        "0020000D": hash_uid(STUDY),
        "0020000E": hash_uid(STUDY + ".4"),
        "00080018": hash_uid(STUDY + ".42"),
        "00200052": hash_uid(STUDY + ".9"),
        "00081140[0]/00081155": hash_uid(STUDY + ".41"),
        "00081140[1]/00081155": hash_uid(STUDY + ".40"),
        "00190010": None,
        "00191008": None,
        "0019100A": None,
        "00190011": None,
        "00191101": None,
        "00120062": "YES",
        "00120063": "PROJ1 project script, XYZ-TRIAL",
        "00120020": "XYZ-TRIAL",
        "0008103E": "T1_MPRAGE",
    }
    old, new = flat(before), flat(after)
    for key, value in expected.items():
        assert new.get(key) == value if value is not None else key not in new, key
    unchanged = {k: v for k, v in old.items() if k not in expected}
    assert {k: new.get(k) for k in unchanged} == unchanged
    assert after[0x00291010].value == b"\x01\x02\x03\x04"  # the retained CSA element
    assert after.PixelData == PIXELS


def test_every_file_of_a_study_gets_the_same_uids_in_every_run() -> None:
    a = apply_both(encode(dataset(), ImplicitVRLittleEndian), salt="monday")
    b = apply_both(
        encode(dataset(SOPInstanceUID=STUDY + ".43"), ExplicitVRBigEndian), salt="tuesday"
    )
    assert a.StudyInstanceUID == b.StudyInstanceUID == hash_uid(STUDY)
    assert a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID


def test_the_project_script_rejects_structured_reports() -> None:
    with pytest.raises(InstanceRejected):
        apply_both(encode(dataset(Modality="SR"), ExplicitVRLittleEndian))


def test_ct_branch() -> None:
    after = apply_both(encode(dataset(Modality="CT", ProtocolName="head"), ExplicitVRLittleEndian))
    assert "ProtocolName" not in after and after.SeriesDescription == "t1_mprage"
