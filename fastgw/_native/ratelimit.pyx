# cython: language_level=3
"""Rate limits that hold for the whole host: state in a shared-memory table.

`LimitTable(slots)` maps an anonymous shared mapping (MAP_SHARED). Create it
in the master before forking: every worker inherits the same physical pages,
so a limit of 1,000/s is 1,000/s for the host, not per worker. Time is
CLOCK_MONOTONIC, which is one clock for every process on a Linux host.

Memory
    The table is fixed at creation and never grows: 40 bytes per slot
    (8-entry buckets of 320 bytes; the slot count is rounded up to a power of
    two times 8), so the default 65,536 slots cost 2.5 MiB of shared memory,
    touched up front so that it is resident from the start. A key hashes
    (64 bits, seeded with the limit id) to one bucket and can only live in
    that bucket's 8 entries. A new key takes the entry whose state becomes
    idle first: an empty one, or one whose state is already idle (a token
    bucket whose TAT is in the past is full, a window whose counts have both
    expired is empty: forgetting them changes no answer). Only when all 8 are
    live, which takes more live keys than the table has room for, is live
    state evicted (the entry closest to idle); that key then starts over with
    a full allowance, so a flood of distinct keys that overflows the table can
    over-admit the keys it pushes out. `live_evictions()` counts those events;
    size the table for the number of keys active within one refill period.

Concurrency
    Each bucket has a spinlock word (GCC atomics, holder pid) taken around the
    lookup, the insert and the state update, so the read-modify-write of one
    key is atomic across processes and a key is never inserted twice. A
    critical section is a few dozen instructions. A waiter that has spun for
    a while checks whether the holder still exists and takes over the lock of
    a dead holder (a worker SIGKILLed mid-update), so one crash cannot wedge
    the table; that bucket's state may then be one update behind.

Token bucket: GCRA
    The state is one number, the theoretical arrival time (TAT). With
    emission interval T = 1/rate and burst b, tolerance tau = (b-1)*T, a
    request at time t is allowed iff t >= max(TAT, t) - tau, and then
    TAT = max(TAT, t) + T. Times are integer "ticks" of 1/16 ns and T is
    rounded down to a tick, so T for 3,000/s is 5,333,333 ticks: never less
    than the configured rate, and more by under 1/(16 * T in ns) (6e-8 at
    3,000/s, one extra request in 190 hours). Int64 ticks overflow after 18
    years of system uptime.

Sliding window ("N per hour")
    The usual sliding-window counter: counts for the current and the previous
    fixed window; the estimate is prev * (time left of the sliding window that
    overlaps the previous window) / W + cur. A request is allowed iff
    estimate + 1 <= N. It assumes the previous window's requests were spread
    evenly over it: a burst at the end of the previous window is forgotten
    linearly rather than all at once W later, so it can admit a little more
    or less than an exact log would around window boundaries; it never admits
    more than N in any one fixed window, and at most 2N in any span of W.

Answers follow the RateLimit header draft: limit (burst / N), remaining whole
requests, reset (seconds until the bucket is full again / until the window
frees a slot), retry_after (seconds until the next request would be allowed;
0 when this one was).
"""
import os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport INT64_MAX, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from posix.unistd cimport getpid

from fastgw._native.includes.atomic cimport fg_pid_lock, fg_pid_unlock
from fastgw._native.includes.clock cimport fg_monotonic_ns
from fastgw._native.includes.shm cimport fg_shared_map, fg_shared_unmap

TICKS_PER_NS = 16
cdef int64_t _TICKS_PER_NS = 16
cdef double _TICKS_PER_SECOND = 16e9

# The pid in the lock word; refreshed in forked children.
cdef uint32_t _pid = <uint32_t>getpid()


def _refresh_pid():
    global _pid
    _pid = <uint32_t>getpid()


os.register_at_fork(after_in_child=_refresh_pid)


cdef inline uint64_t _mix(uint64_t x) noexcept nogil:
    x ^= x >> 30
    x *= 0xbf58476d1ce4e5b9ULL
    x ^= x >> 27
    x *= 0x94d049bb133111ebULL
    x ^= x >> 31
    return x


