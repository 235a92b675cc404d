from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef enum:
    ENTRIES_PER_BUCKET = 8

cdef struct Entry:
    uint64_t key        # 64-bit hash of (limit id, key bytes); 0: never used
    int64_t idle_at     # ticks; from then on the entry holds nothing (GCRA: the TAT itself)
    int64_t window      # sliding window: number of the current fixed window
    uint64_t counts     # sliding window: current window's count << 32 | previous window's

cdef struct Bucket:     # 320 bytes: one lock line, then the entries a key may live in
    uint32_t lock       # 0 free, else the holder's pid
    uint32_t _pad0
    uint64_t live_evictions
    char _pad[48]
    Entry entries[ENTRIES_PER_BUCKET]

cdef struct Outcome:
    bint allowed
    int64_t limit
    int64_t remaining
    int64_t reset       # ticks
    int64_t retry_after # ticks


cdef class LimitTable:
    cdef Bucket *buckets
    cdef uint64_t bucket_mask
    cdef size_t nbytes
    cdef readonly long slots
    cdef readonly long nbuckets


cdef class Limit:
    cdef readonly LimitTable table
    cdef readonly long limit_id
    cdef readonly str algorithm
    cdef readonly double rate_per_second
    cdef readonly long burst
    cdef readonly double window_seconds
    cdef readonly long limit            # RateLimit-Limit: burst, or N per window
    cdef bint sliding
    cdef uint64_t seed
    cdef int64_t interval               # GCRA emission interval, ticks
    cdef int64_t tolerance              # GCRA burst tolerance, ticks
    cdef int64_t window_ticks

    cdef Outcome take_c(self, const unsigned char *key, Py_ssize_t size, int64_t now, bint commit) noexcept
    cdef void _gcra(self, Entry *entry, int64_t now, bint commit, Outcome *out) noexcept nogil
    cdef void _window(self, Entry *entry, int64_t now, bint commit, Outcome *out) noexcept nogil
    cdef tuple _answer(self, Outcome out)
    cdef void refund_c(self, const unsigned char *key, Py_ssize_t size, int64_t now) noexcept
    cpdef tuple take(self, bytes key)
    cpdef tuple take_at(self, bytes key, long long now_ns)
    cpdef tuple peek(self, bytes key)
    cpdef tuple peek_at(self, bytes key, long long now_ns)
    cpdef void refund(self, bytes key)
    cpdef void refund_at(self, bytes key, long long now_ns)
