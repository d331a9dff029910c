"""send_dicom_store into the sandbox's XNAT-like SCP: routing tags choose the session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from xnatio.errors import ConnectionFailedError
from xnatio.sandbox import Sandbox
from xnatio.synth import write_session
from xnatio.uploaders import send_dicom_store


@pytest.fixture
def scp(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox(dicom_port=0)


def test_routing_tags_land_in_the_named_session(scp: Sandbox, tmp_path: Path) -> None:
    summary = write_session(tmp_path / "s", series=3, instances=5, rows=16, columns=16)
    assert scp.dicom_port is not None
    result = send_dicom_store(
        source_dir=tmp_path / "s",
        host="127.0.0.1",
        port=scp.dicom_port,
        project="P1",
        subject="Subj_1",
        session="Sess-1",
        num_batches=4,
    )
    assert result.success, result.errors
    rows = scp.store.prearchive_rows("P1")
    assert [(r["subject"], r["name"]) for r in rows] == [("Subj_1", "Sess-1")]
    files = scp.store.prearchive_files("P1", rows[0]["timestamp"], rows[0]["folderName"])
    assert len(files) == 15 == len(summary.files)
    assert {f["sop_instance_uid"] for f in files} == {o.sop_instance_uid for o in result.outcomes}
    assert scp.store.prearchive_rows("Unassigned") == []


def test_wrong_called_ae_fails_before_sending(scp: Sandbox, tmp_path: Path) -> None:
    write_session(tmp_path / "s", series=1, instances=2, rows=16, columns=16)
    assert scp.dicom_port is not None
    with pytest.raises(ConnectionFailedError, match="called AE title not recognised"):
        send_dicom_store(
            source_dir=tmp_path / "s",
            host="127.0.0.1",
            port=scp.dicom_port,
            called_aet="NOTXNAT",
            project="P1",
            subject="S1",
            session="E1",
        )
    assert scp.store.prearchive_rows(None) == []