cdef uint64_t key_hash(const unsigned char *data, Py_ssize_t size, uint64_t seed) noexcept nogil:
    """64-bit hash of `data`, never 0 (0 marks an unused entry)."""
    cdef uint64_t h = _mix(seed * 0x9e3779b97f4a7c15ULL + <uint64_t>size)
    cdef uint64_t word
    cdef Py_ssize_t i = 0
    while i + 8 <= size:
        memcpy(&word, data + i, 8)
        h = _mix(h ^ word) + 0x9e3779b97f4a7c15ULL
        i += 8
    if i < size:
        word = 0
        memcpy(&word, data + i, size - i)
        h = _mix(h ^ word ^ (<uint64_t>(size - i) << 59))
    h = _mix(h)
    return h if h != 0 else 1


def hash_key(bytes key, long limit_id=0):
    """The table hash of `key` for a limit (exposed for tests)."""
    return key_hash(<const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), <uint64_t>limit_id)


def now_ns():
    """CLOCK_MONOTONIC in integer nanoseconds, the clock `take` uses."""
    return fg_monotonic_ns()


cdef class LimitTable:
    """A fixed-size shared hash table of limiter state. See the module doc."""

    def __cinit__(self, long slots):
        if slots < 1:
            raise ValueError("slots must be 1 or more")
        cdef long nbuckets = 1
        while nbuckets * ENTRIES_PER_BUCKET < slots:
            nbuckets <<= 1
        self.nbuckets = nbuckets
        self.slots = nbuckets * ENTRIES_PER_BUCKET
        self.bucket_mask = <uint64_t>(nbuckets - 1)
        self.nbytes = <size_t>nbuckets * sizeof(Bucket)
        # Zeroed and faulted in: resident from the start instead of growing
        # with the keys seen.
        cdef void *mem = fg_shared_map(self.nbytes)
        if mem == NULL:
            self.buckets = NULL
            raise MemoryError(f"cannot map {self.nbytes} bytes of shared memory for the rate-limit table")
        self.buckets = <Bucket *>mem

    def __dealloc__(self):
        if self.buckets != NULL:
            fg_shared_unmap(self.buckets, self.nbytes)
            self.buckets = NULL

    @property
    def bytes(self):
        """Shared memory the table occupies."""
        return self.nbytes

    def live_evictions(self):
        """How many times a key's live state was pushed out by a new key."""
        cdef uint64_t total = 0
        cdef long i
        for i in range(self.nbuckets):
            total += self.buckets[i].live_evictions
        return total

    def used(self):
        """Entries holding a key (idle or not); for tests and diagnostics."""
        cdef long i, j, count = 0
        for i in range(self.nbuckets):
            for j in range(ENTRIES_PER_BUCKET):
                if self.buckets[i].entries[j].key != 0:
                    count += 1
        return count


cdef inline Entry *_find(Bucket *bucket, uint64_t h) noexcept nogil:
    cdef int i
    for i in range(ENTRIES_PER_BUCKET):
        if bucket.entries[i].key == h:
            return &bucket.entries[i]
    return NULL


cdef Entry *_claim(Bucket *bucket, uint64_t h, int64_t now) noexcept nogil:
    """The entry for a new key: the one that goes (or went) idle first."""
    cdef Entry *victim = &bucket.entries[0]
    cdef int i
    for i in range(1, ENTRIES_PER_BUCKET):
        if bucket.entries[i].idle_at < victim.idle_at:
            victim = &bucket.entries[i]
    if victim.key != 0 and victim.idle_at > now:
        bucket.live_evictions += 1
    victim.key = h
    victim.idle_at = 0
    victim.window = 0
    victim.counts = 0
    return victim


cdef inline int64_t _ceil_ticks(double ticks) noexcept nogil:
    cdef int64_t whole = <int64_t>ticks
    return whole + 1 if <double>whole < ticks else whole


