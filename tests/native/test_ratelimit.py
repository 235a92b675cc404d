"""The shared-memory rate-limit table (fastgw/_native/ratelimit.pyx).

Answers are checked against pure-Python references driven by the same
controllable clock (`take_at`); the multi-process test uses the real clock.
"""
from __future__ import annotations

import math
import os
import random
import time

import pytest

from fastgw._native.ratelimit import TICKS_PER_NS, Limit, LimitTable, hash_key, now_ns

S = 1_000_000_000  # ns per second
T0 = 10**15        # an arbitrary monotonic start: ~11.6 days of uptime
TICKS_PER_S = S * TICKS_PER_NS


class ReferenceGCRA:
    """GCRA as in the literature, on integer ticks of 1/16 ns (the table's unit,
    with the emission interval rounded down to a tick)."""

    def __init__(self, rate: float, burst: int):
        self.interval = max(1, int(TICKS_PER_S / rate))
        self.tolerance = (burst - 1) * self.interval
        self.burst = burst
        self.tat: dict[bytes, int] = {}

    def take(self, key: bytes, now_ns: int) -> tuple:
        now = now_ns * TICKS_PER_NS
        tat = max(self.tat.get(key, now), now)
        if now < tat - self.tolerance:
            return (False, self.burst, 0, (tat - now) / TICKS_PER_S, (tat - self.tolerance - now) / TICKS_PER_S)
        new_tat = tat + self.interval
        self.tat[key] = new_tat
        remaining = (now + self.tolerance + self.interval - new_tat) // self.interval
        return (True, self.burst, remaining, (new_tat - now) / TICKS_PER_S, 0.0)


class ReferenceWindow:
    """Sliding-window counter: previous window's count weighted by its overlap."""

    def __init__(self, limit: int, window_s: float):
        self.limit = limit
        self.width = round(window_s * TICKS_PER_S)
        self.state: dict[bytes, tuple[int, int, int]] = {}  # key -> (window number, cur, prev)

    def take(self, key: bytes, now_ns: int) -> bool:
        now = now_ns * TICKS_PER_NS
        number = now // self.width
        window, cur, prev = self.state.get(key, (number, 0, 0))
        if window != number:
            prev, cur = (cur if window == number - 1 else 0), 0
        elapsed = now - number * self.width
        estimate = prev * (self.width - elapsed) / self.width + cur
        allowed = estimate + 1 <= self.limit
        self.state[key] = (number, cur + 1 if allowed else cur, prev)
        return allowed


@pytest.fixture(scope="module")
def table():
    return LimitTable(65536)


def test_table_size_is_fixed_and_rounded(table):
    assert table.slots == 65536
    assert table.bytes == 65536 * 40          # 40 bytes a slot: 2.5 MiB for the default
    assert LimitTable(100).slots == 128       # rounded up to a power of two times 8
    assert LimitTable(1).slots == 8


