"""De-identification in the stream: XNAT's DicomEdit 6 scripts and the PS3.15 Basic Profile.

A script is compiled once (:class:`Script`, every problem reported before anything is read);
an :class:`Anonymizer` applies one or more scripts, in order, to each file in two passes:
:meth:`Anonymizer.plan` reads the header and returns an :class:`Edit` whose exact length is
known, and :meth:`Edit.open`/:meth:`Edit.chunks` stream the edited file from the source without
holding its pixel data. See ``docs/anonymisation.md``.
"""

from xnatio.anonymize.editor import Change, Edit, EditedFile
from xnatio.anonymize.engine import XNAT_DEFAULT_SCRIPT, XNAT_VARIABLES, Anonymizer, Script
from xnatio.anonymize.errors import AnonymizeError, InstanceRejected, ScriptError
from xnatio.anonymize.functions import hash_uid

__all__ = [
    "XNAT_DEFAULT_SCRIPT",
    "XNAT_VARIABLES",
    "AnonymizeError",
    "Anonymizer",
    "Change",
    "Edit",
    "EditedFile",
    "InstanceRejected",
    "Script",
    "ScriptError",
    "hash_uid",
]
