"""The comparison of a server listing with the inventory (pure logic, no server)."""

from __future__ import annotations

from xnatio.inventory import DicomFile
from xnatio.verify import compare
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
