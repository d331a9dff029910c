"""What each construct of the language does to a real data set (written and re-read by pydicom)."""

from __future__ import annotations

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from xnatio.anonymize import AnonymizeError, Anonymizer, InstanceRejected, Script, hash_uid

from .helpers import VARIABLES, apply, dataset, encode, flat

V = 'version "6.1"\n'
RAW = encode(dataset(), ExplicitVRLittleEndian)
BEFORE = flat(dataset())


def run(body: str, variables: dict[str, str] = VARIABLES) -> dict[str, object]:
    """Apply ``body``; return the changed/added/removed elements as path -> new value (None)."""
    _, _, ds = apply(V + body, RAW, variables)
    after = flat(ds)
    diff: dict[str, object] = {k: v for k, v in after.items() if BEFORE.get(k) != v}
    diff.update({k: None for k in BEFORE if k not in after})
    return diff


def test_default_site_script() -> None:
    assert run(
        'project != "Unassigned" ? (0008,1030) := project\n'
        "(0010,0010) := subject\n(0010,0020) := session\n"
    ) == {"00081030": "PROJ1", "00100010": "SUBJ01", "00100020": "SUBJ01_MR1"}


def test_unassigned_project_leaves_the_study_description() -> None:
    variables = {**VARIABLES, "project": "Unassigned"}
    assert run('project != "Unassigned" ? (0008,1030) := project\n', variables) == {}


def test_hash_uid_is_xnats() -> None:
    assert hash_uid("foo") == "2.25.15861325218270012641172980964540570562"
    assert hash_uid("1.2.3") == "2.25.148370922854076938159295778886134140470"
    assert hash_uid("") == "2.25.290070988920337595058960832122557831312"
    diff = run("(0020,000D) := hashUID[(0020,000D)]\n(0008,0018) := hashUID[(0008,0018)]\n")
    assert diff == {
        "0020000D": hash_uid("1.2.826.0.1.3680043.2.1125.1"),
        "00080018": hash_uid("1.2.826.0.1.3680043.2.1125.1.42"),
    }


def test_hash_of_a_missing_element_assigns_nothing() -> None:
    assert run("(0020,0200) := hashUID[(0020,0200)]\n") == {}


def test_hash_uid_list_hashes_every_match_at_every_depth() -> None:
    diff = run("hashUIDList[*/(0008,1155)]\n")
    assert diff == {
        "00081140[0]/00081155": hash_uid("1.2.826.0.1.3680043.2.1125.1.41"),
        "00081140[1]/00081155": hash_uid("1.2.826.0.1.3680043.2.1125.1.40"),
    }


def test_assignment_creates_missing_elements_with_the_dictionary_vr() -> None:
    _, _, ds = apply(V + '(0010,21B0) := "none"\n(0020,0013) := "7"\n(0018,0050) := "1.5"\n', RAW)
    assert ds[0x001021B0].VR == "LT" and ds.AdditionalPatientHistory == "none"
    assert ds.InstanceNumber == 7 and ds.SliceThickness == 1.5


def test_assign_if_exists_only_changes_present_elements() -> None:
    assert run('(0010,0030) ?= "19000101"\n(0010,1000) ?= "x"\n') == {"00100030": "19000101"}


def test_variables_constants_and_functions() -> None:
    diff = run(
        'site := "SITE-A"\n'
        '(0010,0010) := format["{0}_{1}", site, subject]\n'
        "(0008,103E) := uppercase[(0008,103E)]\n"
        "(0008,0080) := lowercase[(0008,0080)]\n"
        '(0010,0020) := replace[(0010,0020), "MRN", "ID"]\n'
        "(0008,0050) := substring[(0008,0050), 0, 3]\n"
        '(0008,1030) := match[(0008,1030), "(\\\\w+)\\\\^(\\\\w+)", 2]\n'
        '(0010,4000) := concatenate[project, "/", session]\n'
    )
    assert diff == {
        "00100010": "SITE-A_SUBJ01",
        "0008103E": "T1_MPRAGE",
        "00080080": "general hospital",
        "00100020": "ID0001",
        "00080050": "ACC",
        "00081030": "Routine",
        "00104000": "PROJ1/SUBJ01_MR1",
    }


