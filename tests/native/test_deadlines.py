"""fastgw/_native/deadlines.pyx: the coarse clock and the timing wheel.

`Deadlines.arm` / `disarm` and `Timed.deadline_passed` are `cdef`: Python can't
call or override them (checked below). What Python does see is `.now`, `.loop`,
`.close()` and the `loop.time()` / `loop.call_at()` calls the wheel makes, so:

* on real event loops (uvloop, and asyncio for comparison) the tests watch
  `.now` tick, stop on `close()`, and stand still while the loop is blocked;
* on a fake loop (a hand-driven clock) they check the tick arithmetic exactly;
* arm/disarm are reached through a tiny Cython probe compiled at test time in
  a temporary directory (`cimport fastgw._native.deadlines`, the same C-level
  calls proxy.pyx makes), skipped when Cython or setuptools is not importable.
  Nothing in fastgw/ is modified or wrapped.
"""
from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uvloop

import fastgw._native.deadlines as deadlines_module
from fastgw._native.deadlines import TICK, Deadlines, Timed

LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


@pytest.fixture(params=list(LOOPS))
def loop(request):
    loop = LOOPS[request.param]()
    yield loop
    loop.close()


@pytest.fixture
def uv_loop():
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


def run_for(loop, seconds: float) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


# --- what Python sees ------------------------------------------------------------

def test_tick_is_50ms():
    assert TICK == 0.05


def test_arm_and_disarm_are_not_reachable_from_python(uv_loop):
    d = Deadlines(uv_loop)
    try:
        assert not hasattr(d, "arm") and not hasattr(d, "disarm")
        assert not hasattr(Timed(), "deadline_passed")
        with pytest.raises(AttributeError):
            d.now = 0.0  # readonly
    finally:
        d.close()


def test_construction_reads_the_loop_clock(loop):
    before = loop.time()
    d = Deadlines(loop)
    after = loop.time()
    try:
        assert d.loop is loop
        assert before <= d.now <= after
    finally:
        d.close()


def test_now_advances_once_per_tick(loop):
    """Sampled every ~5 ms for 0.6 s: `now` moves in tick-sized steps, never
    runs ahead of the loop clock and never lags it by much more than a tick."""
    d = Deadlines(loop)
    samples = []

    async def watch():
        end = loop.time() + 0.6
        while loop.time() < end:
            await asyncio.sleep(0.005)
            samples.append((loop.time(), d.now))

    try:
        loop.run_until_complete(watch())
    finally:
        d.close()
    nows = [now for _, now in samples]
    assert nows == sorted(nows)
    assert all(now <= t for t, now in samples)
    assert max(t - now for t, now in samples) < TICK + 0.03
    distinct = sorted(set(nows))
    assert 8 <= len(distinct) <= 14, distinct  # ~12 ticks in 0.6 s; ~100 samples
    assert len(samples) > 3 * len(distinct)


def test_close_stops_ticking(loop):
    d = Deadlines(loop)
    run_for(loop, 0.12)
    d.close()
    frozen = d.now
    run_for(loop, 0.25)
    assert d.now == frozen
    assert loop.time() - frozen >= 0.25
    d.close()  # closing twice is harmless


def test_blocked_loop_freezes_now_then_catches_up(loop):
    d = Deadlines(loop)
    try:
        run_for(loop, 0.06)
        seen = []

        def block():
            seen.append(d.now)
            time.sleep(0.3)
            seen.append(d.now)

        loop.call_soon(block)
        run_for(loop, 0.01)
        assert seen[0] == seen[1]  # no thread: nothing moves while the loop is busy
        blocked_until = seen[0] + 0.3
        run_for(loop, 2 * TICK)
        assert d.now >= blocked_until
    finally:
        d.close()


class CountingLoop:
    """A real loop, with the wheel's call_at calls counted."""

    def __init__(self, loop):
        self.loop = loop
        self.calls: list[float] = []

    def time(self):
        return self.loop.time()

    def call_at(self, when, callback):
        self.calls.append(when)
        return self.loop.call_at(when, callback)


def test_asyncio_loop_schedules_one_timer_per_tick():
    loop = asyncio.new_event_loop()
    try:
        counting = CountingLoop(loop)
        d = Deadlines(counting)
        run_for(loop, 0.5)
        d.close()
        assert 9 <= len(counting.calls) <= 12
        assert len(set(counting.calls)) == len(counting.calls)  # each boundary scheduled once
    finally:
        loop.close()


