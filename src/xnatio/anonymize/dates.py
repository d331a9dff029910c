"""``shiftDateTimeByIncrement``: move a DA or DT value by a whole number of units."""

from __future__ import annotations

import datetime as dt
import re

from xnatio.anonymize.errors import AnonymizeError

__all__ = ["shift"]

_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
_DT = re.compile(r"(\d{8})(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")


def shift(value: str, increment: str, units: str | None, where: str) -> str:
    """``value`` (DA ``YYYYMMDD`` or DT) moved by ``increment`` ``units`` (default seconds).

    A date alone moves by whole days (the seconds of a partial day are dropped, as a date has
    no time). The result keeps the precision and offset of the input.
    """
    unit = (units or "seconds").lower()
    if unit not in _UNITS:
        raise AnonymizeError(f"{where}: unknown unit {units!r} (use {', '.join(_UNITS)})")
    try:
        seconds = int(increment) * _UNITS[unit]
    except ValueError:
        raise AnonymizeError(f"{where}: the increment is not an integer") from None
    if value == "":
        return value
    m = _DT.match(value)
    if m is None:
        raise AnonymizeError(f"{where}: the value is neither a DA nor a DT value")
    date_s, hh, mm, ss, frac, offset = m.groups()
    try:
        base = dt.datetime.strptime(date_s, "%Y%m%d").replace(
            hour=int(hh or 0), minute=int(mm or 0), second=int(ss or 0)
        )
    except ValueError:
        raise AnonymizeError(f"{where}: the value is not a valid date") from None
    if hh is None:
        moved = base + dt.timedelta(days=int(seconds / 86400))
        return moved.strftime("%Y%m%d")
    moved = base + dt.timedelta(seconds=seconds)
    out = moved.strftime("%Y%m%d%H")
    if mm is not None:
        out += moved.strftime("%M")
    if ss is not None:
        out += moved.strftime("%S")
    return out + (frac or "") + (offset or "")
