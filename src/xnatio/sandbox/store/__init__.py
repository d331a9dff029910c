"""The sandbox's data model: projects, prearchive, Direct-Archive, archive and resources.

Everything lives under one data folder: the files, and a SQLite index (``index.sqlite``, WAL
mode) that remembers rows, statuses, sizes, MD5 digests and each stored object's SOP Instance
UID. Restarting a store over the same folder keeps everything.

The rules follow docs/xnat-behaviour.md (cited by section, §n, throughout the package):
per-file import §3.4, background life cycle §3.5, archive conflicts §3.8, concurrent imports
§3.9, locations and listings §4, creation §5, DICOM routing §6.2, resources §7, commit endpoints
§9, the minimal model §10.

:class:`SandboxStore` puts together small parts, one concept each:

==================  ==============================================================================
``model``           errors, import parameters, statuses, archive targets and flags
``index``           the SQLite index: schema, connection, the one lock, the open transaction
``files``           the layout of the data folder, safe paths, file writes
``inflight``        work in progress: per-file locks, writers per session, archive steps
``core``            the three above as one ``Core``, and ``Part``, the base of the parts below
``config``          the site's DICOM routing rules
``catalog``         projects, subjects, experiments (and the archive's scan and resource rows)
``listings``        listings of archived sessions
``imports``         the import service's per-file step (:class:`ImportBatch`)
``prearchive``      prearchive rows: get-or-create, statuses, listings
``actions``         commit, build, reset, move, delete, the archive service
``archive``         archiving with XNAT's conflict and overwrite rules
``direct_archive``  Direct-Archive sessions
``ticker``          the background pass: build and auto-archive idle sessions
``resources``       files in resources
==================  ==============================================================================

Thread safety: one re-entrant lock guards the index and the in-memory records of work in
progress. It is held only for the get-or-create step and bookkeeping, never while bytes are
copied.
"""

from __future__ import annotations

from pathlib import Path

from xnatio.sandbox.store.actions import PrearchiveActions
from xnatio.sandbox.store.archive import Archiver
from xnatio.sandbox.store.catalog import Catalog
from xnatio.sandbox.store.config import RoutingConfig
from xnatio.sandbox.store.core import Core
from xnatio.sandbox.store.direct_archive import DirectArchive
from xnatio.sandbox.store.files import DataFolder
from xnatio.sandbox.store.imports import ImportBatch, Importer
from xnatio.sandbox.store.index import Index
from xnatio.sandbox.store.inflight import InFlight
from xnatio.sandbox.store.listings import ArchiveListings
from xnatio.sandbox.store.model import (
    ClientError,
    ImportParams,
    ServerError,
    StoreError,
    StoreFaults,
)
from xnatio.sandbox.store.prearchive import Prearchive
from xnatio.sandbox.store.resources import Resources
from xnatio.sandbox.store.ticker import Ticker

__all__ = [
    "ClientError",
    "ImportBatch",
    "ImportParams",
    "SandboxStore",
    "ServerError",
    "StoreError",
    "StoreFaults",
]


