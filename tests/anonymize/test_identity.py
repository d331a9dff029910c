"""Edit.identity: the identity elements a script changed (for the expected inventory)."""

from __future__ import annotations

import pytest
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.anonymize.helpers import apply, dataset, encode
from xnatio.anonymize import hash_uid
from xnatio.anonymize.editor import IDENTITY_TAGS

SERIES_NUMBER, INSTANCE_NUMBER, MODALITY = 0x00200011, 0x00200013, 0x00080060


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_changed_identity_elements_are_listed_with_their_new_values(syntax: str) -> None:
    raw = encode(dataset(), syntax)
    script = (
        'version "6.1"\n'
        "(0020,000D) := hashUID[(0020,000D)]\n"
        "(0008,0018) := hashUID[(0008,0018)]\n"
        '(0020,0011) := "104"\n'
        "-(0020,0013)\n"
        "(0010,0010) := subject\n"
    )
    edit, _, ds = apply(script, raw)
    assert edit.identity == {
        0x00080018: hash_uid("1.2.826.0.1.3680043.2.1125.1.42"),
        0x0020000D: hash_uid("1.2.826.0.1.3680043.2.1125.1"),
        SERIES_NUMBER: "104",
        INSTANCE_NUMBER: "",
    }
    assert str(ds.SeriesNumber) == "104"
    assert "InstanceNumber" not in ds
    assert edit.new_sop_instance_uid == ds.SOPInstanceUID


def test_nested_elements_are_not_listed() -> None:
    raw = encode(dataset(), ExplicitVRLittleEndian)
    script = (
        'version "6.1"\n'
        '(0008,0060) := "MR"\n'  # assigned its own value: listed, with that value
        "(0008,1140)[0]/(0008,1155) := hashUID[(0008,1140)[0]/(0008,1155)]\n"
        "(0010,0010) := subject\n"
    )
    edit, _, _ = apply(script, raw)
    assert edit.identity == {MODALITY: "MR"}
    assert set(IDENTITY_TAGS) >= {SERIES_NUMBER, INSTANCE_NUMBER, MODALITY}


def test_a_deleted_then_recreated_element_counts_with_its_new_value() -> None:
    raw = encode(dataset(), ExplicitVRLittleEndian)
    edit, _, _ = apply('version "6.1"\n-(0020,0011)\n(0020,0011) := "7"\n', raw)
    assert edit.identity == {SERIES_NUMBER: "7"}


def test_anonymize_argument_takes_compiled_scripts_and_refuses_other_types() -> None:
    from xnatio.anonymize import Script
    from xnatio.errors import InputError
    from xnatio.upload.anonymize import Anonymization, as_anonymization

    script = Script.parse('version "6.1"\n(0010,0010) := "anon"\n', source="test")
    one = as_anonymization(script)
    assert isinstance(one, Anonymization) and one.scripts is script
    both = as_anonymization([script, script])
    assert both is not None and both.scripts == (script, script)
    assert as_anonymization("none") is None
    with pytest.raises(InputError, match="not int"):
        as_anonymization(5)  # type: ignore[arg-type]
