"""The PS3.15 Basic Profile: generated from Table E.1-1, its options, and a cross-check against an
independent implementation (Kitware's dicom-anonymizer, which carries its own copy of the table).
"""

from __future__ import annotations

import io

import pydicom
import pytest
from dicomanonymizer import simpledicomanonymizer as kitware  # type: ignore[import-untyped]
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from xnatio.anonymize import Anonymizer, Script, hash_uid
from xnatio.anonymize._basic_table import ROWS
from xnatio.anonymize.profile import BasicProfileOptions, basic_profile, basic_profile_script

from .helpers import PIXELS, dataset, encode

SAMPLES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "ExplVR_BigEnd.dcm")


def profiled(raw: bytes, options: BasicProfileOptions | None = None) -> Dataset:
    anon = Anonymizer([basic_profile(options)], {}, salt="s")
    edit = anon.plan(io.BytesIO(raw))
    out = b"".join(edit.chunks(io.BytesIO(raw)))
    assert len(out) == edit.length
    return pydicom.dcmread(io.BytesIO(out))


def sample(name: str) -> bytes:
    path = get_testdata_file(name)
    assert isinstance(path, str)
    with open(path, "rb") as f:
        return f.read()


def test_the_table_is_table_e1_1() -> None:
    tags = {row[0] for row in ROWS}
    assert len(ROWS) == 654
    # A few rows checked by hand against PS3.15 Table E.1-1.
    expect = {
        "(0010,0010)": ("Z", "Patient's Name"),
        "(0010,0020)": ("Z/D", "Patient ID"),  # Z in 2020, Z/D since
        "(0020,000D)": ("U", "Study Instance UID"),
        "(0008,0080)": ("X/Z/D", "Institution Name"),
        "(0018,1000)": ("X/Z/D", "Device Serial Number"),
        "(0010,1010)": ("X", "Patient's Age"),
        "(0008,0012)": ("X/D", "Instance Creation Date"),  # new since the 2020 edition
    }
    by_tag = {row[0]: (row[1], row[3]) for row in ROWS}
    for tag, value in expect.items():
        assert by_tag[tag] == value
    assert "(0008,0018)" in tags and "(7FE0,0010)" not in tags
    flags = {row[0]: row[2] for row in ROWS}
    assert flags["(0008,1010)"][2] == "K"  # Station Name: kept by Retain Device Identity
    assert flags["(0008,0012)"][5:7] == "KC"  # a new date row: derived like every other date


def test_the_profile_is_a_dicomedit_script_that_compiles() -> None:
    text = basic_profile_script()
    assert text.startswith('version "6.1"\n')
    script = Script.parse(text)
    assert len(script.statements) > 400 and not script.free_variables


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_basic_profile_on_a_full_data_set(syntax: str) -> None:
    ds = profiled(encode(dataset(), syntax))
    assert ds.PatientName == "" and ds.AccessionNumber == ""
    assert ds.PatientID == "ANONYMIZED"  # Z/D: the dummy, which every IOD accepts
    assert "PatientBirthDate" in ds and ds.PatientBirthDate == ""
    assert "OtherPatientIDsSequence" not in ds and "PatientWeight" not in ds
    assert ds.InstitutionName == "ANONYMIZED" and "ReferringPhysicianName" in ds
    assert ds.StudyInstanceUID == hash_uid("1.2.826.0.1.3680043.2.1125.1")
    assert ds.SOPInstanceUID == hash_uid("1.2.826.0.1.3680043.2.1125.1.42")
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == hash_uid(
        "1.2.826.0.1.3680043.2.1125.1.41"
    )
    assert not [el for el in ds.iterall() if el.tag.is_private]
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert ds.StudyDate == "" and ds.Modality == "MR" and ds.PixelData == PIXELS


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        (BasicProfileOptions(retain_uids=True), {"StudyInstanceUID", "SOPInstanceUID"}),
        (BasicProfileOptions(retain_device_identity=True), {"DeviceSerialNumber", "StationName"}),
        (BasicProfileOptions(retain_institution_identity=True), {"InstitutionName"}),
        (BasicProfileOptions(retain_patient_characteristics=True), {"PatientSex", "PatientWeight"}),
        (BasicProfileOptions(keep_dates=True), {"StudyDate", "StudyTime", "SeriesDate"}),
    ],
)
def test_options_keep_what_they_name(options: BasicProfileOptions, kept: set[str]) -> None:
    source = dataset(DeviceSerialNumber="SN-778", StationName="MRC1", SeriesDate="20240315")
    plain = profiled(encode(source, ExplicitVRLittleEndian))
    ds = profiled(encode(source, ExplicitVRLittleEndian), options)
    for keyword in kept:
        assert ds.get(keyword) == source.get(keyword), keyword
        assert plain.get(keyword) != source.get(keyword), keyword
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100" and len(codes) == 2


def test_shifted_dates() -> None:
    source = dataset(SeriesDate="20240316", StudyTime="101500")
    ds = profiled(encode(source, ExplicitVRLittleEndian), BasicProfileOptions(shift_days=-100))
    assert ds.StudyDate == "20231206" and ds.SeriesDate == "20231207"
    assert ds.StudyTime == "101500"
    assert ds.PatientBirthDate == ""  # not a longitudinal date: no option keeps it (E.1-1)
    with pytest.raises(ValueError, match="exclusive"):
        BasicProfileOptions(keep_dates=True, shift_days=3)


def _survivors(before: Dataset, after: Dataset) -> set[int]:
    """Top-level, public, non-sequence, non-empty elements whose value is unchanged."""
    out = set()
    for el in before:
        structural = el.tag.element == 0 or el.tag.group == 0x7FE0  # group lengths, pixels
        if el.tag.is_private or el.VR == "SQ" or structural or el.value in ("", None):
            continue
        if el.tag in after and after[el.tag].value == el.value:
            out.add(int(el.tag))
    return out


def _kitware_rules() -> dict[tuple[int, ...], object]:
    rules: dict[tuple[int, ...], object] = kitware.initialize_actions("dicomfields_2026c")
    return rules


def _kitware_tags() -> set[int]:
    tags = set()
    for key in _kitware_rules():
        if len(key) == 2:
            tags.add(key[0] << 16 | key[1])
    return tags


def test_cross_check_against_kitware_dicom_anonymizer() -> None:
    """Both implementations must let the same values through, except for the attributes that only
    the 2020 edition of Table E.1-1 lists (xnatio keeps applying those rows)."""
    ours_listed = {int(tag[1:5] + tag[6:10], 16) for tag, *_ in ROWS if "X" not in tag[1:10]}
    theirs_listed = _kitware_tags()
    editions_differ = ours_listed ^ theirs_listed
    compared = disagreements = 0
    for name in SAMPLES:
        raw = sample(name)
        before = pydicom.dcmread(io.BytesIO(raw))
        ours = profiled(raw)
        theirs = pydicom.dcmread(io.BytesIO(raw))
        kitware.anonymize_dataset(theirs, None, True, _kitware_rules)
        mine, other = _survivors(before, ours), _survivors(before, theirs)
        unexplained = {t for t in mine ^ other if t not in editions_differ}
        assert not unexplained, (name, sorted(f"{t:08X}" for t in unexplained))
        compared += len({int(el.tag) for el in before})
        disagreements += len(mine ^ other)
        assert not [el for el in ours.iterall() if el.tag.is_private]
    assert compared > 300
    assert disagreements == 0