def test_first_takes_drain_the_burst_then_deny(table):
    limit = Limit(table, 1, "token_bucket", 10.0, 3, 0.0)
    answers = [limit.take_at(b"a", T0) for _ in range(4)]
    assert [a[:3] for a in answers] == [(True, 3, 2), (True, 3, 1), (True, 3, 0), (False, 3, 0)]
    # denied: the next token comes in 0.1 s; the bucket is full again 0.3 s from now
    assert answers[3][4] == pytest.approx(0.1, abs=1e-9)
    assert answers[3][3] == pytest.approx(0.3, abs=1e-9)
    assert answers[0][4] == 0.0
    # one token later exactly one request passes
    assert limit.take_at(b"a", T0 + S // 10)[0] is True
    assert limit.take_at(b"a", T0 + S // 10)[0] is False


def test_matches_reference_gcra_on_a_random_schedule(table):
    rng = random.Random(7)
    for limit_id, (rate, burst) in enumerate([(3000.0, 1), (0.5, 2), (7.0, 20), (123.456, 5)], start=10):
        limit = Limit(table, limit_id, "token_bucket", rate, burst, 0.0)
        reference = ReferenceGCRA(rate, burst)
        now = T0
        mean_gap = 1 / rate / 1.5  # offered load 1.5x the rate: both answers happen
        for _ in range(5000):
            now += int(rng.expovariate(1 / mean_gap) * S)
            key = b"k%d" % rng.randrange(3)
            assert limit.take_at(key, now) == reference.take(key, now)


@pytest.mark.parametrize("rate", [3000.0, 0.5, 333.3, 1000.0, 7.0])
def test_fractional_rates_are_exact(table, rate):
    """A request every 50 us (faster than any rate here) for a simulated 10 s,
    both ends included: exactly 10 * rate + burst are admitted."""
    burst = 5
    limit = Limit(table, 100 + int(rate * 10), "token_bucket", rate, burst, 0.0)
    step = 50_000
    admitted = sum(limit.take_at(b"flood", T0 + i * step)[0] for i in range(10 * S // step + 1))
    assert admitted == math.floor(10 * rate) + burst


def test_3000_per_second_is_not_rounded_to_a_whole_us_interval(table):
    limit = Limit(table, 200, "token_bucket", 3000.0, 10, 0.0)
    admitted = sum(limit.take_at(b"x", T0 + i * 20_000)[0] for i in range(10 * S // 20_000 + 1))
    assert admitted == 30_010  # 30,000 + burst 10; a 333 us interval would give 30,040, 334 us 29,950


def test_burst_one_loses_the_slack_of_late_requests(table):
    """GCRA with burst 1 has no tolerance: a request arriving after its token
    restarts the schedule (requests on a 20 us grid: one per 340 us)."""
    limit = Limit(table, 199, "token_bucket", 3000.0, 1, 0.0)
    admitted = sum(limit.take_at(b"x", T0 + i * 20_000)[0] for i in range(10 * S // 20_000 + 1))
    assert admitted == 10 * S // 340_000 + 1


def test_denied_requests_consume_nothing(table):
    limit = Limit(table, 201, "token_bucket", 1.0, 1, 0.0)
    assert limit.take_at(b"k", T0)[0]
    for i in range(1, 100):
        assert not limit.take_at(b"k", T0 + i * S // 100)[0]
    assert limit.take_at(b"k", T0 + S)[0]


def test_peek_does_not_count_and_refund_gives_back(table):
    limit = Limit(table, 202, "token_bucket", 1.0, 2, 0.0)
    assert limit.peek_at(b"k", T0) == (True, 2, 1, 1.0, 0.0)
    assert limit.peek_at(b"k", T0) == (True, 2, 1, 1.0, 0.0)
    assert limit.take_at(b"k", T0)[:3] == (True, 2, 1)
    assert limit.take_at(b"k", T0)[:3] == (True, 2, 0)
    limit.refund_at(b"k", T0)
    assert limit.take_at(b"k", T0)[:3] == (True, 2, 0)
    assert limit.take_at(b"k", T0)[0] is False
    limit.refund_at(b"missing", T0)  # nothing to give back: no effect, no entry
    assert limit.peek_at(b"missing", T0)[:3] == (True, 2, 1)


def test_limit_id_separates_equal_keys(table):
    a = Limit(table, 300, "token_bucket", 1.0, 1, 0.0)
    b = Limit(table, 301, "token_bucket", 1.0, 1, 0.0)
    assert a.take_at(b"same", T0)[0] and b.take_at(b"same", T0)[0]
    assert not a.take_at(b"same", T0)[0]
    assert hash_key(b"same", 300) != hash_key(b"same", 301)


def test_real_clock_take(table):
    limit = Limit(table, 302, "token_bucket", 1.0, 2, 0.0)
    assert [limit.take(b"k")[0] for _ in range(3)] == [True, True, False]
    assert abs(now_ns() - time.monotonic_ns()) < S  # the same clock as time.monotonic


# --- sliding window ----------------------------------------------------------

def test_sliding_window_counts_and_weighs_the_previous_window(table):
    hour = 3600
    limit = Limit(table, 400, "sliding_window", 10 / hour, 0, hour)
    assert limit.limit == 10
    start = (T0 // (hour * S) + 1) * hour * S  # the start of a fixed window
    answers = [limit.take_at(b"q", start) for _ in range(11)]
    assert [a[0] for a in answers] == [True] * 10 + [False]
    assert [a[2] for a in answers] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]
    # denied: the previous window's 10 weigh 10*(1-e/W) next window; one fits once that is <= 9:
    # e >= W/10 -> retry after (W - 0) + W/10
    assert answers[10][4] == pytest.approx(hour * 1.1, abs=1e-6)
    # half-way into the next window the estimate is 5: five more fit
    half = start + hour * S + hour * S // 2
    assert [limit.take_at(b"q", half)[0] for _ in range(6)] == [True] * 5 + [False]
    # two windows later everything is forgotten
    later = start + 3 * hour * S
    assert [limit.take_at(b"q", later)[0] for _ in range(11)] == [True] * 10 + [False]


def test_sliding_window_matches_reference(table):
    rng = random.Random(3)
    limit = Limit(table, 401, "sliding_window", 50 / 60, 0, 60)
    reference = ReferenceWindow(50, 60)
    now = T0
    for _ in range(20000):
        now += int(rng.expovariate(1 / 0.9) * S)  # ~1.1 requests a second offered, 0.83 allowed
        key = b"w%d" % rng.randrange(2)
        assert limit.take_at(key, now)[0] == reference.take(key, now)


def test_sliding_window_needs_whole_counts(table):
    with pytest.raises(ValueError, match="whole number"):
        Limit(table, 402, "sliding_window", 0.5 / 3600, 0, 3600)
    with pytest.raises(ValueError, match="unknown algorithm"):
        Limit(table, 403, "leaky", 1.0, 1, 0)
    with pytest.raises(ValueError, match="burst"):
        Limit(table, 404, "token_bucket", 1.0, 0, 0)


# --- bounded memory ----------------------------------------------------------

def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_million_distinct_keys_keep_memory_fixed():
    table = LimitTable(65536)
    limit = Limit(table, 500, "token_bucket", 1.0, 10, 0.0)
    take_at = limit.take_at
    for i in range(10_000):  # warm up allocator pools
        take_at(b"warm-%d" % i, T0)
    before = _rss_bytes()
    for i in range(1_000_000):
        take_at(b"client-%d" % i, T0)
    grown = _rss_bytes() - before
    assert grown < 4 * 1024 * 1024, f"RSS grew by {grown} bytes"
    assert table.used() == 65536
    # every key is live (same instant, bucket not full): each insert into a
    # full bucket pushed out live state, and that is counted
    assert table.live_evictions() == 1_010_000 - 65536


def test_idle_entries_are_reused_without_live_evictions():
    table = LimitTable(64)
    limit = Limit(table, 501, "token_bucket", 10.0, 1, 0.0)
    for i in range(1000):
        limit.take_at(b"old-%d" % i, T0)
    assert table.used() == 64
    assert table.live_evictions() == 1000 - 64  # all live at T0: each overflow is counted
    # from 0.1 s on every TAT is in the past: those buckets are full, forgetting them is free
    # (new keys arrive 0.1 s apart, so each is idle when the next comes)
    for i in range(1000):
        limit.take_at(b"new-%d" % i, T0 + (i + 1) * S // 10)
    assert table.live_evictions() == 1000 - 64
    assert table.used() == 64


def _keys_in_one_bucket(table: LimitTable, limit_id: int, count: int) -> list[bytes]:
    mask = table.nbuckets - 1
    target = hash_key(b"hot", limit_id) & mask
    keys = [b"hot"]
    i = 0
    while len(keys) < count:
        key = b"k%d" % i
        if hash_key(key, limit_id) & mask == target:
            keys.append(key)
        i += 1
    return keys


def test_eviction_takes_the_entry_closest_to_idle():
    table = LimitTable(64)
    limit = Limit(table, 502, "token_bucket", 1.0, 5, 0.0)
    hot, *others = _keys_in_one_bucket(table, 502, 9)
    for _ in range(5):
        limit.take_at(hot, T0)       # hot: TAT 5 s ahead
    for key in others[:7]:
        limit.take_at(key, T0)       # TAT 1 s ahead: closer to idle
    limit.take_at(others[7], T0)     # bucket full: evicts one of the 1-s entries
    assert table.live_evictions() == 1
    assert limit.take_at(hot, T0)[0] is False  # the hot key kept its state


# --- several processes -------------------------------------------------------

def _hammer(limit: Limit, start_ns: int, tries: int) -> int:
    while time.monotonic_ns() < start_ns:
        pass
    admitted = 0
    take = limit.take
    for _ in range(tries):
        admitted += take(b"shared")[0]
    return admitted


def test_two_processes_share_one_limit():
    """Two forked processes race for one bucket of 100,000 tokens that
    refills one per second, each trying 75,000 takes: together they get
    exactly the 100,000 (plus what refilled while they ran), whatever the
    machine's load does to their timing. A per-process table would admit all
    150,000; a lost update between processes would admit more."""
    table = LimitTable(1024)
    limit = Limit(table, 600, "token_bucket", 1.0, 100_000, 0.0)
    began = time.monotonic()
    start = time.monotonic_ns() + S // 5
    children = []
    for _ in range(2):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(read_fd)
                os.write(write_fd, b"%d" % _hammer(limit, start, 75_000))
            finally:
                os._exit(0)
        os.close(write_fd)
        children.append((pid, read_fd))
    counts = []
    for pid, read_fd in children:
        with os.fdopen(read_fd, "rb") as pipe:
            counts.append(int(pipe.read() or b"0"))
        os.waitpid(pid, 0)
    refilled = int(time.monotonic() - began) + 1
    total = sum(counts)
    assert all(count > 0 for count in counts), counts
    assert 100_000 <= total <= 100_000 + refilled, (counts, refilled)
