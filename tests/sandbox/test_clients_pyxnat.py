"""pyxnat against the sandbox, the everyday paths of its users: connect, select paths and
listings (pyxnat reads them as CSV), attributes, downloads (bytes compared with what xio
uploaded), creation, resource files, an import and the prearchive (docs/sandbox.md, "Using it
with xnatpy and pyxnat"; docs/xnat-behaviour.md §14).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .client_site import CT, MR, Site, by_uid, data_set, open_site, zip_members

pyxnat = pytest.importorskip("pyxnat")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with open_site(tmp_path_factory.mktemp("pyxnat")) as opened:
        yield opened


@pytest.fixture
def interface(site: Site) -> Iterator[Any]:
    connection = pyxnat.Interface(server=site.url, user="admin", password="admin")
    yield connection
    connection.disconnect()


def _experiment(interface: Any, where: tuple[str, str, str]) -> Any:
    project, subject, label = where
    return interface.select.project(project).subject(subject).experiment(label)


def test_connect_and_version(interface: Any) -> None:
    assert interface.version()["version"] == "1.8.10"  # /data/version is 404, as on XNAT 1.8
    assert "xnat:mrSessionData" in interface.inspect.datatypes()


def test_listings_and_select_paths(interface: Any) -> None:
    assert sorted(interface.select.projects().get()) == ["P1", "P2"]
    project = interface.select.project("P1")
    # (get("label") gives IDs on a first call: a pyxnat quirk; label() asks the listing.)
    assert [s.label() for s in project.subjects()] == ["SUBJ_MR"]
    assert [e.label() for e in project.subject("SUBJ_MR").experiments()] == [MR[2]]
    mrs = interface.array.experiments(
        project_id="P1", experiment_type="xnat:mrSessionData", columns=["label"]
    )
    assert [row["label"] for row in mrs] == [MR[2]]
    no_ct = interface.array.experiments(project_id="P1", experiment_type="xnat:ctSessionData")
    assert list(no_ct) == []
    files = interface.select(
        f"/project/P1/subject/SUBJ_MR/experiment/{MR[2]}/scan/1/resource/DICOM/files"
    ).get()
    assert len(files) == 3
    every_scan = interface.select("/projects/*/subjects/*/experiments/*/scans/*").get()
    assert sorted(every_scan) == ["1", "1", "2"]
    assert _experiment(interface, CT).scans().get() == ["1"]
    assert _experiment(interface, MR).resources().get() == []


def test_attributes(interface: Any, site: Site) -> None:
    header = pytest.importorskip("pydicom").dcmread(io.BytesIO(next(iter(site.mr_files.values()))))
    experiment = _experiment(interface, MR)
    assert experiment.attrs.get("label") == MR[2]
    assert experiment.attrs.get("xnat:mrSessionData/UID") == header.StudyInstanceUID
    assert experiment.attrs.get("xnat:mrSessionData/date").replace("-", "") == header.StudyDate
    assert experiment.attrs.get("xnat:imageSessionData/modality") == "MR"
    assert experiment.datatype() == "xnat:mrSessionData"
    scan = experiment.scan(str(header.SeriesNumber))
    assert scan.attrs.get("type") == header.SeriesDescription
    assert scan.attrs.get("series_description") == header.SeriesDescription
    assert scan.attrs.get("UID") == header.SeriesInstanceUID
    assert scan.attrs.get("xnat:imageScanData/modality") == "MR"
    assert len(scan.resource("DICOM").files().get()) == 3


def test_downloads_are_byte_identical(interface: Any, site: Site, tmp_path: Path) -> None:
    scan = _experiment(interface, MR).scan("1")
    name = scan.resource("DICOM").files().get()[0]
    saved = scan.resource("DICOM").file(name).get(str(tmp_path / "one.dcm"))
    assert Path(saved).read_bytes() in site.mr_files.values()
    (tmp_path / "res").mkdir()
    extracted = scan.resource("DICOM").get(str(tmp_path / "res"), extract=True)
    assert len(extracted) == 3
    assert {Path(p).read_bytes() for p in extracted} <= set(site.mr_files.values())
    (tmp_path / "session").mkdir()
    _experiment(interface, MR).scans().download(str(tmp_path / "session"), type="ALL")
    [archive] = (tmp_path / "session").glob("*.zip")
    assert by_uid(list(zip_members(archive.read_bytes()).values())) == site.mr_files
    (tmp_path / "ct").mkdir()
    _experiment(interface, CT).scans().download(str(tmp_path / "ct"), extract=True)
    got = by_uid([p.read_bytes() for p in (tmp_path / "ct").rglob("*.dcm")])
    assert {u: data_set(d) for u, d in got.items()} == {
        u: data_set(d) for u, d in site.ct_files.items()
    }


def test_create_subject_and_experiment(interface: Any) -> None:
    subject = interface.select.project("P1").subject("PY_NEW")
    assert not subject.exists()
    subject.create()
    assert subject.exists()
    assert subject.id().startswith("XNAT_S")
    experiment = subject.experiment("PY_NEW_PET")
    experiment.create(experiments="xnat:petSessionData")
    assert experiment.exists()
    assert experiment.datatype() == "xnat:petSessionData"
    # A new experiment's missing subject is created first, as pyxnat walks up the path.
    nested = interface.select.project("P1").subject("PY_NEW2").experiment("PY_NEW2_MR")
    nested.create(experiments="xnat:mrSessionData")
    assert interface.select.project("P1").subject("PY_NEW2").exists()


def test_resource_files(interface: Any, tmp_path: Path) -> None:
    experiment = _experiment(interface, MR)
    (tmp_path / "notes.txt").write_bytes(b"pyxnat notes\n")
    experiment.resource("PYRES").file("notes.txt").put(str(tmp_path / "notes.txt"))
    (tmp_path / "more").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "more" / name).write_bytes(name.encode())
    experiment.resource("PYRES").put_dir(str(tmp_path / "more"))  # one zip, extracted
    assert sorted(experiment.resource("PYRES").files().get()) == ["a.txt", "b.txt", "notes.txt"]
    saved = experiment.resource("PYRES").file("notes.txt").get(str(tmp_path / "back.txt"))
    assert Path(saved).read_bytes() == b"pyxnat notes\n"
    assert [r.label() for r in experiment.resources()] == ["PYRES"]


def test_import_and_the_prearchive(interface: Any, site: Site) -> None:
    upload = io.BytesIO()
    with zipfile.ZipFile(upload, "w") as zf:
        for uid, data in site.mr_files.items():
            zf.writestr(f"{uid}.dcm", data)
    answer = interface.post(
        "/data/services/import",
        params={"project": "P1", "subject": "PYIMP", "session": "PYIMP_MR"},
        data=upload.getvalue(),
        headers={"Content-Type": "application/zip"},
    )
    assert answer.status_code == 200, answer.text
    uri = answer.text.strip()
    prearchive = interface.manage.prearchive
    [triple] = prearchive.get()
    assert triple[0] == "P1" and triple[2] == "PYIMP_MR"
    assert f"/data/prearchive/projects/{'/'.join(triple)}" == uri
    rebuilt = interface.post("/data/services/prearchive/rebuild", params={"src": uri})
    assert rebuilt.status_code == 200
    assert prearchive.status(triple) == "READY"
    assert sorted(prearchive.get_scans(triple)) == ["1", "2"]
    resources = prearchive.get_resources(triple, "1")
    assert "DICOM" in resources
    assert len(prearchive.get_files(triple, "1", "DICOM")) == 3
    prearchive.delete(uri.removeprefix("/data"))
    assert prearchive.get() == []
