"""The source of a discovered session: files in folders and archives anywhere under one root."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import BinaryIO

from xnatio.inventory import DicomFile, Inventory
from xnatio.inventory.sources import Lister, open_lister
from xnatio.many.spec import Gathered

__all__ = ["GatheredSource", "gathered_inventory"]


class GatheredSource:
    """A :class:`~xnatio.inventory.Source` over loose files and archive members under ``root``.

    Archives are opened on first use (a ``.tar.gz`` is extracted then) and closed by
    :meth:`close`. Safe to use from several threads.

    Parameters
    ----------
    gathered
        The session's files and where each one lies.
    """

    def __init__(self, gathered: Gathered) -> None:
        self.root = Path(gathered.root)
        self._locations = gathered.locations
        self._archives: dict[str, Lister] = {}
        self._lock = threading.Lock()

    def open(self, path: str) -> BinaryIO:
        """Open the file with display path ``path`` (a :attr:`DicomFile.path`)."""
        archive, member = self._locations[path]
        if not archive:
            return open(self.root / member, "rb")
        with self._lock:
            lister = self._archives.get(archive)
            if lister is None:
                lister = open_lister(self.root / archive)
                self._archives[archive] = lister
        return lister.open(member)

    def close(self) -> None:
        """Close every archive opened (removes any extraction folder)."""
        with self._lock:
            archives = list(self._archives.values())
            self._archives.clear()
        for lister in archives:
            lister.close()


def gathered_inventory(gathered: Gathered) -> Inventory:
    """An inventory of a discovered session (nothing is opened until a file is read)."""
    files: list[DicomFile] = list(gathered.files)
    return Inventory(source=GatheredSource(gathered), files=files)
