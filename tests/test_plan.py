"""Pre-flight checks, labels, entry names, routing and batch planning."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from xnatio.errors import InputError
from xnatio.inventory import DicomFile, build_inventory
from xnatio.plan import Batch, check_inventory, plan_batches, plan_inventory
from xnatio.synth import write_session
from xnatio.xnat.naming import entry_name, routing_comment, validate_label


def _files(sizes_per_series: list[list[int]], study: str = "1.2.3") -> list[DicomFile]:
    out: list[DicomFile] = []
    for s, sizes in enumerate(sizes_per_series, start=1):
        for i, size in enumerate(sizes, start=1):
            out.append(
                DicomFile(
                    path=f"s{s}/i{i}.dcm",
                    size=size,
                    sop_instance_uid=f"{study}.{s}.{i}",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                    study_instance_uid=study,
                    series_instance_uid=f"{study}.{s}",
                    series_number=str(s),
                    instance_number=str(i),
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    modality="MR",
                )
            )
    return out


def _series_of(batch: Batch) -> set[str]:
    return {f.series_instance_uid for f in batch.files}


def _imbalance(batches: list[Batch]) -> float:
    sizes = [b.total_bytes for b in batches]
    return max(sizes) / (sum(sizes) / len(sizes))


# ---------------------------------------------------------------------------------------------
# Labels, names, routing


@pytest.mark.parametrize("value", ["P1", "sub-01", "MR_2024_01", "a", "X" * 64])
def test_valid_labels_pass(value: str) -> None:
    validate_label("session", value)


@pytest.mark.parametrize(
    ("value", "bad"),
    [("sub 01", "' '"), ("a.b", "'.'"), ("a/b", "'/'"), ("é", "'é'"), ("p:1;x", "':;'")],
)
def test_invalid_labels_name_the_characters(value: str, bad: str) -> None:
    with pytest.raises(InputError) as exc:
        validate_label("subject", value)
    assert f"subject label {value!r}" in exc.value.message
    assert bad in exc.value.message
    assert "A-Z a-z" in exc.value.message


def test_empty_label_is_refused() -> None:
    with pytest.raises(InputError, match="project label is empty"):
        validate_label("project", "")


def test_entry_name_and_routing_comment() -> None:
    (f,) = _files([[10]])
    assert entry_name(f) == "1.2.3.1.1.dcm"
    assert routing_comment("P1", "S-1", "E_1") == "Project:P1 Subject:S-1 Session:E_1"


# ---------------------------------------------------------------------------------------------
# check_inventory


def test_several_studies_are_refused_unless_allowed(tmp_path: Path) -> None:
    write_session(tmp_path / "a", series=1, instances=2, rows=2, columns=2, seed=1)
    write_session(tmp_path / "b", series=1, instances=2, rows=2, columns=2, seed=2)
    with build_inventory(tmp_path) as inv:
        with pytest.raises(InputError) as exc:
            check_inventory(inv)
        message = exc.value.message
        assert "2 studies" in message
        assert "separate sessions" in message
        assert "--allow-multiple-studies" in message
        assert inv.files[0].study_instance_uid in message
        checked = check_inventory(inv, allow_multiple_studies=True)
        assert len(checked.files) == 4


def test_identical_duplicates_are_dropped(tmp_path: Path) -> None:
    summary = write_session(tmp_path, series=1, instances=3, rows=2, columns=2)
    shutil.copy(summary.files[1], tmp_path / "copy.dcm")
    with build_inventory(tmp_path) as inv:
        assert len(inv.files) == 4
        checked = check_inventory(inv)
        assert checked.source is inv.source
    assert len(checked.files) == 3
    dropped = [s for s in checked.skipped if s.reason.startswith("duplicate of")]
    assert len(dropped) == 1
    # Whichever copy sorts first is kept; the other points at it.
    kept = {f.path for f in checked.files}
    assert dropped[0].reason.removeprefix("duplicate of ") in kept
    assert len(inv.files) == 4  # the input inventory is not modified


def test_conflicting_duplicates_are_refused(tmp_path: Path) -> None:
    summary = write_session(tmp_path, series=1, instances=3, rows=2, columns=2)
    data = bytearray(summary.files[1].read_bytes())
    data[-1] ^= 0xFF  # same header, different pixels
    (tmp_path / "changed.dcm").write_bytes(bytes(data))
    with build_inventory(tmp_path) as inv, pytest.raises(InputError) as exc:
        check_inventory(inv)
    assert "share SOP Instance UID" in exc.value.message
    assert "changed.dcm" in exc.value.message


# ---------------------------------------------------------------------------------------------
# plan_batches


def _check_invariants(files: list[DicomFile], batches: list[Batch], wanted: int) -> None:
    assert len(batches) == min(wanted, len(files))
    assert [b.index for b in batches] == list(range(len(batches)))
    assert all(b.files for b in batches)
    position = {id(f): i for i, f in enumerate(files)}
    flat = [position[id(f)] for b in batches for f in b.files]
    assert sorted(flat) == list(range(len(files)))  # every file exactly once
    for b in batches:  # inventory order inside each batch
        positions = [position[id(f)] for f in b.files]
        assert positions == sorted(positions)
    firsts = [position[id(b.files[0])] for b in batches]
    assert firsts == sorted(firsts)  # batches numbered in file order


@pytest.mark.parametrize("wanted", [1, 2, 3, 5, 8, 13, 42, 100, 1000])
def test_batch_invariants(wanted: int) -> None:
    rng = random.Random(wanted)
    files = _files(
        [[rng.randint(1000, 200_000) for _ in range(rng.randint(1, 60))] for _ in range(7)]
    )
    batches = plan_batches(files, wanted)
    _check_invariants(files, batches, wanted)
    assert plan_batches(files, wanted) == batches  # deterministic


def test_series_stay_whole_when_batches_allow() -> None:
    files = _files([[1000] * 50 for _ in range(12)])
    batches = plan_batches(files, 4)
    _check_invariants(files, batches, 4)
    owners: dict[str, int] = {}
    for b in batches:
        for uid in _series_of(b):
            assert owners.setdefault(uid, b.index) == b.index
    assert _imbalance(batches) == 1.0


def test_series_are_split_when_there_are_more_batches_than_series() -> None:
    files = _files([[1000] * 100, [1000] * 100])
    batches = plan_batches(files, 10)
    _check_invariants(files, batches, 10)
    assert _imbalance(batches) <= 1.05
    assert all(len(_series_of(b)) == 1 for b in batches)


def test_skewed_session_is_balanced() -> None:
    # One huge series (a 4D run), a few mid-size ones and many tiny localisers.
    files = _files([[500_000] * 400] + [[100_000] * 60] * 5 + [[20_000] * 3] * 20)
    for wanted in (4, 8, 16, 42):
        batches = plan_batches(files, wanted)
        _check_invariants(files, batches, wanted)
        assert _imbalance(batches) < 1.15, (wanted, _imbalance(batches))


def test_few_files_give_few_batches() -> None:
    files = _files([[10, 20, 30]])
    batches = plan_batches(files, 42)
    _check_invariants(files, batches, 42)
    assert [len(b.files) for b in batches] == [1, 1, 1]
    assert batches[1].total_bytes == 20


def test_no_files_no_batches_and_bad_count() -> None:
    assert plan_batches([], 5) == []
    with pytest.raises(InputError, match="at least 1"):
        plan_batches(_files([[1]]), 0)


def test_split_series_go_out_in_consecutive_runs() -> None:
    files = _files([[1000] * 90, [1000] * 10])
    batches = plan_batches(files, 5)
    _check_invariants(files, batches, 5)
    assert _imbalance(batches) == 1.0
    for b in batches:
        numbers = [int(f.instance_number) for f in b.files if f.series_number == "1"]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) if numbers else True


def test_one_giant_file_never_leaves_a_batch_empty() -> None:
    files = _files([[10_000_000] + [10] * 5, [10] * 3])
    for wanted in range(1, 10):
        _check_invariants(files, plan_batches(files, wanted), wanted)


def test_equal_series_that_do_not_divide_evenly_are_split_a_little() -> None:
    # 10 equal series in 8 batches: whole series would give 1.6x; a few are split instead.
    files = _files([[131_000] * 300 for _ in range(10)])
    batches = plan_batches(files, 8)
    _check_invariants(files, batches, 8)
    assert _imbalance(batches) <= 1.25
    batches_per_series: dict[str, int] = {}
    for b in batches:
        for uid in _series_of(b):
            batches_per_series[uid] = batches_per_series.get(uid, 0) + 1
    assert sum(1 for n in batches_per_series.values() if n == 1) >= 5


def test_a_plan_is_cut_again_into_another_number_of_batches(tmp_path: Path) -> None:
    write_session(tmp_path / "s", series=2, instances=6, rows=8, columns=8, seed=1)
    plan = plan_inventory(build_inventory(tmp_path / "s"), num_batches=3)
    with plan.inventory:
        assert plan.with_batches(3) is plan
        again = plan.with_batches(5)
        assert again.batches == plan_batches(plan.inventory.files, 5)
        assert again.series == plan.series and again.inventory is plan.inventory
        assert len(plan.with_batches(100).batches) == 12  # never more than there are files
