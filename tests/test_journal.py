"""The journal file: append-only records, torn last line ignored, keys checked, no secrets."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from xnatio.errors import InputError
from xnatio.inventory import DicomFile
from xnatio.result.journal import Journal, JournalKey, default_journal_dir, read_journal


def fake_files(n: int) -> list[DicomFile]:
    return [
        DicomFile(
            path=f"s/IM{i}.dcm",
            size=100 + i,
            sop_instance_uid=f"1.2.3.{i}",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
            study_instance_uid="1.2.3",
            series_instance_uid="1.2.3.0",
            series_number="1",
            instance_number=str(i),
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            modality="MR",
        )
        for i in range(n)
    ]


def key(
    files: list[DicomFile], server: str = "https://user:secret@xnat.example:8443/"
) -> JournalKey:
    return JournalKey.create(server=server, project="P", subject="S", session="E", files=files)


def test_records_and_torn_last_line(tmp_path: Path) -> None:
    files = fake_files(4)
    path = tmp_path / "j.jsonl"
    with Journal(path, key(files)) as j:
        j.start_run(resume=False, total=4)
        j.record_sent(["1.2.3.0", "1.2.3.1"], batch=0, uris=["/data/prearchive/projects/P/1/E"])
    # The process dies in the middle of the next record.
    with open(path, "ab") as fh:
        fh.write(b'{"type":"sent","sop":["1.2.3.2"')
    state, good = read_journal(path)
    assert state.torn and good < path.stat().st_size
    assert state.confirmed == {"1.2.3.0", "1.2.3.1"}
    assert state.unfinished and not state.complete
    assert state.session_uris == ["/data/prearchive/projects/P/1/E"]

    # Reopening cuts the torn tail; new records start on a line of their own.
    with Journal(path, key(files)) as j:
        assert j.state.confirmed == {"1.2.3.0", "1.2.3.1"}
        j.start_run(resume=True, total=4)
        j.record_sent(["1.2.3.2", "1.2.3.3"], batch=1)
        j.record_done(ok=True, matched=4, expected=4)
    lines = path.read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    state, _ = read_journal(path)
    assert state.complete and not state.torn and state.runs == 2
    assert len(state.confirmed) == 4
    # No credentials from the server URL.
    assert "secret" not in path.read_text() and "user" not in path.read_text()


def test_key_depends_on_inventory_and_target(tmp_path: Path) -> None:
    files = fake_files(3)
    k = key(files)
    assert k.server == "https://xnat.example:8443"
    assert key(fake_files(4)).inventory != k.inventory
    assert key(files).file_name() == k.file_name()
    other = JournalKey.create(server=k.server, project="P", subject="S", session="E2", files=files)
    assert other.file_name() != k.file_name()
    path = tmp_path / "j.jsonl"
    Journal(path, k).close()
    with pytest.raises(InputError, match="belongs to another upload"):
        Journal(path, other)


@pytest.mark.parametrize(
    ("project", "session"),
    [
        ("P" * 255, "E" * 255),  # as long as XNAT allows
        ("../../etc", "a/b\\c"),  # never a path (labels are checked, journals do not rely on it)
        (".hidden", "ünï\udcff"),  # nor a hidden file, nor a name the file system cannot encode
        ("", ""),  # a C-STORE journal without labels
    ],
)
def test_file_names_are_bounded_whatever_the_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, project: str, session: str
) -> None:
    files = fake_files(2)
    k = JournalKey.create(
        server="https://x.example", project=project, subject="S", session=session, files=files
    )
    name = k.file_name()
    assert len(name) <= 100 and name.isascii() and "/" not in name and not name.startswith(".")
    assert name.endswith(".jsonl")
    # The digest covers the whole key: labels that share their first 32 characters differ.
    longer = JournalKey.create(
        server="https://x.example", project=project, subject="S", session=session + "X",
        files=files,
    )  # fmt: skip
    assert longer.file_name() != name
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with Journal.for_upload(k) as j:
        j.start_run(resume=False, total=2)
    assert j.path.parent == tmp_path / "xnatio" / "journals" and j.path.is_file()


def test_file_names_of_short_labels_are_unchanged() -> None:
    """Journals written by earlier versions are still found by --resume."""
    k = key(fake_files(2))
    digest = hashlib.sha256(json.dumps(asdict(k), sort_keys=True).encode()).hexdigest()[:24]
    assert k.file_name() == f"P-E-{digest}.jsonl"  # the format earlier versions wrote


def test_default_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_journal_dir() == tmp_path / "xnatio" / "journals"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_journal_dir() == Path.home() / ".cache" / "xnatio" / "journals"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    k = key(fake_files(1))
    with Journal.for_upload(k) as j:
        assert j.path.parent == tmp_path / "xnatio" / "journals"


def sent_records(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [r["sop"] for r in map(json.loads, lines) if r["type"] == "sent"]


def test_batched_sent_from_many_threads(tmp_path: Path) -> None:
    files = fake_files(400)
    path = tmp_path / "j.jsonl"
    with Journal(path, key(files)) as j:
        j.start_run(resume=False, total=400)
        with j.batched(interval=60.0, max_records=50) as batch:

            def worker(part: list[DicomFile]) -> None:
                for f in part:
                    batch.add(f.sop_instance_uid)

            threads = [threading.Thread(target=worker, args=(files[i::8],)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        # The interval never passed: records were written by count, and the rest at close.
        records = sent_records(path)
        assert sorted(u for r in records for u in r) == sorted(f.sop_instance_uid for f in files)
        assert 2 <= len(records) <= 400 // 50 + 1
        assert j.state.confirmed == {f.sop_instance_uid for f in files}


def test_batched_sent_writes_on_time_and_reports_a_failed_write(tmp_path: Path) -> None:
    files = fake_files(3)
    path = tmp_path / "j.jsonl"
    j = Journal(path, key(files))
    batch = j.batched(interval=0.05, max_records=1000)
    batch.add("1.2.3.0")
    deadline = time.monotonic() + 5
    while not sent_records(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sent_records(path) == [["1.2.3.0"]]  # written without waiting for more or for close
    # The file can no longer be written: the next add or close says so, once, clearly.
    j.close()
    batch.add("1.2.3.1")
    with pytest.raises(InputError, match="cannot write the journal"):
        batch.close()
    with pytest.raises(InputError, match="cannot write the journal"):
        batch.add("1.2.3.2")
    assert read_journal(path)[0].confirmed == {"1.2.3.0"}
