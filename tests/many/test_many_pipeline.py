"""The local pipeline's scheduling (pure logic: prepare and upload replaced by recorders)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from xnatio.budget import LocalBudget
from xnatio.config import XnatConfig
from xnatio.many import local
from xnatio.many.outcome import SessionOutcome
from xnatio.many.plan import PlannedSession
from xnatio.many.session import ManyOptions, SessionRun
from xnatio.many.spec import SessionSpec


def rows(n: int) -> list[PlannedSession]:
    return [PlannedSession(SessionSpec("P1", f"S{i}", f"E{i}", source="x")) for i in range(n)]


def run(
    n: int,
    max_sessions: int,
    monkeypatch: pytest.MonkeyPatch,
    upload: Any,
    on_prepare: Any = None,
) -> list[str]:
    log: list[str] = []
    lock = threading.Lock()

    def prepare(spec: SessionSpec, options: ManyOptions) -> Any:
        with lock:
            log.append(f"prepare {spec.session}")
        if on_prepare is not None:
            on_prepare(spec)
        return object()

    def run_session(r: SessionRun, spec: SessionSpec, action: str, **kw: Any) -> SessionOutcome:
        with lock:
            log.append(f"start {spec.session}")
        upload(spec, log)
        with lock:
            log.append(f"end {spec.session}")
        return SessionOutcome(spec.key, spec.project, spec.subject, spec.session, status="landed")

    monkeypatch.setattr(local, "prepare", prepare)
    monkeypatch.setattr(local, "run_session", run_session)
    monkeypatch.setattr(local, "_discard", lambda prepared: None)
    options = ManyOptions(max_sessions=max_sessions)
    config = XnatConfig("http://x", "u", "p")
    session_run = SessionRun(options, config, None, LocalBudget(1))  # type: ignore[arg-type]
    outcomes, cancelled, fatal = local.run_local(
        session_run, rows(n), lambda e: None, on_outcome=lambda o: None, on_start=lambda k: None
    )
    assert not cancelled and fatal is None
    assert sorted(outcomes) == sorted(f"P1/S{i}/E{i}" for i in range(n))
    return log


def test_the_next_inventory_is_read_while_a_session_uploads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_ahead = threading.Event()

    def upload(spec: SessionSpec, log: list[str]) -> None:
        if spec.session == "E0":
            # One session at a time: E1's inventory must be read while E0 is still sending.
            assert read_ahead.wait(10), "E1 was not prepared while E0 uploaded"

    def watch(spec: SessionSpec) -> None:
        if spec.session == "E1":
            read_ahead.set()

    log = run(3, 1, monkeypatch, upload, watch)
    assert log.index("prepare E1") < log.index("end E0")
    # Sessions start in plan order, one at a time.
    starts = [x for x in log if x.startswith(("start", "end"))]
    assert starts == ["start E0", "end E0", "start E1", "end E1", "start E2", "end E2"]


def test_no_more_than_max_sessions_upload_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    together = threading.Barrier(3, timeout=10)

    def upload(spec: SessionSpec, log: list[str]) -> None:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        if spec.session in ("E0", "E1", "E2"):
            together.wait()  # the first three run at the same time
        with lock:
            state["now"] -= 1

    run(7, 3, monkeypatch, upload)
    assert state["peak"] == 3