# --- the tick arithmetic, on a hand-driven clock -------------------------------------

class FakeHandle:
    def __init__(self, when, callback):
        self.when, self.callback = when, callback
        self.cancelled = self.ran = False

    def cancel(self):
        self.cancelled = True


class FakeLoop:
    """time() and call_at() only: all the wheel uses. Ticks are delivered by the test."""

    def __init__(self, t: float):
        self.t = t
        self.handles: list[FakeHandle] = []

    def time(self):
        return self.t

    def call_at(self, when, callback):
        handle = FakeHandle(when, callback)
        self.handles.append(handle)
        return handle

    def pending(self) -> list[FakeHandle]:
        return [h for h in self.handles if not (h.cancelled or h.ran)]

    def tick(self, at: float | None = None) -> FakeHandle:
        """Deliver the one pending tick at clock time `at` (default: 0.5 ms after it is due)."""
        [handle] = self.pending()
        self.t = handle.when + 0.0005 if at is None else at
        assert self.t > handle.when - 0.001  # a 1 ms clock may read a hair before `when`
        handle.ran = True
        handle.callback()
        return handle

    def run_until(self, t_end: float) -> None:
        for _ in range(100_000):
            [handle] = self.pending()
            if handle.when > t_end:
                self.t = t_end
                return
            self.tick()
        raise AssertionError("the wheel stopped advancing")


def next_boundary(t: float) -> float:
    return (math.floor(t / TICK) + 1) * TICK


def test_fake_clock_first_tick_at_the_next_boundary():
    fake = FakeLoop(1000.0123)
    d = Deadlines(fake)
    assert (d.loop, d.now) == (fake, 1000.0123)
    [handle] = fake.pending()
    assert handle.when == next_boundary(1000.0123) == pytest.approx(1000.05)
    assert handle.callback == d._tick


def test_fake_clock_each_tick_sets_now_and_schedules_the_next():
    fake = FakeLoop(50.001)
    d = Deadlines(fake)
    for _ in range(50):
        fired = fake.tick()
        assert d.now == fake.t
        [handle] = fake.pending()
        assert handle.when == next_boundary(fake.t)
        assert handle.when - fired.when == pytest.approx(TICK)


def test_fake_clock_late_tick_skips_to_the_boundary_after_now():
    fake = FakeLoop(50.001)
    d = Deadlines(fake)
    fake.tick(at=51.2345)
    assert d.now == 51.2345
    assert fake.pending()[0].when == pytest.approx(51.25)


def test_fake_clock_close_cancels_the_pending_tick():
    fake = FakeLoop(7.0001)
    d = Deadlines(fake)
    fake.tick()
    d.close()
    assert fake.pending() == []
    assert fake.handles[-1].cancelled


def test_fake_clock_tick_at_millisecond_boundary_advances_the_wheel():
    """uvloop's clock has 1 ms resolution, so a tick delivered at its boundary may
    read just under it. `_tick` adds 2 ms before dividing, so it still counts that
    boundary's tick and schedules the next one instead of re-arming the same
    boundary (which uvloop would run as call_soon: a busy loop for up to 1 ms)."""
    fake = FakeLoop(3264.001)
    d = Deadlines(fake)
    stuck = []
    for _ in range(200):
        [handle] = fake.pending()
        fired = fake.tick(at=round(handle.when, 3))  # uvloop: loop.time() is uv_now() / 1000
        [after] = fake.pending()
        if after.when <= fired.when:
            stuck.append((fake.t, fired.when))
            fake.tick(at=fake.t + 0.001)  # what uvloop does a millisecond later
    d.close()
    assert stuck == []


# --- arm / disarm through a compiled probe ---------------------------------------------

PROBE_PYX = '''
# cython: language_level=3
from fastgw._native.deadlines cimport Deadlines, Timed


cdef class Probe(Timed):
    """Records (name, loop.time()) in `log` when its deadline passes."""
    cdef public object name
    cdef public list log
    cdef public object clock
    cdef public object on_fire

    def __init__(self, name, log, clock, on_fire=None):
        self.name = name
        self.log = log
        self.clock = clock
        self.on_fire = on_fire

    @property
    def armed(self):
        return self.deadline_prev is not None

    cdef void deadline_passed(self):
        self.log.append((self.name, self.clock.time()))
        if self.on_fire is not None:
            self.on_fire(self)


def arm(Deadlines wheel, Timed owner, double timeout):
    wheel.arm(owner, timeout)


def disarm(Deadlines wheel, Timed owner):
    wheel.disarm(owner)
'''