class SandboxStore:
    """Files plus a SQLite index under ``data_dir``: the state of an XNAT sandbox.

    The store's API is flat (``store.commit_prearchive(...)``, ``store.scan_files(...)``) and
    each name is bound to the part that implements it; the parts are attributes too.

    Parameters
    ----------
    data_dir
        Folder for every file the store writes; created if missing.
    idle_interval
        Seconds without new files after which :meth:`tick` builds a prearchive session or
        archives a Direct-Archive session (XNAT's ``sessionXmlRebuilderInterval``, §3.5).
    faults
        Fault knobs; kept by reference so they can be changed at run time.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        idle_interval: float = 300.0,
        faults: StoreFaults | None = None,
    ) -> None:
        self.faults = faults if faults is not None else StoreFaults()
        self.files = DataFolder(Path(data_dir), self.faults)
        self.data_dir = self.files.root
        self.index = Index(self.data_dir / "index.sqlite")
        # The lock and the connection, under the names tests use to reach into the index.
        self._lock = self.index.lock
        self._db = self.index.db
        core = Core(self.index, self.files, InFlight(self.index.lock))
        # XNAT refreshes lastmod at most every 15 s; short test intervals need a finer step.
        lastmod_step = min(15.0, idle_interval / 10)
        self.config = RoutingConfig(core)
        self.catalog = catalog = Catalog(core)
        self.listings = ArchiveListings(core, catalog)
        self.archiver = archiver = Archiver(core, catalog)
        self.prearchive = prearchive = Prearchive(core, catalog, lastmod_step=lastmod_step)
        self.actions = PrearchiveActions(core, catalog, prearchive, archiver)
        self.direct_archive = direct = DirectArchive(core, catalog, prearchive, archiver)
        self.importer = Importer(core, catalog, self.config, prearchive, direct)
        self.resources = Resources(core, catalog)
        self.ticker = Ticker(
            core, catalog, prearchive, direct, archiver, idle_interval=idle_interval
        )
        self._bind_api()

    def _bind_api(self) -> None:
        """The flat API: each public name is the method of the part that owns the concept."""
        # Site configuration: DICOM routing rules (§6.2).
        self.get_routing_rules = self.config.text
        self.set_routing_rules = self.config.put
        self.routing_rules_info = self.config.info
        self.set_routing_rules_enabled = self.config.set_enabled
        # Projects, subjects, experiments (§5).
        self.create_project = self.catalog.create_project
        self.project_exists = self.catalog.project_exists
        self.set_prearchive_code = self.catalog.set_prearchive_code
        self.get_prearchive_code = self.catalog.get_prearchive_code
        self.list_projects = self.catalog.list_projects
        self.put_subject = self.catalog.put_subject
        self.put_experiment = self.catalog.put_experiment
        self.subjects = self.catalog.subjects
        self.experiments = self.catalog.experiments
        self.experiment_ref = self.catalog.experiment_ref
        self.subject_project = self.catalog.subject_project
        # Archived sessions (§4.2).
        self.scans = self.listings.scans
        self.scan_resources = self.listings.scan_resources
        self.experiment_item = self.listings.experiment_item
        self.scan_files = self.listings.scan_files
        self.scan_file_uids = self.listings.scan_file_uids
        # The prearchive (§4.2) and what clients do to it (§9).
        self.prearchive_rows = self.prearchive.rows
        self.prearchive_session = self.prearchive.session
        self.prearchive_files = self.prearchive.files
        self.prearchive_scans = self.prearchive.scans
        self.prearchive_scan_resources = self.prearchive.scan_resources
        self.prearchive_scan_files = self.prearchive.scan_files
        self.prearchive_file_path = self.prearchive.file_path
        self.commit_prearchive = self.actions.commit
        self.build_prearchive = self.actions.build
        self.reset_prearchive_status = self.actions.reset_status
        self.move_prearchive = self.actions.move
        self.delete_prearchive = self.actions.delete
        self.archive_service = self.actions.archive_service
        self.commit_import = self.actions.commit_import
        # Direct-Archive (§3.5, §4.1) and the background pass (§3.5, §10).
        self.direct_archive_status = self.direct_archive.status
        self.direct_archive_trigger = self.direct_archive.trigger
        self.tick = self.ticker.tick
        # Resources (§7).
        self.put_resource_file = self.resources.put_file
        self.delete_file = self.resources.delete_file
        self.resource_files = self.resources.files
        self.resource_file_path = self.resources.file_path

    @property
    def idle_interval(self) -> float:
        """Seconds without new files before a session counts as complete."""
        return self.ticker.idle_interval

    def begin_import(self, params: ImportParams) -> ImportBatch:
        """Start one import request; use the result as a context manager."""
        return ImportBatch(self.importer, self.index, params)

    def close(self) -> None:
        """Commit the index and close it."""
        self.index.close()
