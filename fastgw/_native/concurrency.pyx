# cython: language_level=3
"""Concurrency limits that hold for the whole host: requests in flight per
route or per cluster, with a bounded FIFO queue and a queue timeout.

Why host-wide
    A configured "10 in flight" must mean 10 for the gateway instance, as
    Envoy's cluster circuit breakers and nginx's limit_conn zones do: the
    point of the limit is to protect an upstream (an inference server that
    runs N jobs at once), which does not care how many worker processes the
    gateway has. Per-worker counters would admit workers x N. So the counts
    live in shared memory (`SlotTable`), mapped by the master before it forks
    its workers, like the rate-limit table.

The table
    One record per limit (a route's or a cluster's), and in each record one
    row per worker process: (in_flight, queued, head_ticket). A worker only
    ever changes its own row; the limit's count is the sum of the rows, taken
    under the record's lock (a spinlock word holding the holder's pid,
    includes/fastgw_atomic.h, taken over from a holder that died). Rows are owned by
    processes: a worker claims a free row at start (`claim`).

Slots of a crashed worker
    A worker killed while it holds slots leaves counts in its row. They are
    freed when a process finds the row's owner gone (kill(pid, 0) answers
    ESRCH): the master's replacement worker claims and zeroes a dead row
    when it starts, and any worker with waiters checks for dead rows once a
    second (`reclaim_dead`). Until then the dead worker's slots count as
    taken: the limit errs on the side of admitting fewer, never more. Since
    each row has one writer and every count is one word, a crash at any
    instruction leaves the sum consistent with the row.

Waiting: FIFO across the host
    Each worker keeps its own queue of waiting exchanges (they live on its
    event loop), but the order is one for the host: a waiter takes a ticket
    from the record's counter; each row publishes the ticket of its oldest
    live waiter (head_ticket); a free slot goes only to the waiter holding
    the smallest published ticket, and a newcomer queues while anyone waits,
    so nobody jumps the queue. A release in a worker hands the slot to its
    own waiters at once (next loop iteration); a waiter in another worker
    notices the free slot by polling every POLL_INTERVAL while it waits, so
    a slot whose next owner is in another worker idles up to one poll (10
    ms). Nothing polls while nobody waits.

Costs
    A request that finds a free slot with nobody waiting: one lock, a pass
    over the rows (one per worker, plus two spare), one increment; its
    release is one atomic decrement: about 220 instructions with the calls
    into this module. The admission protocol around it (proxy.pyx) costs
    about 800 more for the first stage (bench/RESULTS.md).
"""
import collections

from libc.stdint cimport int64_t, uint32_t
from posix.unistd cimport getpid

from fastgw._native.includes.atomic cimport (
    fg_add_i64, fg_cas_u32, fg_load_acquire_u32, fg_load_i64, fg_pid_lock, fg_pid_unlock, fg_process_gone,
    fg_store_i64, fg_store_release_u32,
)
from fastgw._native.includes.shm cimport fg_shared_map, fg_shared_unmap

from fastgw._native.errors import ProxyError
from fastgw._native.proxy import WAIT

# No waiter in a row: larger than any ticket.
DEF NO_TICKET = 0x7fffffffffffffff

# acquire() answers
DEF TOOK = 0
DEF QUEUED = 1
DEF FULL = 2
TOOK_SLOT, QUEUED_TICKET, REFUSED = TOOK, QUEUED, FULL

# A worker with waiters looks for a slot freed by another worker this often;
# it is also the resolution of queue timeouts.
POLL_INTERVAL = 0.01
# ... and for rows of dead workers at most this often.
RECLAIM_INTERVAL = 1.0
# Retry-After on a refusal, in seconds.
RETRY_AFTER = 1


# The structs, fields and cdef methods below are declared in concurrency.pxd.

