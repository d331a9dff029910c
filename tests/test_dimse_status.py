"""C-STORE statuses as data: category, meaning and retry class (PS3.4 B.2.3, PS3.7 annex C)."""

from __future__ import annotations

import itertools

import pytest

from xnatio.dimse import status as status_module
from xnatio.dimse.status import (
    STATUSES,
    lookup,
    status_category,
    status_meaning,
    status_retry,
)


def test_the_table_has_one_entry_for_every_code() -> None:
    singles = [s.first for s in STATUSES if s.first == s.last]
    assert len(singles) == len(set(singles))
    ranges = sorted((s.first, s.last) for s in STATUSES if s.first != s.last)
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert end < start, "ranges overlap"
    for entry in STATUSES:
        assert entry.first <= entry.last
        assert (entry.retry == "none") == (entry.category != "failure"), entry


@pytest.mark.parametrize(
    ("code", "category", "retry"),
    [
        (0x0000, "success", "none"),
        (0x0001, "warning", "none"),
        (0x0107, "warning", "none"),
        (0x0116, "warning", "none"),
        (0xB000, "warning", "none"),
        (0xB006, "warning", "none"),
        (0xB007, "warning", "none"),
        (0xB123, "warning", "none"),
        # Transient: the receiver may manage later.
        (0xA700, "failure", "transient"),
        (0xA7FF, "failure", "transient"),
        (0x0213, "failure", "transient"),
        (0x0110, "failure", "transient"),
        (0x0210, "failure", "transient"),
        # Permanent: the same bytes get the same answer.
        (0xC000, "failure", "permanent"),
        (0xCFFF, "failure", "permanent"),
        (0xA900, "failure", "permanent"),
        (0xA9FF, "failure", "permanent"),
        (0x0122, "failure", "permanent"),
        (0x0124, "failure", "permanent"),
        (0x0117, "failure", "permanent"),
        (0x0111, "failure", "permanent"),
        (0x0211, "failure", "permanent"),
        (0x0212, "failure", "permanent"),
        (0xFE00, "failure", "permanent"),
        # Not in the standard: a failure that gets the bounded retry.
        (0x0002, "failure", "transient"),
        (0xA800, "failure", "transient"),
        (0xFFFF, "failure", "transient"),
    ],
)
def test_category_and_retry_class(code: int, category: str, retry: str) -> None:
    assert status_category(code) == category
    assert status_retry(code) == retry
    assert lookup(code).meaning == status_meaning(code)


def test_meanings_name_the_code() -> None:
    assert status_meaning(0x0000) == "Success"
    assert status_meaning(0xB000) == "Warning: Coercion of data elements"
    assert status_meaning(0xB0FF) == "Warning"
    assert status_meaning(0xA7A7) == "Refused: Out of resources"
    assert status_meaning(0xA955) == "Error: Data set does not match SOP class"
    assert status_meaning(0xC211) == "Error: Cannot understand"
    assert status_meaning(0x0122) == "Refused: SOP class not supported"
    assert status_meaning(0x0ABC) == "Unknown status 0x0ABC"


def test_the_transport_and_the_client_re_export_the_same_names() -> None:
    from xnatio.dimse.client import StoreResponse as ClientStoreResponse
    from xnatio.transport import dicom_store

    assert dicom_store.status_category is status_module.status_category
    assert dicom_store.status_meaning is status_module.status_meaning
    assert ClientStoreResponse is status_module.StoreResponse
