"""How far an upload checks what landed (``--verify``): the levels and their one parser.

Kept apart from :mod:`xnatio.verify.content` so that checking an option does not load the HTTP
client and the comparison code (an upload without a server never needs them).
"""

from __future__ import annotations

from typing import Literal

from xnatio.errors import InputError

__all__ = ["VERIFY_LEVELS", "VerifyLevel", "verify_level"]

VerifyLevel = Literal["none", "listing", "deep"]
"""How an upload checks what landed: ``none``; ``listing`` (identity, sizes and digests, the
default); ``deep`` (also every data element of every stored file)."""
VERIFY_LEVELS: tuple[VerifyLevel, ...] = ("none", "listing", "deep")


def verify_level(value: bool | str) -> VerifyLevel:
    """A ``verify`` argument as a :data:`VerifyLevel` (True is ``listing``, False ``none``).

    Raises
    ------
    InputError
        Any other value.
    """
    if value is True:
        return "listing"
    if value is False:
        return "none"
    for level in VERIFY_LEVELS:
        if value == level:
            return level
    raise InputError(
        f"verify must be one of {', '.join(VERIFY_LEVELS)} (or True/False), not {value!r}"
    )
