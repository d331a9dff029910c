"""The comparison of a server listing with the inventory (pure logic, no server)."""

from __future__ import annotations

from xnatio.inventory import DicomFile
from xnatio.verify import compare
from xnatio.verify.identify import Identities, identify_by_name
from xnatio.xnat.listings import ServerFile
from xnatio.xnat.naming import stored_name, template_name


def dicom(i: int, series: str = "1") -> DicomFile:
    return DicomFile(
        path=f"s{series}/IM{i}.dcm",
        size=100,
        sop_instance_uid=f"1.2.3.{series}.{i}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        study_instance_uid="1.2.3",
        series_instance_uid=f"1.2.3.{series}",
        series_number=series,
        instance_number=str(i),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="MR",
    )


def listed(f: DicomFile, *, name: str | None = None, scan: str | None = None) -> ServerFile:
    return ServerFile(scan=scan or f.series_number, name=name or stored_name(f), size=100, uri="u")


def test_every_instance_once_in_its_scan() -> None:
    files = [dicom(i) for i in range(3)] + [dicom(i, "2") for i in range(2)]
    result = compare(files, [listed(f) for f in files])
    assert result.ok
    assert result.matched == 5
    assert result.per_scan == {"1": (3, 3), "2": (2, 2)}


def test_missing_misplaced_and_extra() -> None:
    a, b, c = dicom(1), dicom(2), dicom(3)
    server = [listed(a), listed(b, scan="9"), ServerFile("1", "other.dcm", 1, "u")]
    result = compare([a, b, c], server)
    assert result.missing == [c.path]
    assert result.misplaced == [(b.path, "9")]
    assert result.extra == ["1/other.dcm"]
    assert not result.ok


def test_template_names_count_and_double_storage_is_a_duplicate() -> None:
    a, b = dicom(1), dicom(2)
    renamed = compare([a, b], [listed(a, name=template_name(a)), listed(b)])
    assert renamed.ok
    assert renamed.extra == []
    twice = compare([a, b], [listed(a), listed(a, name=template_name(a)), listed(b)])
    assert twice.duplicated == [a.path]
    assert not twice.ok


def test_identity_decides_not_the_name() -> None:
    a, b = dicom(1), dicom(2)
    other = ServerFile("1", "S001_IM00001.dcm", 100, "u/1")
    copy = ServerFile("1", "copy_IM1.dcm", 100, "u/2")
    ids = Identities(uid={other: a.sop_instance_uid, copy: a.sop_instance_uid})
    ids.uid[listed(b)] = b.sop_instance_uid
    result = compare([a, b], [other, copy, listed(b)], ids)
    assert result.duplicated == [a.path]  # the same instance under two names
    assert result.matched == 1 and result.extra == []
    unreadable = Identities(unreadable={other: "reading u/1: 500"})
    result = compare([a], [other], unreadable)
    assert result.unidentified == ["1/S001_IM00001.dcm: reading u/1: 500"]
    assert not result.ok


def test_names_that_tell_and_names_that_do_not() -> None:
    a, b = dicom(1), dicom(2)
    foreign_template = "1.2.3-1-7-zzzzzz.dcm"  # a template name with a hash none of ours has
    server = [
        listed(a),  # xio's own name
        listed(b, name=template_name(b)),  # XNAT's template name for b
        ServerFile("1", "9.9.9.dcm", 1, "u"),  # another instance under xio's naming
        ServerFile("1", foreign_template, 1, "u"),
        ServerFile("1", "S001_IM00001.dcm", 1, "u"),  # says nothing
    ]
    ids, to_read = identify_by_name([a, b], server)
    assert ids.uid == {
        server[0]: a.sop_instance_uid,
        server[1]: b.sop_instance_uid,
        server[2]: "9.9.9",
    }
    assert ids.foreign == {server[3]}
    assert to_read == [server[4]]