cdef int64_t _window_wait(double prev, double cur, double elapsed, double width, double target) noexcept nogil:
    """Ticks from now until the sliding estimate prev*(W-e)/W + cur is <= target."""
    if target < 0:
        target = 0
    cdef double at
    if cur <= target:
        if prev <= 0 or prev * (width - elapsed) <= (target - cur) * width:
            return 0
        at = width * (1.0 - (target - cur) / prev)  # within this window
        return _ceil_ticks(at - elapsed)
    # Only once this window is the previous one: cur*(W-e')/W <= target.
    at = width * (1.0 - target / cur)
    return _ceil_ticks(width - elapsed + at)


cdef class Limit:
    """One configured limit over a `LimitTable`.

    Limit(table, limit_id, algorithm, rate_per_second, burst, window_seconds)

    algorithm "token_bucket": GCRA with `rate_per_second` and `burst`
    (window_seconds is ignored). algorithm "sliding_window": N =
    rate_per_second * window_seconds requests per `window_seconds` (N must be
    a whole number; burst is ignored). `limit_id` seeds the key hash, so the
    same key bytes under two limits are two entries; it must be the same in
    every process (derive it from the config, not from object identity).
    """

    def __init__(self, LimitTable table not None, long limit_id, str algorithm, double rate_per_second,
                 long burst, double window_seconds):
        self.table = table
        self.limit_id = limit_id
        self.algorithm = algorithm
        self.rate_per_second = rate_per_second
        self.burst = burst
        self.window_seconds = window_seconds
        self.seed = <uint64_t>limit_id
        cdef double n
        if not rate_per_second > 0:
            raise ValueError(f"rate_per_second must be greater than 0, got {rate_per_second}")
        if algorithm == "token_bucket":
            if burst < 1:
                raise ValueError(f"burst must be 1 or more, got {burst}")
            self.sliding = False
            self.limit = burst
            self.interval = <int64_t>(_TICKS_PER_SECOND / rate_per_second)  # rounded down
            if self.interval < 1:
                self.interval = 1
            self.tolerance = (burst - 1) * self.interval
        elif algorithm == "sliding_window":
            if not window_seconds > 0:
                raise ValueError(f"window_seconds must be greater than 0, got {window_seconds}")
            n = rate_per_second * window_seconds
            if abs(n - <double>(<long>(n + 0.5))) > 1e-6 * n or n + 0.5 < 1 or n > 2147483647:
                raise ValueError(f"a sliding window needs a whole number of requests per window "
                                 f"between 1 and 2**31-1, got {n:g}")
            self.sliding = True
            self.limit = <long>(n + 0.5)
            self.window_ticks = <int64_t>(window_seconds * _TICKS_PER_SECOND + 0.5)
        else:
            raise ValueError(f"unknown algorithm {algorithm!r} (token_bucket or sliding_window)")

    cdef Outcome take_c(self, const unsigned char *key, Py_ssize_t size, int64_t now, bint commit) noexcept:
        """Decide for one request at `now` (ticks); with `commit`, count it if allowed."""
        cdef uint64_t h = key_hash(key, size, self.seed)
        cdef Bucket *bucket = &self.table.buckets[h & self.table.bucket_mask]
        cdef Outcome out
        cdef Entry *entry
        cdef Entry scratch
        fg_pid_lock(&bucket.lock, _pid)
        entry = _find(bucket, h)
        if entry == NULL:
            if commit:
                entry = _claim(bucket, h, now)
            else:
                memset(&scratch, 0, sizeof(Entry))
                entry = &scratch
        if self.sliding:
            self._window(entry, now, commit, &out)
        else:
            self._gcra(entry, now, commit, &out)
        fg_pid_unlock(&bucket.lock)
        return out

    cdef void _gcra(self, Entry *entry, int64_t now, bint commit, Outcome *out) noexcept nogil:
        cdef int64_t tat = entry.idle_at if entry.idle_at > now else now
        cdef int64_t new_tat
        out.limit = self.burst
        if now < tat - self.tolerance:
            out.allowed = False
            out.remaining = 0
            out.reset = tat - now
            out.retry_after = tat - self.tolerance - now
            return
        new_tat = tat + self.interval
        if commit:
            entry.idle_at = new_tat
        out.allowed = True
        out.remaining = (now + self.tolerance + self.interval - new_tat) // self.interval
        out.reset = new_tat - now
        out.retry_after = 0

    cdef void _window(self, Entry *entry, int64_t now, bint commit, Outcome *out) noexcept nogil:
        cdef int64_t width = self.window_ticks
        cdef int64_t number = now // width
        cdef uint64_t cur = entry.counts >> 32
        cdef uint64_t prev = entry.counts & 0xffffffffULL
        if entry.window != number:
            prev = cur if entry.window == number - 1 else 0
            cur = 0
        cdef double elapsed = <double>(now - number * width)
        cdef double w = <double>width
        cdef double estimate = <double>prev * (w - elapsed) / w + <double>cur
        out.limit = self.limit
        if estimate + 1.0 > <double>self.limit:
            out.allowed = False
            out.remaining = 0
            out.retry_after = _window_wait(<double>prev, <double>cur, elapsed, w, <double>(self.limit - 1))
            if out.retry_after < 1:
                out.retry_after = 1
            out.reset = out.retry_after  # the slot that frees is the one this request waits for
            if commit:
                entry.window = number
                entry.counts = (cur << 32) | prev
            return
        cur += 1
        if commit:
            entry.window = number
            entry.counts = (cur << 32) | prev
            entry.idle_at = (number + 2) * width
        estimate += 1.0
        out.allowed = True
        out.remaining = <int64_t>(<double>self.limit - estimate)
        if out.remaining < 0:
            out.remaining = 0
        # Until `remaining` grows by one: the estimate drops to limit - remaining - 1.
        out.reset = _window_wait(<double>prev, <double>cur, elapsed, w,
                                 <double>(self.limit - out.remaining - 1))
        out.retry_after = 0

    cdef void refund_c(self, const unsigned char *key, Py_ssize_t size, int64_t now) noexcept:
        """Give back one request taken a moment ago (another limit denied it)."""
        cdef uint64_t h = key_hash(key, size, self.seed)
        cdef Bucket *bucket = &self.table.buckets[h & self.table.bucket_mask]
        cdef Entry *entry
        cdef uint64_t cur, prev
        cdef int64_t number
        fg_pid_lock(&bucket.lock, _pid)
        entry = _find(bucket, h)
        if entry != NULL:
            if not self.sliding:
                entry.idle_at -= self.interval
            else:
                number = now // self.window_ticks
                cur = entry.counts >> 32
                prev = entry.counts & 0xffffffffULL
                if entry.window == number and cur > 0:
                    cur -= 1
                elif entry.window == number - 1 and cur > 0:
                    cur -= 1   # taken just before the window turned
                entry.counts = (cur << 32) | prev
        fg_pid_unlock(&bucket.lock)

    cdef tuple _answer(self, Outcome out):
        return (out.allowed, out.limit, out.remaining,
                out.reset / _TICKS_PER_SECOND, out.retry_after / _TICKS_PER_SECOND)

    cpdef tuple take(self, bytes key):
        """(allowed, limit, remaining, reset_seconds, retry_after_seconds); counts the request if allowed."""
        return self._answer(self.take_c(<const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                                        fg_monotonic_ns() * _TICKS_PER_NS, True))

    cpdef tuple take_at(self, bytes key, long long now_ns):
        """`take` at a given CLOCK_MONOTONIC time in ns (tests drive the clock)."""
        return self._answer(self.take_c(<const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                                        now_ns * _TICKS_PER_NS, True))

    cpdef tuple peek(self, bytes key):
        """What `take` would answer now, without counting anything."""
        return self._answer(self.take_c(<const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                                        fg_monotonic_ns() * _TICKS_PER_NS, False))

    cpdef tuple peek_at(self, bytes key, long long now_ns):
        return self._answer(self.take_c(<const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                                        now_ns * _TICKS_PER_NS, False))

    cpdef void refund(self, bytes key):
        """Undo one allowed `take` of `key` made just now."""
        self.refund_c(<const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                      fg_monotonic_ns() * _TICKS_PER_NS)

    cpdef void refund_at(self, bytes key, long long now_ns):
        self.refund_c(<const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                      now_ns * _TICKS_PER_NS)
