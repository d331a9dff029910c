"""Discovery: studies found in folders and archives, labelled by templates; no server."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from xnatio.errors import InputError
from xnatio.many import Discovery, LabelTemplate, ProjectMap, discover, plan_many
from xnatio.many.spec import SessionSpec
from xnatio.synth import SynthSummary, write_session


def _study(tmp: Path, seed: int, patient: str) -> SynthSummary:
    return write_session(
        tmp / f"raw{seed}", series=2, instances=3, rows=16, columns=16, seed=seed,
        patient_id=patient,
    )  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, list[SynthSummary]]:
    """Study A split between a folder and a zip; B in a tar; C in a tar.gz; clutter."""
    root = tmp_path / "export"
    (root / "scanner1").mkdir(parents=True)
    a, b, c = _study(tmp_path, 1, "PA"), _study(tmp_path, 2, "PB"), _study(tmp_path, 3, "PC")
    shutil.copytree(a.out / "series_001", root / "scanner1" / "A")
    with zipfile.ZipFile(root / "scanner1" / "more.zip", "w") as z:
        for f in sorted((a.out / "series_002").iterdir()):
            z.write(f, f"deep/{f.name}")
        z.writestr("readme.txt", "not DICOM")
        inner = tmp_path / "inner.zip"
        with zipfile.ZipFile(inner, "w") as zi:
            zi.writestr("x.dcm", b"whatever")
        z.write(inner, "nested/inner.zip")
    with tarfile.open(root / "b.tar", "w") as t:
        t.add(b.out, arcname="b")
    with tarfile.open(root / "c.tar.gz", "w:gz") as t:
        t.add(c.out, arcname="c")
    (root / "notes.txt").write_text("hello")
    return root, [a, b, c]


def find(
    root: Path,
    *,
    subject: str = "{PatientID}",
    session: str = "{PatientID}_{Modality}",
    project: str | None = "P1",
    project_map: ProjectMap | None = None,
) -> Discovery:
    return discover(
        root,
        subject=LabelTemplate.parse("--subject", subject),
        session=LabelTemplate.parse("--session", session),
        project=LabelTemplate.parse("--project", project) if project else None,
        project_map=project_map,
    )


def test_one_session_per_study_wherever_its_files_are(
    tree: tuple[Path, list[SynthSummary]],
) -> None:
    root, studies = tree
    found = find(root)
    by_label = {s.session: s for s in found.sessions}
    assert sorted(by_label) == ["PA_MR", "PB_MR", "PC_MR"]
    a = by_label["PA_MR"]
    assert a.project == "P1" and a.subject == "PA"
    assert a.gathered is not None
    paths = [f.path for f in a.gathered.files]
    assert len(paths) == studies[0].file_count == 6
    assert sum(p.startswith("scanner1/A/") for p in paths) == 3
    assert sum(p.startswith("scanner1/more.zip!deep/") for p in paths) == 3
    assert {f.study_instance_uid for f in a.gathered.files} == {studies[0].study_instance_uid}
    b, c = by_label["PB_MR"], by_label["PC_MR"]
    assert b.gathered is not None and c.gathered is not None
    assert all(f.path.startswith("b.tar!b/") for f in b.gathered.files)
    assert all(f.path.startswith("c.tar.gz!c/") for f in c.gathered.files)
    reasons = {s.path: s.reason for s in found.skipped}
    assert reasons["notes.txt"] == "not DICOM"
    assert reasons["scanner1/more.zip!readme.txt"] == "not DICOM"
    assert "archive inside an archive" in reasons["scanner1/more.zip!nested/inner.zip"]


def test_plan_numbers_come_from_the_discovered_files(
    tree: tuple[Path, list[SynthSummary]],
) -> None:
    root, studies = tree
    found = find(root)
    plan = plan_many(found.sessions, server=None)
    assert [(p.files, p.studies, p.series, p.action) for p in plan.sessions] == [
        (6, 1, 2, "upload")
    ] * 3
    assert [p.bytes for p in plan.sessions] == [s.total_bytes for s in studies]


def test_collisions_and_illegal_characters_are_reported_not_changed(
    tree: tuple[Path, list[SynthSummary]],
) -> None:
    root, _ = tree
    # Every study has the same date, and the same patient name: Synthetic^Patient.
    plan = plan_many(
        find(root, subject="{PatientName}", session="{StudyDate}").sessions, server=None
    )
    for row in plan.sessions:
        assert row.action == "blocked"
        assert row.spec.session == "20240115"  # as the template made it
        assert row.spec.subject == "Synthetic^Patient"
        problems = " | ".join(row.problems)
        assert "label collision: P1/20240115 is also the label of study" in problems
        assert "subject label 'Synthetic^Patient' has characters" in problems


def test_a_template_naming_a_missing_attribute_is_an_input_error(
    tree: tuple[Path, list[SynthSummary]],
) -> None:
    root, _ = tree
    with pytest.raises(InputError, match=r"--session .* has no OperatorsName \(for example"):
        find(root, session="{PatientID}_{OperatorsName}")


@pytest.mark.parametrize("text", ["{NotAKeyword}", "{0}", "{PatientID.x}", "{PatientID", ""])
def test_bad_templates(text: str) -> None:
    with pytest.raises(InputError, match="--session"):
        LabelTemplate.parse("--session", text)


def test_template_format_specs_are_python_format() -> None:
    t = LabelTemplate.parse("--session", "{PatientID}_{StudyDate:.6}")
    assert t.render({"PatientID": "PA", "StudyDate": "20240115"}) == "PA_202401"


def test_project_map(tree: tuple[Path, list[SynthSummary]], tmp_path: Path) -> None:
    root, _ = tree
    mapping = tmp_path / "projects.csv"
    mapping.write_text("PatientID,project\nPA,NEURO\nPB,CARDIO\n")
    found = find(root, project=None, project_map=ProjectMap.read(mapping))
    projects = {s.subject: s.project for s in found.sessions}
    assert projects == {"PA": "NEURO", "PB": "CARDIO", "PC": ""}
    plan = plan_many(found.sessions, server=None)
    pc = next(p for p in plan.sessions if p.spec.subject == "PC")
    assert pc.action == "blocked"
    assert any("project label is empty" in p for p in pc.problems)
    assert any("has no project for PatientID 'PC'" in n for n in pc.notes)
    # A fixed project catches what the map does not list.
    found = find(root, project_map=ProjectMap.read(mapping))
    assert {s.subject: s.project for s in found.sessions}["PC"] == "P1"


def test_bad_project_maps(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("PatientID,where\nPA,X\n")
    with pytest.raises(InputError, match="line 1: the header must name"):
        ProjectMap.read(bad)
    bad.write_text("Nonsense,project\n")
    with pytest.raises(InputError, match="not a DICOM keyword"):
        ProjectMap.read(bad)
    bad.write_text("PatientID,project\nPA\n")
    with pytest.raises(InputError, match="line 2"):
        ProjectMap.read(bad)


def test_nothing_to_discover(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no DICOM study found"):
        find(tmp_path / "empty")
    with pytest.raises(InputError, match="not a folder"):
        find(tmp_path / "missing")


def test_manifest_sources_are_checked_in_the_plan(tmp_path: Path) -> None:
    spec = SessionSpec("P1", "S1", "E1", source=str(tmp_path / "gone"), origin="m.csv line 2")
    plan = plan_many([spec], server=None)
    assert plan.sessions[0].action == "blocked"
    assert plan.sessions[0].problems == [f"source {tmp_path / 'gone'} does not exist"]
