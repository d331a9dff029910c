"""The public face of the engine: compile scripts once, then plan and stream each file.

>>> from xnatio.anonymize import Anonymizer, Script
>>> site = Script.parse('version "6.1"\\n(0010,0010) := subject\\n', source="site script")
>>> anon = Anonymizer([site], {"project": "P1", "subject": "S01", "session": "S01_MR1"})
>>> sorted(anon.variables_needed)
['subject']
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xnatio.anonymize.editor import Edit, build_edit, read_plan_input
from xnatio.anonymize.errors import AnonymizeError, ScriptError
from xnatio.anonymize.evaluate import Run, guard, horizon, run_statements
from xnatio.anonymize.nodes import Statement
from xnatio.anonymize.parser import parse
from xnatio.dicom.reader import DicomFormatError

__all__ = ["XNAT_DEFAULT_SCRIPT", "XNAT_VARIABLES", "Anonymizer", "Script"]

# The variables XNAT gives every script (mizer's BaseMizerService.createContext).
XNAT_VARIABLES = ("project", "subject", "session")

#: XNAT's built-in default site-wide script (what ``GET /xapi/anonymize/default`` answers, and
#: what a fresh XNAT enables): the project as Study Description, unless Unassigned; the subject
#: and session labels as Patient's Name and Patient ID.
XNAT_DEFAULT_SCRIPT = (
    'version "6.1"\n'
    'project != "Unassigned" ? (0008,1030) := project\n'
    "(0010,0010) := subject\n"
    "(0010,0020) := session\n"
)


@dataclass(frozen=True, slots=True)
class Script:
    """A compiled DicomEdit 6 script.

    Attributes
    ----------
    text
        The script as given.
    source
        Its name in messages (``"site script"``, a file name...).
    statements
        The compiled statements.
    free_variables
        Variables read before the script sets them (name -> line, column): they must be given.
    sha256
        SHA-256 of the text (UTF-8), for journals and reports.
    """

    text: str
    source: str
    statements: tuple[Statement, ...]
    free_variables: Mapping[str, tuple[int, int]]
    sha256: str

    @classmethod
    def parse(cls, text: str, *, source: str = "script") -> Script:
        """Compile ``text``; every problem is a one-line :class:`ScriptError`."""
        statements, free = parse(text, source=source)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return cls(text, source, statements, free, digest)

    @classmethod
    def from_file(cls, path: str | Path) -> Script:
        """Compile the script in the file ``path`` (UTF-8)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScriptError(f"cannot read the script: {exc}", source=str(p)) from None
        return cls.parse(text, source=p.name)


class Anonymizer:
    """Scripts applied in order (XNAT: the site script, then the project script) to each file.

    Parameters
    ----------
    scripts
        Compiled scripts, applied in this order; each has its own variables.
    variables
        Values of the built-in variables (``project``, ``subject``, ``session``; others as the
        scripts need).
    salt
        Secret that makes ``newUID``/``mapUID`` differ between runs; random when ``None``.
    echo
        Receives each ``echo`` line; dropped when ``None``.

    Raises
    ------
    ScriptError
        No script, or a script reads a variable that is neither given nor set by the script.
    """

    def __init__(
        self,
        scripts: Sequence[Script],
        variables: Mapping[str, str],
        *,
        salt: str | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        if not scripts:
            raise ScriptError("no script to apply")
        for script in scripts:
            for name, (line, column) in script.free_variables.items():
                if name not in variables:
                    raise ScriptError(f"unknown variable {name!r}", line, column, script.source)
        self.scripts = tuple(scripts)
        self.variables = dict(variables)
        self.salt = salt if salt is not None else secrets.token_hex(16)
        self.echo = echo
        self.horizon = max(horizon(s.statements) for s in self.scripts)
        self._guards = [[guard(st) for st in s.statements] for s in self.scripts]

    @property
    def variables_needed(self) -> frozenset[str]:
        """The given variables the scripts read."""
        return frozenset(n for s in self.scripts for n in s.free_variables)

    @property
    def sha256(self) -> str:
        """One digest of the scripts, in order (for the journal: resume must not mix scripts)."""
        h = hashlib.sha256()
        for s in self.scripts:
            h.update(s.sha256.encode("ascii") + b"\n")
        return h.hexdigest()

    def plan(
        self, stream: BinaryIO, *, key: str = "", size: int | None = None, changes: bool = True
    ) -> Edit:
        """Read a file's header, apply the scripts and return the edit (exact length known).

        Parameters
        ----------
        stream
            The file from its first byte; read forward (seekable streams skip faster).
        key
            Names the file for ``newUID`` (the same key gives the same UIDs in one run).
        size
            The file's size, when known (otherwise taken from the stream).
        changes
            List the changes (:attr:`Edit.changes`); False saves the time when nobody shows them.

        Raises
        ------
        AnonymizeError
            A script could not be applied to this file; InstanceRejected for ``reject[]``.
        """
        try:
            pin = read_plan_input(stream, self.horizon)
        except DicomFormatError as exc:
            raise AnonymizeError(f"cannot read the DICOM header: {exc}") from None
        for script, guards in zip(self.scripts, self._guards, strict=True):
            run = Run(pin.ds, script.source, dict(self.variables), self.salt, key, self.echo)
            run_statements(run, script.statements, guards)
        return build_edit(pin, stream, size, changes=changes)

    def plan_file(self, path: str | Path) -> Edit:
        """:meth:`plan` for a file on disk (its path is the ``newUID`` key)."""
        with open(path, "rb") as f:
            return self.plan(f, key=str(path))

    def open_edited(self, path: str | Path, expected_length: int | None = None) -> BinaryIO:
        """Plan ``path`` again and open its edited bytes; for archive members of known size.

        Raises
        ------
        AnonymizeError
            The new plan's length differs from ``expected_length`` (the file changed).
        """
        f = open(path, "rb")  # noqa: SIM115 - handed to the caller through the edited file
        try:
            edit = self.plan(f, key=str(path))
            if expected_length is not None and edit.length != expected_length:
                raise AnonymizeError(f"{path}: changed since it was planned for anonymisation")
            f.seek(0)
        except BaseException:
            f.close()
            raise
        return _Closing(edit, f)  # type: ignore[return-value]


class _Closing:
    """An edited file that closes its source with it."""

    def __init__(self, edit: Edit, source: BinaryIO) -> None:
        self._source = source
        self._file = edit.open(source)

    def read(self, n: int = -1) -> bytes:
        return self._file.read(n)

    def readinto(self, buffer: memoryview | bytearray) -> int:
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()
        self._source.close()

    def __enter__(self) -> _Closing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
