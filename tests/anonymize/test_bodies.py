"""Edited files as members of the streamed tar and zip bodies the REST upload sends."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import BinaryIO, Literal

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from xnatio.anonymize import Anonymizer, Script
from xnatio.transport.bodies import ArchiveMember, make_body

from .helpers import PIXELS, VARIABLES, dataset, encode

SITE = 'version "6.1"\n(0010,0010) := subject\n(0010,0020) := session\n-(0010,0030)\n'


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_edited_members_have_sizes_known_up_front(
    tmp_path: Path, fmt: Literal["tar", "zip"]
) -> None:
    anon = Anonymizer([Script.parse(SITE)], VARIABLES, salt="s")
    members = []
    for i, syntax in enumerate([ExplicitVRLittleEndian, ImplicitVRLittleEndian]):
        path = tmp_path / f"IM{i}.dcm"
        path.write_bytes(encode(dataset(InstanceNumber=str(i)), syntax))
        edit = anon.plan_file(path)  # at inventory time: only the length is kept

        def opener(p: Path = path, n: int = edit.length) -> BinaryIO:
            return anon.open_edited(p, n)

        members.append(ArchiveMember(f"s/IM{i}.dcm", edit.length, opener))
    body = make_body(fmt, members, chunk_size=4096)
    data = b"".join(body)
    assert len(data) == body.length
    if fmt == "tar":
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            contents = [tar.extractfile(m).read() for m in tar.getmembers()]  # type: ignore[union-attr]
    else:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            contents = [z.read(name) for name in z.namelist()]
    for raw in contents:
        ds = pydicom.dcmread(io.BytesIO(raw))
        assert ds.PatientName == "SUBJ01" and "PatientBirthDate" not in ds
        assert ds.PixelData == PIXELS
