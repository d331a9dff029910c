"""Manifests and shards: pure logic, no server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from xnatio.errors import InputError
from xnatio.many import parse_shard, read_manifest, take_shard
from xnatio.many.spec import SessionSpec, shard_of


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_options_and_relative_sources(tmp_path: Path) -> None:
    m = write(
        tmp_path / "runs.csv",
        "project,subject,session,source,transport,overwrite,num_batches,direct_archive\n"
        "P1,S1,E1,data/one,,,,\n"
        "\n"
        "P1,S2,E2,/abs/two,dicom-store,append,3,yes\n",
    )
    one, two = read_manifest(m)
    assert (one.project, one.subject, one.session) == ("P1", "S1", "E1")
    assert one.source == str(tmp_path / "data" / "one")
    assert one.transport is None and one.overwrite is None and one.num_batches is None
    assert one.origin == "runs.csv line 2"
    assert two.source == "/abs/two"
    assert (two.transport, two.overwrite, two.num_batches, two.direct_archive) == (
        "dicom-store",
        "append",
        3,
        True,
    )
    assert two.origin == "runs.csv line 4"


def test_tsv_and_jsonl(tmp_path: Path) -> None:
    tsv = write(tmp_path / "m.tsv", "project\tsubject\tsession\tsource\nP1\tS1\tE1\tx\n")
    assert read_manifest(tsv)[0].session == "E1"
    rows = [
        {"project": "P1", "subject": "S1", "session": "E1", "source": "a", "num_batches": 2},
        {"project": "P1", "subject": "S2", "session": "E2", "source": "b", "direct_archive": True},
    ]
    jl = write(tmp_path / "m.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    a, b = read_manifest(jl)
    assert a.num_batches == 2 and b.direct_archive is True


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.csv", "project,subject,session\nP1,S1,E1\n", "m.csv line 1: missing column 'source'"),
        (
            "m.csv",
            "project,subject,session,source,colour\nP1,S1,E1,x,red\n",
            "m.csv line 1: unknown column 'colour'",
        ),
        ("m.csv", "project,subject,session,source\nP1,S1,E1\n", "m.csv line 2: 3 cells"),
        ("m.csv", "project,subject,session,source\n\nP1,,E1,x\n", "m.csv line 3: subject is empty"),
        (
            "m.csv",
            "project,subject,session,source,overwrite\nP1,S1,E1,x,sometimes\n",
            "m.csv line 2: overwrite must be one of none, append, delete",
        ),
        (
            "m.csv",
            "project,subject,session,source,num_batches\nP1,S1,E1,x,0\n",
            "m.csv line 2: num_batches must be a whole number",
        ),
        (
            "m.jsonl",
            '{"project":"P1","subject":"S1","session":"E1","source":"x"}\n{not json}\n',
            "m.jsonl line 2: not JSON",
        ),
        (
            "m.jsonl",
            '{"project":"P1","subject":"S1","session":"E1","source":"x","extra":1}\n',
            "m.jsonl line 1: unknown column 'extra'",
        ),
        ("m.txt", "project,subject,session,source\n", "must end in .csv, .tsv or .jsonl"),
        ("m.csv", "", "is empty"),
        ("m.csv", "project,subject,session,source\n", "lists no sessions"),
    ],
)
def test_bad_manifests_name_the_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    m = write(tmp_path / name, text)
    with pytest.raises(InputError) as err:
        read_manifest(m)
    assert message in err.value.message
    assert "\n" not in err.value.message


def test_a_repeated_session_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    m = write(
        tmp_path / "m.csv",
        "project,subject,session,source\nP1,S1,E1,a\nP1,S2,E2,b\nP1,S3,E1,c\n",
    )
    expected = r"m.csv line 4: session P1/E1 is already listed on line 2"
    with pytest.raises(InputError, match=expected):
        read_manifest(m)


def test_the_same_label_in_two_projects_is_two_sessions(tmp_path: Path) -> None:
    m = write(tmp_path / "m.csv", "project,subject,session,source\nP1,S1,E1,a\nP2,S1,E1,b\n")
    assert len(read_manifest(m)) == 2


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")


def test_shards_partition_the_sessions_stably() -> None:
    specs = [SessionSpec("P1", f"S{i}", f"E{i}", source="x") for i in range(200)]
    shards = [take_shard(specs, k, 4) for k in range(4)]
    keys = [s.key for shard in shards for s in shard]
    assert sorted(keys) == sorted(s.key for s in specs)  # every session exactly once
    assert all(20 < len(shard) < 80 for shard in shards)  # and spread out
    # Stable: the shard of a session depends on its target alone, not on the list's order.
    assert [shard_of(s, 4) for s in reversed(specs)] == [shard_of(s, 4) for s in specs][::-1]
    # The documented rule, so that a job array on other machines agrees: SHA-256 of
    # "project/session", first 8 bytes big-endian, modulo N.
    digest = hashlib.sha256(b"P1/E7").digest()
    assert shard_of(SessionSpec("P1", "S7", "E7"), 4) == int.from_bytes(digest[:8], "big") % 4


@pytest.mark.parametrize("text", ["1", "3/3", "a/2", "-1/2", "1/0", "1/2/3"])
def test_bad_shards(text: str) -> None:
    with pytest.raises(InputError, match="--shard"):
        parse_shard(text)


def test_shard_parses() -> None:
    assert parse_shard("0/8") == (0, 8)
    assert parse_shard("7/8") == (7, 8)