cdef class SlotTable:
    """`records` limits x `rows` worker rows in one shared anonymous mapping.
    Create it before forking; each process that takes slots calls `claim()`
    once (after the fork) to own a row."""

    def __cinit__(self, long records, long rows):
        if records < 1 or rows < 1:
            raise ValueError("records and rows must be 1 or more")
        self.records = records
        self.rows = rows
        self.own = -1
        self.owners_bytes = ((rows * sizeof(uint32_t) + 63) // 64) * 64
        self.record_bytes = sizeof(Head) + rows * sizeof(Row)
        self.nbytes = self.owners_bytes + records * self.record_bytes
        cdef void *mem = fg_shared_map(self.nbytes)   # zeroed
        if mem == NULL:
            self.mem = NULL
            raise MemoryError(f"cannot map {self.nbytes} bytes of shared memory for concurrency limits")
        self.mem = <char *>mem
        self.owners = <uint32_t *>mem
        cdef long r, rec
        for rec in range(records):
            for r in range(rows):
                self._row(rec, r).head_ticket = NO_TICKET

    def __dealloc__(self):
        if self.mem != NULL:
            fg_shared_unmap(self.mem, self.nbytes)
            self.mem = NULL

    cdef inline Head *_head(self, long rec) noexcept nogil:
        return <Head *>(self.mem + self.owners_bytes + rec * self.record_bytes)

    cdef inline Row *_row(self, long rec, long r) noexcept nogil:
        return <Row *>(self.mem + self.owners_bytes + rec * self.record_bytes + sizeof(Head)) + r

    @property
    def bytes(self):
        return self.nbytes

    # -- rows and their owners ------------------------------------------------
    def claim(self):
        """Own a row for this process: a free one, or one whose owner died
        (its counts are zeroed first: that frees a crashed worker's slots)."""
        cdef uint32_t pid = <uint32_t>getpid()
        cdef uint32_t owner
        cdef long r
        if self.own >= 0 and self.pid == pid:
            return self.own  # claimed already by this process
        self.pid = pid
        for r in range(self.rows):
            owner = fg_load_acquire_u32(&self.owners[r])
            # A row marked with our own pid is a dead process's whose pid we reuse.
            if owner == 0 or owner == pid or fg_process_gone(owner):
                if fg_cas_u32(&self.owners[r], owner, pid):
                    self._zero_row(r)
                    self.own = r
                    return r
        raise RuntimeError(f"no free row in the concurrency table ({self.rows} rows, all owned by live processes)")

    cdef void _zero_row(self, long r):
        cdef long rec
        cdef Head *head
        cdef Row *row
        for rec in range(self.records):
            head = self._head(rec)
            row = self._row(rec, r)
            fg_pid_lock(&head.lock, self.pid)
            fg_store_i64(&row.in_flight, 0)
            fg_store_i64(&row.queued, 0)
            fg_store_i64(&row.head_ticket, NO_TICKET)
            fg_pid_unlock(&head.lock)

    def reclaim_dead(self):
        """Free the rows of processes that no longer exist; returns how many.
        The row is taken over (owner := this pid) while it is zeroed, so a
        reclaimer that dies half-way leaves a row that is reclaimable again."""
        cdef uint32_t pid = <uint32_t>getpid()
        cdef uint32_t owner
        cdef long r, freed = 0
        self.pid = pid
        for r in range(self.rows):
            owner = fg_load_acquire_u32(&self.owners[r])
            if owner != 0 and owner != pid and fg_process_gone(owner):
                if fg_cas_u32(&self.owners[r], owner, pid):
                    self._zero_row(r)
                    fg_store_release_u32(&self.owners[r], 0)
                    freed += 1
        return freed

    def owner(self, long r):
        return fg_load_acquire_u32(&self.owners[r])

    # -- the counts ---------------------------------------------------------------
    cdef int acquire(self, long rec, long max_in_flight, long max_queue, int64_t *ticket) noexcept:
        """A slot now (TOOK), else a place in the queue with a ticket (QUEUED),
        else FULL. A slot is taken only when nobody anywhere waits."""
        cdef Head *head = self._head(rec)
        cdef Row *rows = self._row(rec, 0)
        cdef Row *mine = rows + self.own
        cdef int64_t in_flight = 0, queued = 0
        cdef long r
        cdef int answer
        fg_pid_lock(&head.lock, self.pid)
        for r in range(self.rows):
            in_flight += fg_load_i64(&rows[r].in_flight)
            queued += fg_load_i64(&rows[r].queued)
        if queued == 0 and in_flight < max_in_flight:
            fg_store_i64(&mine.in_flight, mine.in_flight + 1)
            answer = TOOK
        elif queued < max_queue:
            ticket[0] = head.next_ticket
            head.next_ticket += 1
            fg_store_i64(&mine.queued, mine.queued + 1)
            if mine.head_ticket == NO_TICKET:
                fg_store_i64(&mine.head_ticket, ticket[0])
            answer = QUEUED
        else:
            answer = FULL
        fg_pid_unlock(&head.lock)
        return answer

    cdef bint grant(self, long rec, long max_in_flight, int64_t ticket, int64_t next_head) noexcept:
        """The waiter holding `ticket` (this row's head) takes a slot if one is
        free and no older ticket waits anywhere; this row's head becomes
        `next_head` (NO_TICKET when nobody else waits here)."""
        cdef Head *head = self._head(rec)
        cdef Row *rows = self._row(rec, 0)
        cdef Row *mine = rows + self.own
        cdef int64_t in_flight = 0, oldest = NO_TICKET, t
        cdef long r
        cdef bint granted = False
        fg_pid_lock(&head.lock, self.pid)
        for r in range(self.rows):
            in_flight += fg_load_i64(&rows[r].in_flight)
            t = fg_load_i64(&rows[r].head_ticket)
            if t < oldest:
                oldest = t
        if in_flight < max_in_flight and oldest == ticket:
            fg_store_i64(&mine.in_flight, mine.in_flight + 1)
            fg_store_i64(&mine.queued, mine.queued - 1)
            fg_store_i64(&mine.head_ticket, next_head)
            granted = True
        fg_pid_unlock(&head.lock)
        return granted

    cdef void leave_queue(self, long rec, bint was_head, int64_t next_head) noexcept:
        """A waiter left without a slot (timeout, client gone)."""
        cdef Head *head = self._head(rec)
        cdef Row *mine = self._row(rec, self.own)
        fg_pid_lock(&head.lock, self.pid)
        fg_store_i64(&mine.queued, mine.queued - 1)
        if was_head:
            fg_store_i64(&mine.head_ticket, next_head)
        fg_pid_unlock(&head.lock)

    cdef inline void release(self, long rec) noexcept:
        """One slot of this process's back. Only this process writes its row;
        readers sum under the lock and see either value."""
        fg_add_i64(&self._row(rec, self.own).in_flight, -1)

    # -- Python access (tests, diagnostics, metrics) ---------------------------
    def own_counts(self, long rec):
        """(in flight, queued) in this process's row: what this worker adds to
        the host-wide figures (the metrics sum the workers' values)."""
        if self.own < 0:
            return (0, 0)
        cdef Row *row = self._row(rec, self.own)
        return (fg_load_i64(&row.in_flight), fg_load_i64(&row.queued))

    def in_flight(self, long rec):
        """Slots taken host-wide."""
        cdef int64_t total = 0
        cdef long r
        for r in range(self.rows):
            total += fg_load_i64(&self._row(rec, r).in_flight)
        return total

    def queued(self, long rec):
        cdef int64_t total = 0
        cdef long r
        for r in range(self.rows):
            total += fg_load_i64(&self._row(rec, r).queued)
        return total

    def try_take(self, long rec, long max_in_flight, long max_queue=0):
        """(answer, ticket): TOOK_SLOT, QUEUED_TICKET or REFUSED; for tests."""
        self._check_claimed()
        cdef int64_t ticket = -1
        answer = self.acquire(rec, max_in_flight, max_queue, &ticket)
        return answer, ticket

    def try_grant(self, long rec, long max_in_flight, long long ticket, next_head=None):
        self._check_claimed()
        return self.grant(rec, max_in_flight, ticket, NO_TICKET if next_head is None else next_head)

    def give_back(self, long rec):
        self._check_claimed()
        self.release(rec)

    def _check_claimed(self):
        if self.own < 0:
            raise RuntimeError("claim() a row first")


# ---------------------------------------------------------------------------
# The admission stage (fastgw/_native/proxy.pyx: RoutePlan.admission)
# ---------------------------------------------------------------------------

DEF WAITING = 0
DEF GRANTED = 1
DEF GONE = 2


cdef class Waiter:
    """A queued exchange; registered as its exchange's finish callback."""

    def __call__(self, exchange):
        """The exchange ended: leave the queue, or give the slot back."""
        if self.state == WAITING:
            self.state = GONE
            self.exchange = None
            self.stage._left_queue(self)
        elif self.state == GRANTED:
            self.state = GONE
            self.exchange = None
            self.stage._release()


cdef class ConcurrencyLimit:
    """One limit (a route's or a cluster's) in one worker: `admit(exchange)`
    is the admission stage; `slot_done` the finish callback of an exchange
    that got its slot at once (a queued one's is its Waiter)."""

    def __init__(self, SlotTable table not None, long record, long max_in_flight, long max_queue,
                 double queue_timeout, str owner, loop):
        if table.own < 0:
            raise RuntimeError("the table has no row for this process: call claim() first")
        if not 0 <= record < table.records:
            raise ValueError(f"record {record} is outside the table ({table.records} records)")
        self.table = table
        self.record = record
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.owner = owner
        self.loop = loop
        self.queue = collections.deque()
        self.release_callback = self.slot_done
        retry = b"Retry-After: %d\r\n" % RETRY_AFTER
        if max_queue:
            self.full_error = ProxyError(
                503, "queue_full",
                f"{owner} has {max_in_flight} requests in flight and {max_queue} waiting, the most it allows",
                retry)
        else:
            self.full_error = ProxyError(
                503, "concurrency_limited",
                f"{owner} has {max_in_flight} requests in flight, the most it allows", retry)
        self.timeout_error = ProxyError(
            503, "queue_timeout",
            f"no request slot of {owner} ({max_in_flight} in flight at most) came free "
            f"within {queue_timeout:g}s", retry)

    def own_counts(self):
        """(in flight, queued) of this limit in this worker's row (metrics)."""
        return self.table.own_counts(self.record)

    def admit(self, exchange):
        cdef int64_t ticket = 0
        cdef int answer = self.table.acquire(self.record, self.max_in_flight, self.max_queue, &ticket)
        if answer == TOOK:
            exchange.on_finish(self.release_callback)
            return None
        if answer == FULL:
            return self.full_error
        cdef Waiter waiter = Waiter.__new__(Waiter)
        waiter.stage = self
        waiter.exchange = exchange
        waiter.ticket = ticket
        waiter.deadline = self.loop.time() + self.queue_timeout
        self.queue.append(waiter)
        exchange.on_finish(waiter)
        # No slot can be ours yet (acquire would have taken a free one had
        # nobody waited): a release here or the poll hands it over.
        if self.timer is None:
            self.timer = self.loop.call_later(POLL_INTERVAL, self._poll)
        return WAIT

    def slot_done(self, exchange):
        """The finish callback of an exchange that got its slot at once."""
        self._release()

    cdef void _release(self):
        self.table.release(self.record)
        if self.queue and not self.wake_scheduled:
            # Not now: we are inside another exchange's finish; the waiter goes
            # on at the next loop iteration, outside that call.
            self.wake_scheduled = True
            self.loop.call_soon(self._wake)

    def _wake(self):
        self.wake_scheduled = False
        self._serve_queue()

    def _poll(self):
        self.timer = None
        cdef double now = self.loop.time()
        if now >= self.next_reclaim:
            self.next_reclaim = now + RECLAIM_INTERVAL
            self.table.reclaim_dead()
        self._expire(now)
        self._serve_queue()
        if self.queue:
            self.timer = self.loop.call_later(POLL_INTERVAL, self._poll)

    cdef void _drop_gone(self):
        queue = self.queue
        while queue and (<Waiter>queue[0]).state != WAITING:
            queue.popleft()

    cdef int64_t _next_ticket(self):
        """The ticket of the oldest waiter after the head; NO_TICKET if none."""
        cdef Waiter waiter
        cdef Py_ssize_t i
        queue = self.queue
        for i in range(1, len(queue)):
            waiter = <Waiter>queue[i]
            if waiter.state == WAITING:
                return waiter.ticket
        return NO_TICKET

    cdef void _serve_queue(self):
        """Hand free slots to this worker's waiters, oldest first, while the
        host-wide order says it is their turn."""
        cdef Waiter waiter
        queue = self.queue
        while True:
            self._drop_gone()
            if not queue:
                return
            waiter = <Waiter>queue[0]
            if not self.table.grant(self.record, self.max_in_flight, waiter.ticket, self._next_ticket()):
                return
            queue.popleft()
            waiter.state = GRANTED
            exchange = waiter.exchange
            exchange.admission_done(None)

    cdef void _expire(self, double now):
        """Waiters past their deadline get 503 queue_timeout (FIFO with one
        timeout: the oldest expire first)."""
        cdef Waiter waiter
        queue = self.queue
        while True:
            self._drop_gone()
            if not queue:
                return
            waiter = <Waiter>queue[0]
            if waiter.deadline > now:
                return
            queue.popleft()
            waiter.state = GONE
            self._drop_gone()
            self.table.leave_queue(self.record, True, (<Waiter>queue[0]).ticket if queue else NO_TICKET)
            exchange = waiter.exchange
            waiter.exchange = None
            exchange.admission_done(self.timeout_error)

    cdef void _left_queue(self, Waiter waiter):
        """A waiter's exchange ended while it waited (the client left)."""
        cdef bint was_head = bool(self.queue) and self.queue[0] is waiter
        self._drop_gone()
        self.table.leave_queue(self.record, was_head,
                               (<Waiter>self.queue[0]).ticket if was_head and self.queue else NO_TICKET)

    # -- diagnostics ------------------------------------------------------------
    def waiting_here(self):
        """Waiters in this worker's queue."""
        return sum(1 for w in self.queue if (<Waiter>w).state == WAITING)

    def in_flight(self):
        return self.table.in_flight(self.record)

