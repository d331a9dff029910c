"""The adaptive parts as pure logic: windows in, decisions out (fake clocks, no network).

The compression policy (--compress auto), the worker controller (--upload-workers auto), the
rate limiter (--bwlimit), the option parsers, and the link that turns body counters into windows.
Uploads through all of them against the sandbox are in tests/test_rest_adaptive.py.
"""

from __future__ import annotations

import pytest

from xnatio.budget import LocalBudget
from xnatio.errors import InputError
from xnatio.options import RestOptions, parse_workers
from xnatio.transport.adaptive import WorkerController
from xnatio.transport.compression import CompressionPolicy, calibrate
from xnatio.transport.link import Link, LinkSettings
from xnatio.transport.ratelimit import RateLimiter, parse_rate
from xnatio.transport.window import Answer, StreamSample, Window

MB = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def halves(
    rate0: float, rate1: float, n: int = 4, duration: float = 0.5
) -> tuple[StreamSample, ...]:
    """``n`` connections per half, each carrying ``rate`` file bytes per second."""
    out = []
    for group, rate in ((0, rate0), (1, rate1)):
        out += [StreamSample(group, int(rate * duration), int(rate * duration), duration)] * n
    return tuple(out)


def window(
    payload_rate: float,
    *,
    samples: tuple[StreamSample, ...] = (),
    active: int = 8,
    waiting: int = 0,
    capacity: int | None = None,
    deflate_cpu: float = 0.0,
    wire_rate: float | None = None,
    latencies: tuple[float, ...] = (),
    overloaded: int = 0,
    failed: int = 0,
    seq: int = 0,
    next_seq: int = 100,
    **kw: object,
) -> Window:
    """A window; answers are of requests whose bodies were number ``seq``."""
    d = 0.5
    wire = payload_rate if wire_rate is None else wire_rate
    answers = [Answer(seq, "ok", s) for s in latencies]
    answers += [Answer(seq, "overloaded")] * overloaded + [Answer(seq, "failed")] * failed
    return Window(
        duration=d,
        wire=int(wire * d),
        payload=int(payload_rate * d),
        samples=samples,
        active=active,
        waiting=waiting,
        capacity=capacity,
        deflate_cpu=deflate_cpu,
        answers=tuple(answers),
        next_seq=next_seq,
        **kw,  # type: ignore[arg-type]
    )


# -- compression -----------------------------------------------------------------------------


def policy(speed: float = 64 * MB, ratio: float = 2.2, cpus: int = 2) -> CompressionPolicy:
    return CompressionPolicy(cpus=cpus, speed=speed, ratio=ratio, clock=Clock())


def test_no_trial_when_the_link_outruns_the_compressor() -> None:
    p = policy()
    for _ in range(20):  # loopback: 150 MB/s against 64 MB/s on one of two cores
        p.observe(window(150 * MB, samples=halves(18 * MB, 18 * MB)))
    assert not p.deflating and not p.decisions
    assert all(not p.deflate(g) for g in (0, 1))


def test_slow_link_trial_keeps_deflate_when_the_deflating_half_carries_more() -> None:
    p = policy()
    p.observe(window(12 * MB, samples=halves(1.5 * MB, 1.5 * MB)))
    assert [d.action for d in p.decisions] == ["trial"]
    assert p.deflate(1) and not p.deflate(0)  # half the connections deflate
    p.observe(window(20 * MB, samples=halves(1.5 * MB, 1.5 * MB)))  # settling: not judged
    p.observe(window(20 * MB, samples=halves(1.5 * MB, 3.3 * MB)))
    assert p.decisions[-1].action == "trial"  # one window is not enough
    p.observe(window(20 * MB, samples=halves(1.5 * MB, 3.3 * MB)))
    assert p.decisions[-1].action == "deflate"
    assert "2.20x" in p.decisions[-1].detail
    assert p.deflate(0) and p.deflate(1)


def test_a_gain_well_below_the_ratio_is_not_enough() -> None:
    # Loopback to a busy server: the deflating half carried 1.23x (its bytes cost the server
    # less to read), far from the 2.2x a limiting link would show.
    p = policy()
    p.observe(window(20 * MB, samples=halves(1.1 * MB, 1.1 * MB)))
    for _ in range(3):
        p.observe(window(20 * MB, samples=halves(1.12 * MB, 1.38 * MB)))
    assert p.decisions[-1].action == "none"
    assert "needed 1.60x" in p.decisions[-1].detail


