"""XNAT-compatible sandbox server for tests, benchmarks and offline trials."""

from __future__ import annotations

__all__: list[str] = []
