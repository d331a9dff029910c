"""Run a child process without root's right to read everything, to meet real permission errors.

Root (the CI user) reads files whatever their mode, through CAP_DAC_READ_SEARCH and
CAP_DAC_OVERRIDE. ``setpriv`` starts the child as ``nobody`` with no supplementary groups and
therefore none of those capabilities, so a folder with mode 000 is as unreadable to it as to any
user. Run as another user, the child needs its files under a folder everyone can enter:
:func:`shared_folder` makes one (pytest's own temporary folders are private to root).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

NOBODY = 65534


def prefix() -> list[str]:
    """The command prefix that drops privileges (nothing when the tests do not run as root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to run a child without root's rights")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def xio_command(*args: str) -> list[str]:
    """``xio ARGS`` as an unprivileged child, with this test run's interpreter."""
    return [*prefix(), sys.executable, "-m", "xnatio", *args]


@contextmanager
def shared_folder() -> Iterator[Path]:
    """A new folder under the system's temporary folder that every user may enter and write.

    It is removed (by this process, as root) afterwards, whatever modes the test left in it.
    """
    path = Path(tempfile.mkdtemp(prefix="xnatio-unprivileged-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        # Top-down, so that each folder is opened up before the walk enters it.
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                folder = Path(root, name)
                if not folder.is_symlink():
                    folder.chmod(folder.stat().st_mode | stat.S_IRWXU)
        shutil.rmtree(path)