def test_deflate_stops_when_all_connections_together_carry_less() -> None:
    p = policy()
    p.observe(window(16 * MB, samples=halves(2 * MB, 2 * MB)))
    for _ in range(3):
        p.observe(window(24 * MB, samples=halves(2 * MB, 4 * MB)))
    assert p.deflate(0)
    for _ in range(3):  # the CPU cannot deflate for all 8 at once: 14 MB/s against ~16 stored
        p.observe(window(14 * MB, samples=halves(1.75 * MB, 1.75 * MB)))
    assert not p.deflate(0)
    assert p.decisions[-1].action == "none"
    assert "stored ones carried 2.00 in the trial" in p.decisions[-1].detail


def test_trial_drops_deflate_when_it_does_not_pay() -> None:
    # A server that is the bottleneck: the deflating half carries no more file bytes.
    p = policy()
    p.observe(window(30 * MB, samples=halves(3 * MB, 3 * MB)))
    p.observe(window(30 * MB, samples=halves(3 * MB, 3 * MB)))
    for _ in range(4):
        p.observe(window(30 * MB, samples=halves(3 * MB, 3.2 * MB)))
    assert p.decisions[-1].action == "none"
    assert not p.deflate(0) and not p.deflate(1)
    # No second trial before 20 s have passed.
    for _ in range(10):
        p.observe(window(30 * MB, samples=halves(3 * MB, 3 * MB)))
    assert [d.action for d in p.decisions] == ["trial", "none"]


def test_single_connection_trial_compares_with_the_window_before() -> None:
    p = policy()
    one = (StreamSample(0, int(0.45 * MB), int(0.45 * MB), 0.5),)
    p.observe(window(0.9 * MB, active=1))  # the body started during this window: not full yet
    assert not p.decisions
    p.observe(window(0.9 * MB, samples=one, active=1))
    assert p.deflate(0)  # the only connection deflates
    faster = (StreamSample(0, int(0.45 * MB), int(0.95 * MB), 0.5),)
    for _ in range(4):
        p.observe(window(1.9 * MB, samples=faster, active=1))
    assert p.decisions[-1].action == "deflate"


def test_watchdog_reverse_trial_when_the_compressor_fills_the_cores() -> None:
    clock = Clock()
    p = CompressionPolicy(cpus=2, speed=64 * MB, ratio=2.2, clock=clock)
    p.observe(window(12 * MB, samples=halves(1.5 * MB, 1.5 * MB)))
    p.observe(window(12 * MB, samples=halves(1.5 * MB, 1.5 * MB)))
    for _ in range(4):
        p.observe(window(20 * MB, samples=halves(1.5 * MB, 3.3 * MB)))
    for _ in range(3):  # every connection deflates: confirmed
        p.observe(window(26 * MB, samples=halves(3.3 * MB, 3.3 * MB)))
    assert p.deflating and p.decisions[-1].action == "confirmed"
    clock.now += 30
    p.observe(window(90 * MB, samples=halves(10 * MB, 10 * MB), deflate_cpu=0.8))  # 1.6 cores
    assert p.decisions[-1].action == "trial"
    assert not p.deflate(1) and p.deflate(0)  # reverse: half the connections stored
    for _ in range(4):  # stored connections now do better: the CPU was the limit
        p.observe(window(100 * MB, samples=halves(10 * MB, 14 * MB), deflate_cpu=0.4))
    assert p.decisions[-1].action == "none" and not p.deflating


def test_data_that_does_not_shrink_is_never_tried() -> None:
    p = policy(ratio=1.02)
    for _ in range(10):
        p.observe(window(1 * MB, samples=halves(0.1 * MB, 0.1 * MB)))
    assert not p.decisions


def test_fixed_modes_never_change() -> None:
    on = CompressionPolicy(cpus=2, mode="deflate")
    off = CompressionPolicy(cpus=2, mode="none", speed=1e9, ratio=5.0)
    for _ in range(10):
        on.observe(window(200 * MB, samples=halves(20 * MB, 1 * MB), deflate_cpu=1.0))
        off.observe(window(1 * MB, samples=halves(0.1 * MB, 0.1 * MB)))
    assert on.deflate(0) and not off.deflate(1)
    assert on.summary() == "deflate" and off.summary() == "none"


def test_calibrate_measures_speed_and_ratio() -> None:
    import io

    speed, ratio = calibrate([io.BytesIO(bytes(300_000)), io.BytesIO(b"ab" * 400_000)])
    assert speed > 0 and ratio > 50
    assert calibrate([]) == (0.0, 1.0)


# -- workers ----------------------------------------------------------------------------------


def saturated(cap: int, rate: float) -> Window:
    return window(rate, active=cap, waiting=5, capacity=cap)


