"""Fault injection for the sandbox: make the server misbehave on purpose, on demand.

Every fault is armed for a number of upcoming events (requests, instances) and disarms itself once
used up, so a test can say "the next two imports get a 503" and then watch the client recover.
Faults are set in Python through :class:`Faults`, at start through ``SandboxConfig.faults``, or
over HTTP with ``PUT /sandbox/faults`` and a JSON body (see :meth:`Faults.apply`); all three take
the same JSON-like mapping.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

__all__ = ["DropRule", "Faults", "GatewayTimeoutRule", "HttpErrorRule", "ScpAbortRule"]


class _StoreFaultsLike(Protocol):
    file_delay: float
    disk_full: bool


@dataclass
class DropRule:
    """Close the connection after ``after_bytes`` bytes of the request body.

    Applies to the next ``count`` requests whose path starts with ``path``.
    """

    after_bytes: int = 0
    count: int = 1
    path: str = "/data/services/import"


@dataclass
class HttpErrorRule:
    """Answer ``status`` (500, 502 or 503) to the next ``count`` requests under ``path``."""

    status: int = 503
    count: int = 1
    path: str = "/"


@dataclass
class GatewayTimeoutRule:
    """Answer 504 after ``after_seconds`` while the request carries on in the background.

    Applies to the next ``count`` requests under ``path``, like a proxy whose read timeout
    is shorter than the import.
    """

    after_seconds: float = 1.0
    count: int = 1
    path: str = "/data/services/import"


@dataclass
class ScpAbortRule:
    """Abort the association that carries the instance after the next ``after_instances``.

    Each abort uses up one of ``count``; the instance counter starts again after each abort.
    """

    after_instances: int = 0
    count: int = 1


class Faults:
    """The sandbox's fault switches; thread-safe, shared by the HTTP server and the SCP.

    Parameters
    ----------
    store_faults
        The store's own switches (``file_delay``, ``disk_full``); changed in place.
    expire_sessions
        Called by :meth:`expire_sessions` to drop every HTTP session.
    """

    def __init__(
        self,
        store_faults: _StoreFaultsLike | None = None,
        expire_sessions: Callable[[], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._store_faults = store_faults
        self._expire = expire_sessions
        self._drops: list[DropRule] = []
        self._errors: list[HttpErrorRule] = []
        self._timeouts: list[GatewayTimeoutRule] = []
        self._scp_abort: ScpAbortRule | None = None
        self._scp_seen = 0
        self._scp_status_code = 0xA700
        self._scp_status_count = 0

    def __repr__(self) -> str:
        return f"Faults({self.snapshot()!r})"

    # -- HTTP -----------------------------------------------------------------------------------

    def drop_connection(
        self, after_bytes: int = 0, *, count: int = 1, path: str = "/data/services/import"
    ) -> None:
        """Drop the connection after ``after_bytes`` body bytes on the next ``count`` requests."""
        with self._lock:
            self._drops.append(DropRule(int(after_bytes), int(count), path))

    def http_error(self, status: int = 503, *, count: int = 1, path: str = "/") -> None:
        """Answer ``status`` to the next ``count`` requests whose path starts with ``path``."""
        if not 400 <= int(status) <= 599:
            raise ValueError(f"not an error status: {status}")
        with self._lock:
            self._errors.append(HttpErrorRule(int(status), int(count), path))

    def gateway_timeout(
        self, after_seconds: float = 1.0, *, count: int = 1, path: str = "/data/services/import"
    ) -> None:
        """Answer 504 after ``after_seconds`` on the next ``count`` requests; the work goes on."""
        with self._lock:
            self._timeouts.append(GatewayTimeoutRule(float(after_seconds), int(count), path))

    def take_drop(self, path: str) -> DropRule | None:
        """Use up one drop rule matching ``path``, if any (called by the HTTP server)."""
        with self._lock:
            return _take(self._drops, path)

    def take_http_error(self, path: str) -> HttpErrorRule | None:
        """Use up one error rule matching ``path``, if any (called by the HTTP server)."""
        with self._lock:
            return _take(self._errors, path)

    def take_gateway_timeout(self, path: str) -> GatewayTimeoutRule | None:
        """Use up one 504 rule matching ``path``, if any (called by the HTTP server)."""
        with self._lock:
            return _take(self._timeouts, path)

    # -- store and sessions ---------------------------------------------------------------------

    @property
    def file_delay(self) -> float:
        """Seconds the store sleeps before writing each file."""
        return self._store_faults.file_delay if self._store_faults is not None else 0.0

    @file_delay.setter
    def file_delay(self, seconds: float) -> None:
        if self._store_faults is None:
            raise RuntimeError("the store is not running")
        self._store_faults.file_delay = float(seconds)

    @property
    def disk_full(self) -> bool:
        """Whether the store fails every write as if the disk were full."""
        return self._store_faults.disk_full if self._store_faults is not None else False

    @disk_full.setter
    def disk_full(self, value: bool) -> None:
        if self._store_faults is None:
            raise RuntimeError("the store is not running")
        self._store_faults.disk_full = bool(value)

    def expire_sessions(self) -> None:
        """End every HTTP session now, as if each had been idle past the timeout."""
        if self._expire is not None:
            self._expire()

    # -- SCP ------------------------------------------------------------------------------------

    def scp_abort(self, after_instances: int = 0, *, count: int = 1) -> None:
        """Abort associations: the instance after the next ``after_instances`` triggers it."""
        with self._lock:
            self._scp_abort = ScpAbortRule(int(after_instances), int(count))
            self._scp_seen = 0

    def scp_status(self, status: int = 0xA700, *, count: int = 1) -> None:
        """Answer ``status`` instead of storing the next ``count`` instances."""
        with self._lock:
            self._scp_status_code = int(status)
            self._scp_status_count = int(count)

    def take_scp_instance(self) -> tuple[bool, int | None]:
        """Account for one received instance; return (abort now?, status to answer instead)."""
        with self._lock:
            rule = self._scp_abort
            if rule is not None and rule.count > 0:
                if self._scp_seen >= rule.after_instances:
                    rule.count -= 1
                    self._scp_seen = 0
                    if rule.count <= 0:
                        self._scp_abort = None
                    return True, None
                self._scp_seen += 1
            if self._scp_status_count > 0:
                self._scp_status_count -= 1
                return False, self._scp_status_code
            return False, None

    # -- all at once ----------------------------------------------------------------------------

    def clear(self) -> None:
        """Disarm every fault and reset the store's switches."""
        with self._lock:
            self._drops.clear()
            self._errors.clear()
            self._timeouts.clear()
            self._scp_abort = None
            self._scp_seen = 0
            self._scp_status_count = 0
        if self._store_faults is not None:
            self._store_faults.file_delay = 0.0
            self._store_faults.disk_full = False

    def apply(self, spec: Mapping[str, Any]) -> None:
        """Arm faults from a JSON-like mapping (the body of ``PUT /sandbox/faults``).

        Keys (all optional, applied in this order): ``clear`` (true), ``drop_connection``,
        ``http_error``, ``gateway_timeout``, ``scp_abort``, ``scp_status`` (each an object with the
        keyword arguments of the method of the same name, or a list of such objects),
        ``file_delay`` (seconds), ``disk_full`` (bool), ``expire_sessions`` (true).

        Raises
        ------
        ValueError
            On an unknown key or a malformed value; nothing is applied then.
        """
        known = {
            "clear",
            "drop_connection",
            "http_error",
            "gateway_timeout",
            "scp_abort",
            "scp_status",
            "file_delay",
            "disk_full",
            "expire_sessions",
        }
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        calls: list[Callable[[], None]] = []
        if spec.get("clear"):
            calls.append(self.clear)
        methods: dict[str, Callable[..., None]] = {
            "drop_connection": self.drop_connection,
            "http_error": self.http_error,
            "gateway_timeout": self.gateway_timeout,
            "scp_abort": self.scp_abort,
            "scp_status": self.scp_status,
        }
        for key, method in methods.items():
            if key not in spec:
                continue
            value = spec[key]
            items = value if isinstance(value, list) else [value]
            for item in items:
                if not isinstance(item, Mapping):
                    raise ValueError(f"{key}: expected an object, got {item!r}")
                calls.append(_bind(method, dict(item)))
        if "file_delay" in spec:
            delay = float(spec["file_delay"])
            calls.append(lambda: setattr(self, "file_delay", delay))
        if "disk_full" in spec:
            full = spec["disk_full"]
            if not isinstance(full, bool):
                raise ValueError("disk_full: expected true or false")
            calls.append(lambda: setattr(self, "disk_full", full))
        if spec.get("expire_sessions"):
            calls.append(self.expire_sessions)
        for call in calls:
            call()

    def snapshot(self) -> dict[str, Any]:
        """The armed faults as a JSON-ready dict (the body of ``GET /sandbox/faults``)."""
        with self._lock:
            return {
                "drop_connection": [asdict(r) for r in self._drops],
                "http_error": [asdict(r) for r in self._errors],
                "gateway_timeout": [asdict(r) for r in self._timeouts],
                "scp_abort": asdict(self._scp_abort) if self._scp_abort else None,
                "scp_status": {"status": self._scp_status_code, "count": self._scp_status_count}
                if self._scp_status_count
                else None,
                "file_delay": self.file_delay,
                "disk_full": self.disk_full,
            }


_Rule = TypeVar("_Rule", DropRule, HttpErrorRule, GatewayTimeoutRule)


def _take(rules: list[_Rule], path: str) -> _Rule | None:
    for rule in rules:
        if path.startswith(rule.path):
            rule.count -= 1
            if rule.count <= 0:
                rules.remove(rule)
            return rule
    return None


def _bind(method: Callable[..., None], kwargs: dict[str, Any]) -> Callable[[], None]:
    # Validate the arguments now, so a bad spec applies nothing.
    try:
        inspect.signature(method).bind(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{method.__name__}: {exc}") from None
    return lambda: method(**kwargs)
