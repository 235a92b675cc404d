# Declarations of concurrency.pyx's shared table and admission stage, so that
# another module (the request path, say) can cimport them and take or give
# back a slot without going through Python.
from libc.stdint cimport int64_t, uint32_t

cdef struct Head:       # 64 bytes: a cache line of its own for the lock
    uint32_t lock       # 0 free, else the holder's pid
    uint32_t _pad0
    int64_t next_ticket
    char _pad[48]

cdef struct Row:        # one per worker process
    int64_t in_flight
    int64_t queued
    int64_t head_ticket # the ticket of this worker's oldest waiter; NO_TICKET when none
    int64_t _pad


cdef class SlotTable:
    cdef char *mem
    cdef size_t nbytes
    cdef uint32_t *owners
    cdef size_t owners_bytes
    cdef size_t record_bytes
    cdef readonly long records
    cdef readonly long rows
    cdef readonly long own      # the row this process claimed; -1 before claim()
    cdef uint32_t pid

    cdef inline Head *_head(self, long rec) noexcept nogil
    cdef inline Row *_row(self, long rec, long r) noexcept nogil
    cdef void _zero_row(self, long r)
    # TOOK (0), QUEUED (1) with *ticket set, or FULL (2)
    cdef int acquire(self, long rec, long max_in_flight, long max_queue, int64_t *ticket) noexcept
    cdef bint grant(self, long rec, long max_in_flight, int64_t ticket, int64_t next_head) noexcept
    cdef void leave_queue(self, long rec, bint was_head, int64_t next_head) noexcept
    cdef inline void release(self, long rec) noexcept


cdef class ConcurrencyLimit


cdef class Waiter:
    cdef ConcurrencyLimit stage
    cdef object exchange
    cdef int64_t ticket
    cdef double deadline
    cdef int state


cdef class ConcurrencyLimit:
    cdef SlotTable table
    cdef long record
    cdef readonly long max_in_flight
    cdef readonly long max_queue
    cdef readonly double queue_timeout
    cdef readonly str owner           # "route 'x'" or "cluster 'y'", for messages
    cdef object loop
    cdef object queue                 # deque of Waiter, oldest first (GONE ones skipped)
    cdef object timer
    cdef bint wake_scheduled
    cdef double next_reclaim
    cdef object full_error
    cdef object timeout_error
    cdef object release_callback      # self.slot_done, bound once: a bound method is
                                      # called by vectorcall, an instance's __call__ by
                                      # tp_call with an args tuple (~350 instructions more)

    cdef void _release(self)
    cdef void _drop_gone(self)
    cdef int64_t _next_ticket(self)
    cdef void _serve_queue(self)
    cdef void _expire(self, double now)
    cdef void _left_queue(self, Waiter waiter)