def test_slow_start_doubles_while_it_pays_then_returns_to_the_last_good_capacity() -> None:
    budget = LocalBudget(42)
    c = WorkerController(budget, ceiling=42, start=4, clock=Clock())
    c.begin()
    assert budget.capacity == 4
    per = 0.93 * MB
    link_cap = 12 * MB
    caps = []
    for _ in range(12):
        cap = budget.capacity
        c.observe(saturated(cap, min(cap * per, link_cap)))  # settle window after each change
        c.observe(saturated(cap, min(cap * per, link_cap)))
        caps.append(budget.capacity)
    assert caps[:3] == [8, 16, 32]  # 4->8->16 paid; 16->32 did not (12 MB/s total)
    assert caps[3] == 16
    assert max(caps) == 32 and c.peak == 32
    assert all(16 <= cap <= 20 for cap in caps[4:])  # probes by a quarter, kept only if they pay


def test_ceiling_is_never_passed_and_nothing_changes_without_waiting_work() -> None:
    budget = LocalBudget(6)
    c = WorkerController(budget, ceiling=6, clock=Clock())
    c.begin()
    assert budget.capacity == 6  # the start (8) is above the ceiling
    for _ in range(10):
        cap = budget.capacity
        c.observe(saturated(cap, cap * MB))
    assert budget.capacity == 6
    c2 = WorkerController(LocalBudget(42), ceiling=42, start=4, clock=Clock())
    c2.begin()
    for _ in range(10):  # every batch already has a connection: more could not show anything
        c2.observe(window(4 * MB, active=4, waiting=0, capacity=4))
    assert c2.budget.capacity == 4


def test_overload_answers_and_resets_cut_at_once() -> None:
    budget = LocalBudget(42)
    c = WorkerController(budget, ceiling=42, start=20, clock=Clock())
    c.begin()
    c.observe(window(10 * MB, active=20, waiting=3, capacity=20, overloaded=2, next_seq=30))
    assert budget.capacity == 14  # x 0.7
    assert "2 overload answers" in c.decisions[-1].detail
    # Requests that started before the cut still end badly (a 504 comes long after the overload
    # began): they belong to the cut already made.
    c.observe(window(10 * MB, active=14, waiting=3, capacity=14, overloaded=3, seq=29))
    assert budget.capacity == 14
    c.observe(window(10 * MB, active=14, waiting=3, capacity=14, failed=1, seq=30))
    assert budget.capacity == 9
    for _ in range(5):  # held: no increase for six windows
        c.observe(saturated(9, 20 * MB))
    assert budget.capacity == 9
    floor = WorkerController(LocalBudget(1), ceiling=1, start=1, clock=Clock())
    floor.begin()
    floor.observe(window(1 * MB, active=1, waiting=1, capacity=1, overloaded=5))
    assert floor.budget.capacity == 1  # never below one


def test_rising_answer_time_backs_off() -> None:
    budget = LocalBudget(42)
    c = WorkerController(budget, ceiling=42, start=16, clock=Clock())
    c.begin()
    c.observe(window(10 * MB, active=16, waiting=2, capacity=16, latencies=(0.3, 0.4)))
    assert budget.capacity == 16
    c.observe(window(10 * MB, active=16, waiting=2, capacity=16, latencies=(2.5, 3.0, 2.8)))
    assert budget.capacity == 13  # x 0.85
    assert "after the body" in c.decisions[-1].detail


def test_a_server_that_holds_the_requests_is_paced_by_its_answers() -> None:
    # Behind a buffering proxy whole bodies go at once and the server's answers take seconds:
    # bytes say nothing, answers clock the capacity (one more per fast answer, x0.85 when slow).
    budget = LocalBudget(42)
    c = WorkerController(budget, ceiling=42, start=4, clock=Clock())
    c.begin()

    def held(cap: int, *answers: float, seq: int = 0) -> Window:
        return window(
            0, active=cap, answering=cap, waiting=20, capacity=cap, latencies=answers, seq=seq
        )

    c.observe(held(4))  # no answer yet: nothing to go by
    c.observe(held(4))
    assert budget.capacity == 4
    c.observe(held(4, 12.0, 12.1, 12.3))
    assert budget.capacity == 7  # three fast answers: three more requests
    c.observe(held(7, 12.2, 12.4, 12.5, 12.6, 13.0, 14.0, 14.5))
    assert budget.capacity == 14  # at most doubling
    c.observe(held(14, 14.5, 14.8))
    assert budget.capacity == 14  # 1.2x the fastest: not queueing yet, no more either
    c.observe(held(14, 17.0, 17.5))
    assert budget.capacity == 11  # 1.4x the fastest: the server queues work
    assert "fastest 12.1 s" in c.decisions[-1].detail
    for _ in range(8):  # answers of requests from before the cut decide nothing
        c.observe(held(11, 12.5, 12.6))
    assert budget.capacity == 11
    for _ in range(7):  # requests after it: held for six windows, then one at a time
        c.observe(held(11, 12.5, 12.6, seq=100))
    assert budget.capacity == 12


