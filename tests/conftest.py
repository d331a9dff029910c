"""Shared fixtures: a real sandbox server on loopback, on free ports, with short timers."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xnatio.sandbox import Sandbox, SandboxConfig

# pynetdicom installs console scripts named storescp, storescu and echoscu into the virtualenv;
# with the venv activated they come first on PATH. The tests mean DCMTK's tools of those names.
_VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))
os.environ["PATH"] = os.pathsep.join(
    d
    for d in os.environ.get("PATH", "").split(os.pathsep)
    if os.path.abspath(d or ".") != _VENV_BIN
)

# Short timers so background behaviour (auto-build, auto-archive) shows up within a test.
SANDBOX_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "dicom_port": None,
    "user": "admin",
    "password": "admin",
    "projects": ("P1",),
    "ticker_interval": 0.2,
    "idle_interval": 1.0,
}


@pytest.fixture
def make_sandbox(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    """Factory: ``make_sandbox(**SandboxConfig overrides)`` starts a sandbox, stopped at teardown.

    Each call gets a fresh data folder under ``tmp_path`` unless ``data_dir`` is given.
    ``dicom_port=0`` adds a DICOM SCP on a free port.
    """
    started: list[Sandbox] = []

    def factory(**overrides: Any) -> Sandbox:
        settings = {**SANDBOX_DEFAULTS, **overrides}
        settings.setdefault("data_dir", tmp_path / f"sandbox-{len(started)}")
        sandbox = Sandbox(SandboxConfig(**settings))
        sandbox.start()
        started.append(sandbox)
        return sandbox

    yield factory
    for sandbox in reversed(started):
        sandbox.stop()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """A running sandbox: project ``P1``, user admin/admin, HTTP only, short timers."""
    return make_sandbox()


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads keep journals in the user's cache folder and read profiles from the user's
    config folder: give every test its own (empty) ones."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    for name in ("XNATIO_PROFILE", "XNATIO_CONFIG"):
        monkeypatch.delenv(name, raising=False)
