"""Benchmark harness for xnatio: scenarios, baselines and a WAN-shaping TCP proxy."""

from __future__ import annotations
