"""Regenerate src/xnatio/anonymize/_basic_table.py from the DICOM standard's Table E.1-1.

The facts come from the ``dicom-standard`` package on PyPI (Innolitics, MIT licence), whose
``standard/confidentiality_profile_attributes.json`` is Table E.1-1 of DICOM PS3.15 parsed from
the standard's own HTML. Run it with the wheel unpacked or installed::

    pip download --no-deps dicom-standard==0.1.0 && unzip dicom_standard-0.1.0-py3-none-any.whl
    python tests/anonymize/make_basic_table.py \
        dicom_standard-0.1.0.data/data/standard/confidentiality_profile_attributes.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
TARGET = Path(__file__).resolve().parents[2] / "src/xnatio/anonymize/_basic_table.py"

HEAD = '''# ruff: noqa: E501
"""DICOM PS3.15 Table E.1-1 (Basic Profile and its options), generated: do not edit.

Source: ``standard/confidentiality_profile_attributes.json`` of the ``dicom-standard`` 0.1.0
package on PyPI (Innolitics, MIT licence; parsed from the standard's HTML, 2020 edition).
Regenerate with ``python tests/anonymize/make_basic_table.py FILE``.

Each row: tag, basic profile action, one character per option column (``.`` = none), name.
Option columns, in order: Retain Safe Private, Retain UIDs, Retain Device Identity, Retain
Institution Identity, Retain Patient Characteristics, Retain Long. Full Dates, Retain Long.
Modified Dates, Clean Descriptors, Clean Structured Content, Clean Graphics. The row for
private attributes ("(gggg,eeee) where gggg is odd") is left out: the profile removes them all.
"""

# fmt: off
ROWS: tuple[tuple[str, str, str, str], ...] = (
'''


def main(path: str) -> None:
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    lines = [HEAD]
    for row in sorted(rows, key=lambda r: r["tag"].upper()):
        tag = row["tag"].upper()
        if tag.startswith("(0002,") or not tag[1:5].isalnum() or "WHERE" in tag:
            continue  # the meta group follows the data set; private attributes go wholesale
        flags = "".join(row.get(k) or "." for k in OPTIONS)
        name = " ".join(row["name"].replace('"', "'").split())
        lines.append(f'    ("{tag}", "{row["basicProfile"]}", "{flags}", "{name}"),\n')
    lines.append(")\n# fmt: on\n")
    TARGET.write_text("".join(lines), encoding="utf-8")
    print(f"{len(lines) - 2} rows written to {TARGET}")


if __name__ == "__main__":
    main(sys.argv[1])