# -- rate limit and parsers -------------------------------------------------------------------


def test_rate_limiter_books_one_schedule_for_everyone() -> None:
    clock = Clock()
    limiter = RateLimiter(1_000_000, burst=100_000, clock=clock)
    delays = [limiter.reserve(100_000) for _ in range(10)]  # ten threads at the same moment
    assert delays[0] == 0.0  # the burst
    assert delays == pytest.approx([i * 0.1 for i in range(10)])
    clock.now += 5.0  # idle: the burst is back, not five seconds of credit
    assert limiter.reserve(100_000) == 0.0
    assert limiter.reserve(100_000) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("text", "rate"),
    [("20M", 20 * 2**20), ("1.5M", 1.5 * 2**20), ("800k", 800 * 1024), ("1G", 2**30),
     ("5000", 5000.0), ("20MiB", 20 * 2**20), ("20MB/s", 20 * 2**20), (" 2m ", 2 * 2**20)],
)  # fmt: skip
def test_parse_rate(text: str, rate: float) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "0", "10", "-5M", "1e3M", "nanM", "5 MB per s"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(InputError, match="--bwlimit"):
        parse_rate(text)


def test_parse_workers_and_options_check() -> None:
    assert parse_workers("auto") == (42, True)
    assert parse_workers("auto:8") == (8, True)
    assert parse_workers("16") == (16, False)
    assert parse_workers(3) == (3, False)
    for bad in ("0", "auto:0", "many", "auto:", "-1"):
        with pytest.raises(InputError, match="--upload-workers"):
            parse_workers(bad)
    with pytest.raises(InputError, match="--compress"):
        RestOptions(compress="gzip").check()  # type: ignore[arg-type]
    with pytest.raises(InputError, match="--bwlimit"):
        RestOptions(bwlimit=float("nan")).check()


def test_auto_cuts_a_large_session_into_smaller_batches() -> None:
    auto = RestOptions(upload_workers=42, adaptive_workers=True)
    assert auto.batches_for(15_000) == 168  # four per connection of the ceiling
    assert auto.batches_for(3_000) == 60  # at least 50 files each
    assert auto.batches_for(300) == 42  # never fewer than --num-batches
    assert RestOptions(upload_workers=8, adaptive_workers=True).batches_for(15_000) == 42
    assert (
        RestOptions(num_batches=4, upload_workers=8, adaptive_workers=True).batches_for(15_000)
        == 32
    )
    assert RestOptions(num_batches=500, adaptive_workers=True).batches_for(15_000) == 500
    assert RestOptions().batches_for(15_000) == 42  # fixed workers: --num-batches as given


# -- the link ---------------------------------------------------------------------------------


def test_link_turns_body_counters_into_windows() -> None:
    clock = Clock()
    link = Link(LinkSettings(), CompressionPolicy(cpus=2, mode="none"), window=0.5, clock=clock)
    a, b = link.open(), link.open()
    assert (a.group, b.group) == (0, 1)
    assert link.tick() is None  # not due yet
    a.wire += 100_000
    b.wire += 50_000
    b.stats.payload, b.stats.produced = 110_000, 50_000  # b deflates at 2.2x
    clock.now += 0.5
    first = link.tick()
    assert first is not None and first.wire == 150_000
    assert first.samples == (
        StreamSample(0, 100_000, 100_000, 0.5),
        StreamSample(1, 50_000, 110_000, 0.5),  # 2.2x: its own ratio of files to body bytes
    )
    a.wire += 200_000
    b.wire += 100_000
    b.stats.payload, b.stats.produced = 330_000, 150_000
    link.waiting(1)
    clock.now += 0.5
    second = link.tick()
    assert second is not None
    assert second.samples == (
        StreamSample(0, 200_000, 200_000, 0.5),
        StreamSample(1, 100_000, 220_000, 0.5),
    )
    assert second.wire == 300_000 and second.active == 2 and second.waiting == 1
    b.body_done = clock.now
    clock.now += 0.25
    link.answered(b, 200)
    link.close(b)
    link.answered(None, 503)
    link.failed()
    clock.now += 0.25
    third = link.tick()
    assert third is not None
    assert third.latencies() == [0.25] and third.overloaded() == 1 and third.failed() == 1
    assert third.answers[0] == Answer(1, "ok", 0.25) and third.next_seq == 2
    assert third.latencies(since=2) == []  # b's body was number 1
    assert third.active == 1 and third.wire == 0
    assert third.samples == (StreamSample(0, 0, 0, 0.5),)  # b's body ended before: no sample
