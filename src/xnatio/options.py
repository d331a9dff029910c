"""Transport settings as immutable value objects (in the style of httpx's ``Timeout``/``Limits``).

:class:`RestOptions` and :class:`DicomOptions` carry everything that is specific to one transport;
:func:`xnatio.upload_session` takes either. The seed's keyword-argument entry points
(:func:`~xnatio.upload_dicom_parallel_rest`, :func:`~xnatio.send_dicom_store`) build them from their
arguments, so both spellings reach the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from xnatio.errors import InputError

if TYPE_CHECKING:  # ssl is loaded when a TLS context is made (start-up time)
    import ssl

__all__ = [
    "AUTO_BATCHES_PER_WORKER",
    "AUTO_MIN_FILES",
    "ArchiveFormat",
    "Compress",
    "DicomOptions",
    "DicomTls",
    "ImportHandler",
    "Overwrite",
    "RestOptions",
    "check_seconds",
    "parse_workers",
]

Overwrite = Literal["none", "append", "delete"]
ArchiveFormat = Literal["tar", "zip"]
ImportHandler = Literal["DICOM-zip", "gradual-DICOM"]
Compress = Literal["auto", "deflate", "none"]

#: With ``--upload-workers auto``: batches cut per worker of the ceiling, at most...
AUTO_BATCHES_PER_WORKER = 4
#: ...and files per batch, at least (:meth:`RestOptions.batches_for`).
AUTO_MIN_FILES = 50


def check_seconds(name: str, value: float, *, minimum: float = 0.0) -> float:
    """Return ``value`` if it is a finite number of seconds of at least ``minimum``.

    Raises
    ------
    InputError
        For NaN, infinity or a value below ``minimum``, naming the option.
    """
    if not isinstance(value, int | float) or not math.isfinite(value) or value < minimum:
        raise InputError(f"{name} must be a finite number of seconds >= {minimum:g}, not {value!r}")
    return float(value)


def parse_workers(text: str | int) -> tuple[int, bool]:
    """``--upload-workers``: ``N`` (N at once), ``auto`` (adaptive, at most 42) or ``auto:N``.

    Returns
    -------
    tuple
        The worker count (the ceiling when adaptive) and whether it is adaptive.

    Raises
    ------
    InputError
        For anything else, or a count below 1.
    """
    spec = str(text).strip().lower()
    adaptive = spec == "auto" or spec.startswith("auto:")
    count = spec[5:] if spec.startswith("auto:") else ("42" if adaptive else spec)
    if not count.isdigit() or int(count) < 1:
        raise InputError(
            f"--upload-workers must be a number of at least 1, auto or auto:N, not {text!r}"
        )
    return int(count), adaptive


@dataclass(frozen=True, slots=True)
class RestOptions:
    """Settings of the REST transport (XNAT's import service, docs/xnat-behaviour.md §3).

    Attributes
    ----------
    num_batches, upload_workers
        Batches to cut the session into, and how many are sent at once (with
        ``adaptive_workers``, the most that may be sent at once, and ``num_batches`` the fewest
        batches: see :meth:`batches_for`).
    adaptive_workers
        Let a controller choose how many batches are sent at once, between 1 and
        ``upload_workers``, from the throughput and the server's answers measured during the
        upload (``--upload-workers auto``; :mod:`xnatio.transport.adaptive`). It changes the
        capacity of the upload's connection budget, which every upload of an ``upload-many`` run
        shares.
    archive_workers
        Accepted for compatibility with earlier xnatio versions, which wrote archives to disk
        before sending. Batches are now streamed by the upload workers while they send, so there
        is no separate archiving pool to size; the value is ignored.
    archive_format
        ``tar`` (default) or ``zip`` request bodies when they are not compressed.
    compress
        ``auto`` (default): zip bodies sent chunked whose entries are deflated only while
        measurements during the upload show that the link, not the CPU, limits it
        (:mod:`xnatio.transport.compression`); ``deflate``: always deflate (zlib level 1);
        ``none``: no compression, ``archive_format`` bodies with a Content-Length. Compressed
        bodies are always zip: XNAT takes no other format without a Content-Length
        (docs/xnat-behaviour.md §3.2).
    bwlimit
        Bytes per second for all request bodies of the upload together (``--bwlimit``), or
        None for no limit.
    timeout
        Seconds allowed for each request.
    overwrite
        ``none``: the session must be new. ``append``: add to an existing session, sending only
        the instances it lacks. ``delete``: replace files that exist with the same name.
    direct_archive
        Use Direct-Archive (brand-new sessions only) instead of prearchive plus commit.
    import_handler
        ``DICOM-zip`` (batches) or ``gradual-DICOM`` (one request per file).
    max_attempts
        Requests per batch before it counts as failed (connection errors, 429, 5xx, timeouts).
    """

    num_batches: int = 42
    upload_workers: int = 42
    archive_workers: int = 5
    archive_format: ArchiveFormat = "tar"
    compress: Compress = "auto"
    adaptive_workers: bool = False
    bwlimit: float | None = None
    timeout: float = 10800.0
    overwrite: Overwrite = "none"
    direct_archive: bool = False
    import_handler: ImportHandler = "DICOM-zip"
    max_attempts: int = 5

    def batches_for(self, files: int) -> int:
        """How many batches to cut ``files`` files into.

        ``num_batches``; with ``adaptive_workers``, more for a large session: up to
        :data:`AUTO_BATCHES_PER_WORKER` per worker of the ceiling, each of at least
        :data:`AUTO_MIN_FILES` files. The controller can only judge a capacity from answers, which
        come when a batch ends, and the last batches run with few connections busy: batches of a
        few seconds each keep both the ramp and the tail short, where 42 large ones cost most of
        a batch's time in each.
        """
        if not self.adaptive_workers:
            return self.num_batches
        small = min(AUTO_BATCHES_PER_WORKER * self.upload_workers, files // AUTO_MIN_FILES)
        return max(self.num_batches, small)

    def check(self) -> None:
        """Raise :class:`~xnatio.errors.InputError` for a setting that cannot work."""
        if self.overwrite not in ("none", "append", "delete"):
            raise InputError(f"--overwrite must be none, append or delete, not {self.overwrite!r}")
        if self.archive_format not in ("tar", "zip"):
            raise InputError(f"--archive-format must be tar or zip, not {self.archive_format!r}")
        if self.compress not in ("auto", "deflate", "none"):
            raise InputError(f"--compress must be auto, deflate or none, not {self.compress!r}")
        if self.bwlimit is not None and (
            not isinstance(self.bwlimit, int | float)
            or not math.isfinite(self.bwlimit)
            or self.bwlimit < 1024
        ):
            raise InputError(
                f"--bwlimit must be at least 1024 bytes per second, not {self.bwlimit!r}"
            )
        if self.import_handler not in ("DICOM-zip", "gradual-DICOM"):
            raise InputError(
                f"--import-handler must be DICOM-zip or gradual-DICOM, not {self.import_handler!r}"
            )
        if self.num_batches < 1:
            raise InputError("--num-batches must be at least 1")
        if self.upload_workers < 1:
            raise InputError("--upload-workers must be at least 1")
        if self.max_attempts < 1:
            raise InputError("max_attempts must be at least 1")
        check_seconds("--timeout", self.timeout, minimum=0.001)


@dataclass(frozen=True, slots=True)
class DicomTls:
    """TLS settings for the DICOM connection (DICOM PS3.15 annex B.1).

    Attributes
    ----------
    ca
        CA bundle that signs the receiver's certificate; the system store when ``None``.
    cert, key
        Our client certificate and private key, for receivers that require them.
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        """An :class:`ssl.SSLContext` that verifies the receiver and presents our certificate."""
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.cert is not None:
            ctx.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        return ctx


@dataclass(frozen=True, slots=True)
class DicomOptions:
    """Settings of the C-STORE transport (XNAT's DICOM receiver, docs/xnat-behaviour.md §6).

    Attributes
    ----------
    host, port
        The receiver (a Storage SCP: XNAT's, or any other).
    called_aet, calling_aet
        The receiver's AE title and ours.
    associations
        Parallel associations (never more than there are files); ``--num-batches`` on the
        command line.
    routing_tags
        Put ``Project:P Subject:S Session:E`` in Patient Comments (0010,4000) of the outgoing
        data so XNAT files it in the right place. The source files are never modified.
    tls
        Use TLS with these settings.
    timeout
        Seconds allowed to connect and for each answer from the receiver.
    max_attempts
        C-STORE attempts per instance.
    tcp_quickack
        On Linux, keep ``TCP_QUICKACK`` set so a receiver still using Nagle's algorithm is not
        stalled by our delayed ACKs.
    wait
        Seconds to wait for XNAT to build and archive the session before verifying it (and, on
        a resume, for an earlier session to settle before looking at it).
    journal_interval, journal_records
        The journal is written at most every ``journal_interval`` seconds, or sooner when this
        many confirmed instances are pending.
    """

    host: str
    port: int = 8104
    called_aet: str = "XNAT"
    calling_aet: str = "XNATIO"
    associations: int = 45
    routing_tags: bool = True
    tls: DicomTls | None = None
    timeout: float = 60.0
    max_attempts: int = 3
    tcp_quickack: bool = True
    wait: float = 600.0
    journal_interval: float = 0.5
    journal_records: int = 256

    def check(self) -> None:
        """Raise :class:`~xnatio.errors.InputError` for a setting that cannot work."""
        if self.associations < 1:
            raise InputError("--num-batches must be at least 1")
        if self.max_attempts < 1:
            raise InputError("max_attempts must be at least 1")
        if not 0 < self.port < 65536:
            raise InputError(f"DICOM port {self.port} is not a port number (1-65535)")
        if self.journal_records < 1:
            raise InputError("--journal-chunk must be at least 1")
        check_seconds("--timeout", self.timeout, minimum=0.001)
        check_seconds("--wait", self.wait)
        check_seconds("journal_interval", self.journal_interval, minimum=0.001)
