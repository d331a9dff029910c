"""Errors of the de-identification engine; all are input errors (exit code 2)."""

from __future__ import annotations

from xnatio.errors import InputError

__all__ = ["AnonymizeError", "InstanceRejected", "ScriptError"]


class ScriptError(InputError):
    """A script that cannot be applied: a syntax error or a feature outside the subset.

    Raised while the script is compiled, before any file is read or sent. The message is one
    line and names the script, the line and the column.

    Attributes
    ----------
    line, column
        1-based position of the problem (0 when it concerns the whole script).
    """

    def __init__(self, message: str, line: int = 0, column: int = 0, source: str = "") -> None:
        where = source or "script"
        if line:
            where += f", line {line}"
            if column:
                where += f", column {column}"
        super().__init__(f"{where}: {message}")
        self.line = line
        self.column = column
        self.reason = message


class AnonymizeError(InputError):
    """A script could not be applied to one file (a value that does not fit, a bad regex...)."""


class InstanceRejected(InputError):
    """The script called ``reject[]`` for this instance: it must not be sent."""