PROBE_SETUP = '''
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize([Extension("deadline_probe", ["deadline_probe.pyx"])],
                            include_path=[{include!r}], language_level=3, quiet=True))
'''


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    pytest.importorskip("Cython", reason="Cython is needed to compile the arm/disarm probe")
    pytest.importorskip("setuptools", reason="setuptools is needed to compile the arm/disarm probe")
    root = Path(deadlines_module.__file__).resolve().parents[2]
    if not (root / "fastgw" / "_native" / "deadlines.pxd").exists():
        pytest.skip("fastgw/_native/deadlines.pxd is not next to the installed module")
    build = tmp_path_factory.mktemp("deadline_probe")
    (build / "deadline_probe.pyx").write_text(PROBE_PYX)
    (build / "setup.py").write_text(PROBE_SETUP.format(include=str(root)))
    done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=build,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"compiling the probe failed:\n{done.stdout}\n{done.stderr}"
    [built] = [p for p in build.iterdir()
               if p.name.startswith("deadline_probe.")
               and any(p.name.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)]
    spec = importlib.util.spec_from_file_location("deadline_probe", built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# On the hand-driven clock: exact.

def deadline_tick(now: float, timeout: float) -> int:
    """The wheel's rule (deadlines.pyx, `Deadlines.arm`): a deadline armed while the
    cached `now` reads `now` goes in the slot of tick floor((now + timeout) / TICK) + 2.
    One tick because the slot's tick is due at the *start* of that slot, one more
    because `now` may be up to a tick stale: it never fires before `timeout` has
    passed since arming, and at most two ticks after."""
    return math.floor((now + timeout) / TICK) + 2


def fires_at(now: float, timeout: float) -> float:
    """When that deadline fires on a FakeLoop whose ticks all arrive on time
    (`FakeLoop.tick`'s default: 0.5 ms after each boundary)."""
    return deadline_tick(now, timeout) * TICK + 0.0005


def test_probe_fires_on_the_second_tick_past_now_plus_timeout(probe):
    fake = FakeLoop(100.001)
    d = Deadlines(fake)
    log = []
    p = probe.Probe("p", log, fake)
    probe.arm(d, p, 0.2)  # now + timeout = 100.201 (tick 2004) -> the tick due at 100.30
    due = fires_at(100.001, 0.2)
    assert due == pytest.approx(100.3005)
    assert p.armed
    fake.run_until(due - 0.001)  # past the ticks at 100.20 and 100.25
    assert log == []
    assert p.armed
    fake.run_until(due + 0.0001)
    assert log == [("p", pytest.approx(due))]
    assert not p.armed
    fake.run_until(102.0)
    assert log == [("p", pytest.approx(due))]  # once


def test_probe_disarm(probe):
    fake = FakeLoop(100.001)
    d = Deadlines(fake)
    log = []
    p = probe.Probe("p", log, fake)
    probe.arm(d, p, 0.1)
    probe.disarm(d, p)
    assert not p.armed
    probe.disarm(d, p)  # twice is harmless
    fake.run_until(101.0)
    assert log == []


def test_probe_rearm_replaces_the_deadline(probe):
    fake = FakeLoop(100.001)
    d = Deadlines(fake)
    log = []
    later, sooner = probe.Probe("later", log, fake), probe.Probe("sooner", log, fake)
    probe.arm(d, later, 0.1)
    probe.arm(d, later, 0.3)   # moved out: due 100.40
    probe.arm(d, sooner, 0.5)
    probe.arm(d, sooner, 0.05)  # moved in: due 100.15
    fake.run_until(101.0)
    assert log == [("sooner", pytest.approx(fires_at(100.001, 0.05))),
                   ("later", pytest.approx(fires_at(100.001, 0.3)))]


def test_probe_same_tick_callbacks_may_disarm_each_other(probe):
    fake = FakeLoop(100.001)
    d = Deadlines(fake)
    log = []
    owners = {}

    def disarm_the_other(me):
        other = owners["b" if me.name == "a" else "a"]
        probe.disarm(d, other)

    owners["a"] = probe.Probe("a", log, fake, disarm_the_other)
    owners["b"] = probe.Probe("b", log, fake, disarm_the_other)
    probe.arm(d, owners["a"], 0.1)
    probe.arm(d, owners["b"], 0.1)
    fake.run_until(101.0)
    assert len(log) == 1 and log[0][1] == pytest.approx(fires_at(100.001, 0.1))
    assert not owners["a"].armed and not owners["b"].armed


def test_probe_callback_can_rearm_itself(probe):
    fake = FakeLoop(100.001)
    d = Deadlines(fake)
    log = []

    def again(me):
        if len(log) < 3:
            probe.arm(d, me, 0.2)

    p = probe.Probe("p", log, fake, again)
    probe.arm(d, p, 0.2)
    fake.run_until(102.0)
    expected, now = [], 100.001
    for _ in range(3):  # re-armed from the callback, where `now` is that tick's time
        now = fires_at(now, 0.2)
        expected.append(now)
    assert [t for _, t in log] == pytest.approx(expected)


def test_probe_late_tick_fires_every_overdue_slot(probe):
    fake = FakeLoop(100.001)
    d = Deadlines(fake)
    log = []
    timeouts = [0.05, 0.1, 0.3, 0.6, 2.0]
    for i, timeout in enumerate(timeouts):
        probe.arm(d, probe.Probe(i, log, fake), timeout)
    overdue = [i for i, timeout in enumerate(timeouts) if deadline_tick(100.001, timeout) * TICK <= 100.9]
    assert overdue == [0, 1, 2, 3]
    fake.tick(at=100.9)  # one late tick covers the slots due at 100.15 ... 100.9
    assert sorted(name for name, _ in log) == overdue
    fake.run_until(103.0)
    assert sorted(name for name, _ in log) == [0, 1, 2, 3, 4]


def test_probe_many_owners_each_fire_once_unless_disarmed(probe):
    import random
    rng = random.Random(7)
    fake = FakeLoop(100.001)
    d = Deadlines(fake)
    log = []
    owners = [probe.Probe(i, log, fake) for i in range(2000)]
    due = {}
    for p in owners:
        timeout = rng.uniform(0.0, 1.5)
        probe.arm(d, p, timeout)
        due[p.name] = fires_at(100.001, timeout)
    cancelled = {p.name for p in rng.sample(owners, 700)}
    for p in owners:
        if p.name in cancelled:
            probe.disarm(d, p)
    fake.run_until(102.0)
    assert sorted(name for name, _ in log) == sorted(set(due) - cancelled)
    for name, t in log:
        assert t == pytest.approx(due[name], abs=1e-9)


def test_probe_close_prevents_firing(probe):
    fake = FakeLoop(100.001)
    d = Deadlines(fake)
    log = []
    probe.arm(d, probe.Probe("p", log, fake), 0.1)
    d.close()
    assert fake.pending() == []
    assert log == []


def test_probe_never_fires_before_the_timeout(probe):
    """arm() counts from the cached `now`, up to a tick stale: the extra tick in
    `deadline_tick` is what keeps the worst case (arming just before a tick) on time."""
    fake = FakeLoop(100.001)
    d = Deadlines(fake)
    log = []
    fake.tick()                # tick at 100.0505: now = 100.0505
    fake.t = 100.0995          # 49 ms later, just before the next tick
    armed_at = fake.time()
    probe.arm(d, probe.Probe("p", log, fake), 0.149)
    fake.run_until(101.0)
    [(_, fired_at)] = log
    assert fired_at == pytest.approx(fires_at(100.0505, 0.149))  # 100.2505: 0.151 s after arming
    assert 0.149 <= fired_at - armed_at <= 0.149 + 2 * TICK


# On a real uvloop.

def test_probe_on_uvloop_fires_on_time_and_at_most_two_ticks_late(probe, uv_loop):
    d = Deadlines(uv_loop)
    log = []
    armed = {}

    async def scenario():
        await asyncio.sleep(0.07)
        for name, timeout in [("a", 0.1), ("b", 0.25), ("c", 0.4)]:
            armed[name] = (uv_loop.time(), timeout)
            probe.arm(d, probe.Probe(name, log, uv_loop), timeout)
            await asyncio.sleep(0.013)
        await asyncio.sleep(0.8)

    try:
        uv_loop.run_until_complete(scenario())
    finally:
        d.close()
    assert [name for name, _ in log] == ["a", "b", "c"]
    for name, fired_at in log:
        armed_at, timeout = armed[name]
        # never early (less 1 ms: uvloop's clock reads whole milliseconds), at most
        # two ticks late plus scheduling slack
        assert timeout - 0.001 <= fired_at - armed_at <= timeout + 2 * TICK + 0.05, (name, fired_at - armed_at)


def test_probe_on_uvloop_disarm_and_close(probe, uv_loop):
    d = Deadlines(uv_loop)
    log = []
    kept, dropped, after_close = (probe.Probe(n, log, uv_loop) for n in ("kept", "dropped", "after_close"))

    async def scenario():
        probe.arm(d, kept, 0.1)
        probe.arm(d, dropped, 0.1)
        await asyncio.sleep(0.03)
        probe.disarm(d, dropped)
        await asyncio.sleep(0.3)
        probe.arm(d, after_close, 0.05)
        d.close()
        await asyncio.sleep(0.3)

    uv_loop.run_until_complete(scenario())
    assert [name for name, _ in log] == ["kept"]
    assert after_close.armed  # still in its slot: nothing ticks any more


# --- emptied slots are dropped (issue 17, finding 6) -------------------------------------

def test_probe_wheel_holds_nothing_but_its_owners(probe):
    """A keep-alive connection re-arms a deadline minutes ahead after every
    request. The wheel of sets left an empty set per tick behind until a
    sweep (300 s of keepalive: 6,000 sets); the intrusive wheel has a fixed
    list head per slot and holds only its owners: at most one slot per owner,
    none once they are disarmed."""
    fake = FakeLoop(100.001)
    d = Deadlines(fake)
    log = []
    owners = [probe.Probe(i, log, fake) for i in range(16)]
    assert d.slot_count == 0
    for _ in range(200):  # 10 s of "requests": every owner re-armed 300 s ahead each tick
        for p in owners:
            probe.arm(d, p, 300.0)
        fake.tick()
    assert d.armed_count == 16
    assert d.slot_count == 1  # all re-armed in the same tick: one slot
    for p in owners:
        probe.disarm(d, p)
    assert (d.armed_count, d.slot_count) == (0, 0)
    fake.run_until(fake.t + 1.1)
    assert log == []


def test_probe_deadline_more_than_one_turn_ahead_fires_once_on_time(probe):
    """300 s is ~6 turns of the 1,024-slot wheel: the owner is passed over at
    each turn and fires once, at its own tick."""
    fake = FakeLoop(100.001)
    d = Deadlines(fake)
    log = []
    far = probe.Probe("far", log, fake)
    near = probe.Probe("near", log, fake)
    probe.arm(d, far, 300.0)
    probe.arm(d, near, 1.0)
    fake.run_until(100.001 + 299.0)
    assert [name for name, _ in log] == ["near"]
    fake.run_until(100.001 + 310.0)
    assert [name for name, _ in log] == ["near", "far"]
    assert log[1][1] == pytest.approx(fires_at(100.001, 300.0), abs=1e-9)
    assert (d.armed_count, d.slot_count) == (0, 0)


def test_probe_sweep_keeps_armed_owners_firing(probe):
    """Moving, cancelling and firing across many ticks: every armed deadline
    fires once, at its time, and the wheel ends empty."""
    import random
    rng = random.Random(11)
    fake = FakeLoop(100.001)
    d = Deadlines(fake)
    log = []
    owners = [probe.Probe(i, log, fake) for i in range(500)]
    due = {}
    for step in range(60):  # 3 s of arming, moving and cancelling across sweeps
        for p in rng.sample(owners, 40):
            if rng.random() < 0.25:
                probe.disarm(d, p)
                due.pop(p.name, None)
            else:
                timeout = rng.uniform(3.2, 6.0)  # none fires while arming goes on
                probe.arm(d, p, timeout)
                due[p.name] = fires_at(d.now, timeout)
        fake.tick()
    fake.run_until(110.0)
    assert sorted(name for name, _ in log) == sorted(due)
    for name, t in log:
        assert t == pytest.approx(due[name], abs=1e-9)
    assert d.slot_count == 0
