"""DIMSE statuses as data: what each C-STORE status means, and whether sending again can help.

One table, :data:`STATUSES`, holds every status a Storage SCP may answer (DICOM PS3.4 annex B.2.3
for the Storage Service Class, PS3.7 annex C for the statuses of any DIMSE service), single codes
and ranges alike. Each entry has:

- a **category** (PS3.7 annex C): ``success``, ``warning`` (stored, with a remark) or ``failure``;
- a **retry class**, for a sender deciding what to do with a failure:

  ``none``
      The instance was stored (success or warning): nothing to retry.
  ``transient``
      The receiver could not store it *now*: it is out of resources (0xA7xx, PS3.4 B.2.3), hit a
      resource limitation (0x0213), failed in a way it does not explain (0x0110 processing
      failure: a full disk or a lost database connection look like this), or saw a Message ID
      clash (0x0210, which a fresh association cannot repeat). A bounded retry may succeed.
  ``permanent``
      Sending the same bytes again gives the same answer: the receiver cannot understand the
      data set (0xCxxx), it does not match its SOP class (0xA9xx), the SOP class is refused
      (0x0122), the sender is not authorised (0x0124), the instance is invalid (0x0117) or
      already there (0x0111), an argument or attribute is wrong, or the operation was
      cancelled. These are reported, not retried.

A failure code that is in neither the standard nor this table is ``transient``: nothing says
that it cannot succeed, so it gets the bounded retry rather than being given up at once.

XNAT's receiver answers 0xC000 for nearly every client-side problem and 0xA700 for server errors
(docs/xnat-behaviour.md §6.4), which this table classes as permanent and transient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "STATUSES",
    "Category",
    "RetryClass",
    "StatusClass",
    "StoreResponse",
    "lookup",
    "status_category",
    "status_meaning",
    "status_retry",
]

Category = Literal["success", "warning", "failure"]
RetryClass = Literal["none", "transient", "permanent"]


@dataclass(frozen=True, slots=True)
class StoreResponse:
    """The status of a C-STORE-RSP (or C-ECHO-RSP) and its optional error comment."""

    status: int
    error_comment: str = ""


@dataclass(frozen=True, slots=True)
class StatusClass:
    """One status code, or a range of codes, and what it means.

    Attributes
    ----------
    first, last
        The codes covered, inclusive (``first == last`` for a single code).
    category
        ``success``, ``warning`` or ``failure``.
    meaning
        In words, as the standard names it.
    retry
        ``none``, ``transient`` or ``permanent`` (see the module docstring).
    """

    first: int
    last: int
    category: Category
    meaning: str
    retry: RetryClass


def _one(code: int, category: Category, meaning: str, retry: RetryClass) -> StatusClass:
    return StatusClass(code, code, category, meaning, retry)


# Single codes first: a code inside a range (0xB000 in 0xB000-0xBFFF) takes its own entry.
STATUSES: tuple[StatusClass, ...] = (
    _one(0x0000, "success", "Success", "none"),
    # Warnings (PS3.4 B.2.3, PS3.7 annex C): the instance was stored.
    _one(0x0001, "warning", "Warning: Requested optional attributes are not supported", "none"),
    _one(0x0107, "warning", "Warning: Attribute list error", "none"),
    _one(0x0116, "warning", "Warning: Attribute value out of range", "none"),
    _one(0xB000, "warning", "Warning: Coercion of data elements", "none"),
    _one(0xB006, "warning", "Warning: Elements discarded", "none"),
    _one(0xB007, "warning", "Warning: Data set does not match SOP class", "none"),
    # Failures that a later attempt may get past.
    _one(0x0110, "failure", "Failure: Processing failure", "transient"),
    _one(0x0210, "failure", "Failure: Duplicate invocation", "transient"),
    _one(0x0213, "failure", "Failure: Resource limitation", "transient"),
    # Failures about the data or the sender's rights: the same request fails again.
    _one(0x0105, "failure", "Failure: No such attribute", "permanent"),
    _one(0x0106, "failure", "Failure: Invalid attribute value", "permanent"),
    _one(0x0111, "failure", "Failure: Duplicate SOP instance", "permanent"),
    _one(0x0112, "failure", "Failure: No such SOP instance", "permanent"),
    _one(0x0117, "failure", "Failure: Invalid SOP instance", "permanent"),
    _one(0x0118, "failure", "Failure: No such SOP class", "permanent"),
    _one(0x0119, "failure", "Failure: Class-instance conflict", "permanent"),
    _one(0x0120, "failure", "Failure: Missing attribute", "permanent"),
    _one(0x0121, "failure", "Failure: Missing attribute value", "permanent"),
    _one(0x0122, "failure", "Refused: SOP class not supported", "permanent"),
    _one(0x0124, "failure", "Refused: Not authorized", "permanent"),
    _one(0x0211, "failure", "Failure: Unrecognized operation", "permanent"),
    _one(0x0212, "failure", "Failure: Mistyped argument", "permanent"),
    _one(0xFE00, "failure", "Cancel", "permanent"),
    # Ranges of PS3.4 B.2.3.
    StatusClass(0xA700, 0xA7FF, "failure", "Refused: Out of resources", "transient"),
    StatusClass(0xA900, 0xA9FF, "failure", "Error: Data set does not match SOP class", "permanent"),
    StatusClass(0xB000, 0xBFFF, "warning", "Warning", "none"),
    StatusClass(0xC000, 0xCFFF, "failure", "Error: Cannot understand", "permanent"),
)

_SINGLE = {s.first: s for s in STATUSES if s.first == s.last}
_RANGES = tuple(s for s in STATUSES if s.first != s.last)


def lookup(status: int) -> StatusClass:
    """The entry of :data:`STATUSES` for ``status``; an unknown code is a transient failure.

    Examples
    --------
    >>> lookup(0xC012).retry, lookup(0xA702).retry, lookup(0xB006).category
    ('permanent', 'transient', 'warning')
    """
    found = _SINGLE.get(status)
    if found is not None:
        return found
    for entry in _RANGES:
        if entry.first <= status <= entry.last:
            return entry
    return _one(status, "failure", f"Unknown status 0x{status:04X}", "transient")


def status_category(status: int) -> Category:
    """Classify a C-STORE status (DICOM PS3.4 annex B.2.3, PS3.7 annex C).

    Parameters
    ----------
    status
        The Status (0000,0900) of a C-STORE-RSP.

    Returns
    -------
    str
        ``"success"`` for 0x0000; ``"warning"`` for 0x0001, 0x0107, 0x0116 and 0xB000-0xBFFF
        (coercion of data elements 0xB000, elements discarded 0xB006, data set does not match
        SOP class 0xB007); ``"failure"`` otherwise.
    """
    return lookup(status).category


def status_meaning(status: int) -> str:
    """The meaning of a C-STORE status in words (DICOM PS3.4 annex B.2.3, PS3.7 annex C).

    Examples
    --------
    >>> status_meaning(0xA700)
    'Refused: Out of resources'
    >>> status_meaning(0xC012)
    'Error: Cannot understand'
    """
    return lookup(status).meaning


def status_retry(status: int) -> RetryClass:
    """Whether sending again can help: ``none``, ``transient`` or ``permanent``.

    Examples
    --------
    >>> status_retry(0x0000), status_retry(0xA700), status_retry(0xC000), status_retry(0x0122)
    ('none', 'transient', 'permanent', 'permanent')
    """
    return lookup(status).retry