def test_format_quotes_and_missing_arguments_follow_java() -> None:
    diff = run("(0010,4000) := format[\"it''s {0} '{1}' {2}\", subject]\n")
    assert diff == {"00104000": "it's SUBJ01 {1} {2}"}


@pytest.mark.parametrize(
    ("condition", "fires"),
    [
        ('(0008,0060) = "MR"', True),
        ('(0008,0060) = "M"', False),
        ('(0008,0060) != "CT"', True),
        ('(0010,1000) != "x"', True),  # a missing element differs from everything
        ('(0010,1000) = ""', False),  # and equals nothing
        ('(0008,0060) ~ "M."', True),
        ('(0008,0060) ~ "M"', False),  # Java's matches(): the whole value
        ('(0008,0060) !~ "C."', True),
        ('(0010,1000) !~ ".*"', True),
        ('(0008,0008) = "ORIGINAL\\\\PRIMARY"', True),  # values joined with a backslash
        ("isPresent[(0010,0030)]", True),
        ("isPresent[(0010,0030), (0010,1000)]", False),
        ("true[]", True),
        ("false[]", False),
    ],
)
def test_conditions(condition: str, fires: bool) -> None:
    diff = run(f'{condition} ? (0010,4000) := "yes" : (0010,4000) := "no"\n')
    assert diff == {"00104000": "yes" if fires else "no"}


def test_if_elseif_else_runs_the_first_true_branch() -> None:
    body = (
        'if ((0008,0060) = "CT") {\n  (0010,4000) := "ct"\n}'
        ' elseif ((0008,0060) = "MR") {\n  (0010,4000) := "mr"\n  -(0010,0030)\n}'
        ' else {\n  (0010,4000) := "other"\n}\n'
    )
    assert run(body) == {"00104000": "mr", "00100030": None}


def test_deletions_single_range_wildcards_and_private_creators() -> None:
    assert run("-(0008,0080)\n") == {"00080080": None}
    assert run("-(0010,XXXX)\n") == {k: None for k in BEFORE if k.startswith("0010")}
    assert run("-(0019,{SIEMENS MR HEADER}XX)\n") == {"00191008": None, "0019100A": None}
    assert run("-(0019,{OTHER VENDOR}01)\n") == {"00191101": None}
    assert run("-(0019,{NOBODY}XX)\n") == {}


def test_remove_all_private_tags_and_odd_group_wildcard_agree() -> None:
    private = {k: None for k in BEFORE if int(k[:4], 16) & 1}
    assert run("removeAllPrivateTags\n") == private
    assert run("-(XXX#,XXXX)\n") == private
    assert len(private) == 7


def test_retain_private_tags_keeps_only_the_listed_ones_and_their_creator() -> None:
    diff = run("retainPrivateTags[(0019,{SIEMENS MR HEADER}0A)]\n")
    assert diff == {
        "00191008": None, "00190011": None, "00191101": None, "00290010": None, "00291010": None,
    }  # fmt: skip


def test_sequence_paths() -> None:
    assert run('(0008,1140)[1]/(0008,1155) := "1.2.3"\n') == {"00081140[1]/00081155": "1.2.3"}
    assert run('(0008,1140)[%]/(0008,1150) := "1.2"\n') == {
        "00081140[0]/00081150": "1.2", "00081140[1]/00081150": "1.2",
    }  # fmt: skip
    assert run('*/(0010,0010) := "X"\n') == {"00100010": "X", "00101002[0]/00100010": "X"}
    assert run('+/(0010,0010) := "X"\n') == {"00101002[0]/00100010": "X"}
    assert run('./(0010,0020) := "X"\n') == {"00101002[0]/00100020": "X"}
    assert run("-(0010,1002)\n") == {
        "00101002": None, "00101002[0]/00100010": None, "00101002[0]/00100020": None,
    }  # fmt: skip


