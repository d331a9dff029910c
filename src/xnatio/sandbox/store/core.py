"""What every part of the store works with: the index, the data folder and the work in progress."""

from __future__ import annotations

from dataclasses import dataclass, field

from xnatio.sandbox.store.files import DataFolder
from xnatio.sandbox.store.index import Index
from xnatio.sandbox.store.inflight import InFlight

__all__ = ["Core", "Part"]


@dataclass(frozen=True)
class Core:
    """The persistence layer and the in-memory record of work in progress, shared by all parts.

    Attributes
    ----------
    index
        The SQLite index and its lock.
    files
        The data folder.
    inflight
        Files being written and sessions being archived (guarded by the index lock).
    """

    index: Index
    files: DataFolder
    inflight: InFlight


@dataclass(eq=False, repr=False)
class Part:
    """Base of the store's parts: a dataclass whose fields name the parts it works with.

    The core's members are also kept as private attributes, so the import path reads one
    attribute where it would read two.

    Attributes
    ----------
    core
        What the parts share.
    """

    core: Core
    _index: Index = field(init=False)
    _files: DataFolder = field(init=False)
    _inflight: InFlight = field(init=False)

    def __post_init__(self) -> None:
        self._index = self.core.index
        self._files = self.core.files
        self._inflight = self.core.inflight
