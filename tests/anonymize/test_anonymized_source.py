"""The de-identified view of an inventory: plans kept for unchanged files, a changed file
planned again (and refused when its edited length moved), archive members, rejections."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from tests.anonymize.helpers import dataset, encode
from xnatio.anonymize import Script
from xnatio.errors import InputError
from xnatio.inventory import Inventory, build_inventory
from xnatio.upload.anonymize import Resolved
from xnatio.upload.anonymized import SourceChanged, anonymize_inventory

SCRIPT = Script.parse(
    'version "6.1"\n(0010,0010) := subject\n(0008,0018) := hashUID[(0008,0018)]\n'
)
VARIABLES = {"project": "P1", "subject": "S01", "session": "E1"}


def _write(path: Path, name: str, uid: str, **extra: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = dataset(PatientName=name, SOPInstanceUID=uid, **extra)
    path.write_bytes(encode(ds, ExplicitVRLittleEndian))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i in range(3):
        _write(tmp_path / "src" / f"{i}.dcm", "Doe^Jane", f"1.2.3.{i}")
    return tmp_path / "src"


def _view(source: Path, script: Script = SCRIPT) -> tuple[Inventory, Inventory]:
    inventory = build_inventory(source)
    resolved = Resolved((script,), variables=VARIABLES)
    return inventory, anonymize_inventory(inventory, resolved.anonymizer("salt"))


def test_an_unchanged_file_is_not_planned_again(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory, view = _view(folder)
    calls: list[str] = []
    anonymizer = view.source.anonymizer  # type: ignore[attr-defined]
    real = anonymizer.plan

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append("plan")
        return real(*args, **kwargs)

    monkeypatch.setattr(anonymizer, "plan", counted)
    f = view.files[0]
    with view.source.open(f.path) as stream:
        data = stream.read()
    assert calls == []
    assert len(data) == f.size
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    assert ds.PatientName == "S01" and ds.SOPInstanceUID == f.sop_instance_uid
    inventory.close()


def test_a_changed_file_is_planned_again_and_refused_when_its_length_moved(folder: Path) -> None:
    inventory, view = _view(folder)
    first, second = view.files[0], view.files[1]
    # The same length, another layout: planned again, edited from the new bytes (the first
    # plan's ranges would cut the name in the wrong place).
    _write(folder / first.path, "Doe^Jane", "1.2.3.0", InstitutionName="General Hospital!!",
           PatientWeight="61")  # fmt: skip
    os.utime(folder / first.path, ns=(1, 1))
    with view.source.open(first.path) as stream:
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stream.read()))
    assert ds.PatientName == "S01"
    assert ds.InstitutionName == "General Hospital!!" and ds.PatientWeight == 61
    # Another length: the file no longer gives the instance that was planned.
    _write(folder / second.path, "Doe^Jane^Middle^Names", "1.2.3.1")
    with pytest.raises(SourceChanged, match="changed since it was planned"):
        view.source.open(second.path)
    assert isinstance(SourceChanged("x"), OSError)  # the transports fail that file alone
    inventory.close()


def test_zip_members_are_planned_when_opened(folder: Path, tmp_path: Path) -> None:
    archive = tmp_path / "s.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(folder.glob("*.dcm")):
            z.write(p, p.name)
    inventory, view = _view(archive)
    assert view.source._kept == {}  # type: ignore[attr-defined]
    for f in view.files:
        with view.source.open(f.path) as stream:
            data = stream.read()
        assert len(data) == f.size
        assert pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).PatientName == "S01"
    inventory.close()


def test_a_script_error_on_one_file_names_it(folder: Path) -> None:
    bad = Script.parse('version "6.1"\n(0010,0010) := substring[(0010,0010), 0, 40]\n')
    with pytest.raises(InputError, match=r"0\.dcm: .*line 2.*nothing was sent"):
        _view(folder, bad)