def test_assignment_creates_sequences_items_and_private_blocks() -> None:
    diff = run(
        '(0012,0064)[0]/(0008,0100) := "113100"\n'
        '(0012,0064)[0]/(0008,0102) := "DCM"\n'
        '(0012,0064)[1]/(0008,0100) := "113110"\n'
        '(0021,{XNATIO TEST}10) := "hello"\n'
    )
    assert diff == {
        "00120064": "<2 items>",
        "00120064[0]/00080100": "113100",
        "00120064[0]/00080102": "DCM",
        "00120064[1]/00080100": "113110",
        "00210010": "XNATIO TEST",
        "00211010": "hello",
    }


def test_a_path_matching_several_elements_cannot_be_a_value() -> None:
    with pytest.raises(AnonymizeError, match=r"line 2: \*/\(0010,0010\) matches 2 elements"):
        run("(0010,4000) := */(0010,0010)\n")


def test_runtime_errors_name_the_line() -> None:
    with pytest.raises(AnonymizeError, match="test script, line 3: substring"):
        run('x := "abc"\n(0010,4000) := substring[x, 2, 9]\n')
    with pytest.raises(AnonymizeError, match="line 2: the value is not a valid number"):
        run('(0028,0010) := "abc"\n')
    with pytest.raises(AnonymizeError, match="cannot assign a value to a sequence"):
        run('(0008,1140) := "x"\n')
    with pytest.raises(AnonymizeError, match="deletes SOP Instance UID"):
        run("-(0008,0018)\n")


def test_reject() -> None:
    with pytest.raises(InstanceRejected, match="rejected this instance"):
        run('(0008,0060) = "MR" ? reject[]\n')
    assert run('(0008,0060) = "CT" ? reject[]\n') == {}


def test_new_uid_is_stable_within_a_run_and_differs_across_runs() -> None:
    script = Script.parse(V + "(0020,000E) := newUID[]\n(0020,0052) := newUID[]\n")
    import io

    def uids(salt: str, key: str) -> tuple[str, str]:
        edit = Anonymizer([script], {}, salt=salt).plan(io.BytesIO(RAW), key=key)
        values = {c.path: c.after or "" for c in edit.changes}
        return values["(0020,000E)"], values["(0020,0052)"]

    a = uids("run-1", "f")
    assert a == uids("run-1", "f")
    assert a[0] != a[1] and a[0].startswith("2.25.")
    assert uids("run-2", "f") != a and uids("run-1", "g") != a


def test_map_uid_is_consistent_for_the_same_value() -> None:
    diff = run('(0020,000D) := mapUID[(0020,000D), "1.2.3"]\n(0020,0200) := mapUID[(0020,000D)]\n')
    study = diff["0020000D"]
    assert isinstance(study, str) and study.startswith("1.2.3.")


def test_shift_dates() -> None:
    assert run('(0008,0020) := shiftDateTimeByIncrement[(0008,0020), -20, "days"]\n') == {
        "00080020": "20240224"
    }
    assert run('(0008,002A) := shiftDateTimeByIncrement["20240315101500.5", 3600]\n') == {
        "0008002A": "20240315111500.5"
    }


def test_echo_and_describe_change_nothing() -> None:
    seen: list[str] = []
    script = Script.parse(
        V + 'describe visit "Visit"\nvisit := "V1"\necho visit\necho (0008,0060)\n'
    )
    import io

    edit = Anonymizer([script], {}, salt="s", echo=seen.append).plan(io.BytesIO(RAW))
    assert seen == ["V1", "MR"] and not edit.changed


def test_scripts_apply_in_order_site_then_project() -> None:
    import io

    site = Script.parse(V + "(0010,0010) := subject\n", source="site")
    project = Script.parse(V + '(0010,0010) := format["{0}-P", (0010,0010)]\n', source="project")
    edit = Anonymizer([site, project], VARIABLES, salt="s").plan(io.BytesIO(RAW))
    assert [c.after for c in edit.changes] == ["SUBJ01-P"]
    edit = Anonymizer([project, site], VARIABLES, salt="s").plan(io.BytesIO(RAW))
    assert [c.after for c in edit.changes] == ["SUBJ01"]
