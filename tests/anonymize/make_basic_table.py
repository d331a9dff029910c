"""Regenerate src/xnatio/anonymize/_basic_table.py from two machine-readable copies of DICOM
PS3.15 Table E.1-1 found on PyPI (facts only; no code is taken from either):

- ``dicom-standard`` 0.1.0 (Innolitics, MIT): ``standard/confidentiality_profile_attributes.json``,
  the 2020 edition of the table parsed from the standard's HTML, with every option column.
- ``dicom-anonymizer`` 2.1.0 (Kitware, BSD-3-Clause, a test dependency of xnatio):
  ``dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py``, the basic-profile action
  of every attribute of the 2026c edition, without the option columns.

The action of a row comes from the newer edition; the option columns from the 2020 one. For the
attributes the 2020 edition lacks, two of the standard's own regularities give the options: a
``U`` attribute is kept by Retain UIDs, and a DA/DT/TM attribute is kept by Retain Longitudinal
Full Dates and modified by Retain Longitudinal Modified Dates (every such row of the 2020 edition
reads so). Every other option leaves them to the basic action (the conservative reading).

    pip download --no-deps dicom-standard==0.1.0 && unzip dicom_standard-0.1.0-py3-none-any.whl
    python tests/anonymize/make_basic_table.py \
        dicom_standard-0.1.0.data/data/standard/confidentiality_profile_attributes.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dicomanonymizer.dicom_anonymization_databases import (  # type: ignore[import-untyped]
    dicomfields_2026c as newer,
)
from pydicom.datadict import dictionary_description, dictionary_VR

OPTIONS = (
    "rtnSafePrivOpt",
    "rtnUIDsOpt",
    "rtnDevIdOpt",
    "rtnInstIdOpt",
    "rtnPatCharsOpt",
    "rtnLongFullDatesOpt",
    "rtnLongModifDatesOpt",
    "cleanDescOpt",
    "cleanStructContOpt",
    "cleanGraphOpt",
)
LISTS = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}  # fmt: skip
TARGET = Path(__file__).resolve().parents[2] / "src/xnatio/anonymize/_basic_table.py"

HEAD = '''# ruff: noqa: E501
"""DICOM PS3.15 Table E.1-1 (Basic Profile and its options), generated: do not edit.

Sources (facts only): the 2020 edition with its option columns from the ``dicom-standard`` 0.1.0
package (Innolitics, MIT), the 2026c edition's basic-profile actions from ``dicom-anonymizer``
2.1.0 (Kitware, BSD-3-Clause). How they are merged: ``tests/anonymize/make_basic_table.py``,
which regenerates this file.

Each row: tag, basic profile action, one character per option column (``.`` = none), name.
Option columns, in order: Retain Safe Private, Retain UIDs, Retain Device Identity, Retain
Institution Identity, Retain Patient Characteristics, Retain Long. Full Dates, Retain Long.
Modified Dates, Clean Descriptors, Clean Structured Content, Clean Graphics. The row for
private attributes ("(gggg,eeee) where gggg is odd") is left out: the profile removes them all.
"""

# fmt: off
ROWS: tuple[tuple[str, str, str, str], ...] = (
'''


def _text(entry: tuple[int, ...]) -> str:
    group, elem = entry[0], entry[1]
    g, e = f"{group:04X}", f"{elem:04X}"
    if len(entry) == 4:  # (group, element, group mask, element mask): a repeating group
        gm, em = entry[2], entry[3]
        g = "".join(c if gm >> (12 - 4 * i) & 0xF else "X" for i, c in enumerate(g))
        e = "".join(c if em >> (12 - 4 * i) & 0xF else "X" for i, c in enumerate(e))
    return f"({g},{e})"


def _derived_flags(tag: str, action: str) -> str:
    flags = ["."] * len(OPTIONS)
    if action == "U":
        flags[1] = "K"
    if "X" not in tag:
        try:
            vr = dictionary_VR(int(tag[1:5] + tag[6:10], 16))
        except KeyError:
            vr = ""
        if vr in ("DA", "DT", "TM"):
            flags[5], flags[6] = "K", "C"
    return "".join(flags)


def main(path: str) -> None:
    older = {
        row["tag"].upper(): row
        for row in json.loads(Path(path).read_text(encoding="utf-8"))
        if row["tag"][1:5].isalnum() and "WHERE" not in row["tag"].upper()
    }
    actions: dict[str, str] = {}
    for name, action in LISTS.items():
        for entry in getattr(newer, name):
            actions[_text(entry)] = action
    rows = []
    for tag in sorted(set(older) | set(actions)):
        if tag.startswith("(0002,"):
            continue  # the file meta group follows the data set (docs/anonymisation.md)
        old = older.get(tag)
        action = actions.get(tag) or (old or {})["basicProfile"]
        if old is not None:
            flags = "".join(old.get(k) or "." for k in OPTIONS)
            name = old["name"]
        else:
            flags = _derived_flags(tag, action)
            try:
                name = dictionary_description(int(tag[1:5] + tag[6:10], 16))
            except (KeyError, ValueError):
                name = "(repeating group)"
        name = " ".join(name.replace('"', "'").split())
        rows.append(f'    ("{tag}", "{action}", "{flags}", "{name}"),\n')
    TARGET.write_text(HEAD + "".join(rows) + ")\n# fmt: on\n", encoding="utf-8")
    print(f"{len(rows)} rows written to {TARGET}")


if __name__ == "__main__":
    main(sys.argv[1])
