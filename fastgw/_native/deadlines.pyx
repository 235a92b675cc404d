"""Coarse deadlines for the per-request path: a hashed timing wheel.

Every proxied request needs a response-header timeout that is almost always
cancelled a millisecond later. `loop.call_later` + `cancel` per request costs
a timer handle and two libuv calls. Here a worker's deadlines sit on a wheel
of WHEEL_SIZE slots, one per tick of `TICK` seconds (51.2 s around); one loop
timer per worker advances it every tick.

Each slot is an intrusive doubly-linked list of its owners (the links are
fields of `Timed`): arming is an unlink and a link, a few pointer writes, and
allocates nothing; cancelling is an unlink (`cancel_deadline`, inline in
deadlines.pxd). An owner due more than one turn ahead (a keep-alive timeout of
minutes) sits in its slot and is passed over until its tick comes. The wheel
as sets of owners in a dict keyed by tick cost ~2,500 instructions per
proxied request (a dict lookup with an int key, set insertions and
removals) and held a set per tick until it was swept (issue 17, finding 6);
this one holds nothing but its owners (bench/RESULTS.md, section 11).

The price is resolution: a deadline never fires early and fires up to two
ticks late (arming counts from the cached `now`, up to a tick old, so one
tick is added), which is fine for gateway timeouts (the shortest sensible
ones are hundreds of ms).

The same tick keeps `now`, a cached `loop.time()` good to one tick, used for
activity timestamps so the hot path makes no clock call.
"""
from cpython.list cimport PyList_GET_ITEM

TICK = 0.05
cdef double _TICK = TICK
WHEEL_SIZE = 1024
DEF _WHEEL_SIZE = 1024
DEF _WHEEL_MASK = 1023
DEF _DUE = -1   # deadline_tick of an owner taken off the wheel to fire this tick


cdef class Timed:
    cdef void deadline_passed(self):
        pass  # subclasses override; a bare Timed has nothing to time out


cdef inline Timed _new_head():
    cdef Timed head = Timed.__new__(Timed)
    head.deadline_prev = head
    head.deadline_next = head
    return head


cdef class Deadlines:
    def __init__(self, loop):
        self.loop = loop
        self.now = loop.time()
        self.heads = [_new_head() for _ in range(_WHEEL_SIZE)]
        self.tick_no = <long long>(self.now / _TICK)
        self.handle = loop.call_at((self.tick_no + 1) * _TICK, self._tick)

    cdef void arm(self, Timed owner, double timeout):
        """Call `owner.deadline_passed()` once `timeout` seconds have passed,
        unless `disarm(owner)` comes first. One deadline per owner at a time."""
        cdef long long tick = <long long>((self.now + timeout) / _TICK) + 2
        cdef Timed head = <Timed>PyList_GET_ITEM(self.heads, tick & _WHEEL_MASK)
        cdef Timed tail
        if owner.deadline_prev is not None:
            cancel_deadline(owner)
        tail = head.deadline_prev
        owner.deadline_prev = tail
        owner.deadline_next = head
        tail.deadline_next = owner
        head.deadline_prev = owner
        owner.deadline_tick = tick

    cdef void disarm(self, Timed owner):
        cancel_deadline(owner)

    def _tick(self):
        cdef double now = self.loop.time()
        cdef long long current = <long long>((now + 0.002) / _TICK)
        cdef long long first = self.tick_no + 1
        cdef long long tick
        cdef Timed head, owner, after
        cdef list due = None
        self.now = now
        if current - first >= _WHEEL_SIZE:  # the loop was stalled a whole turn: every slot once
            first = current - _WHEEL_SIZE + 1
        for tick in range(first, current + 1):
            head = <Timed>PyList_GET_ITEM(self.heads, tick & _WHEEL_MASK)
            owner = head.deadline_next
            while owner is not head:
                after = owner.deadline_next
                if owner.deadline_tick <= current:
                    cancel_deadline(owner)
                    owner.deadline_tick = _DUE
                    if due is None:
                        due = []
                    due.append(owner)
                owner = after
        self.tick_no = current
        self.handle = self.loop.call_at((current + 1) * _TICK, self._tick)
        if due is not None:
            for owner in due:
                # An earlier callback of this tick may have disarmed or re-armed it.
                if owner.deadline_tick == _DUE:
                    owner.deadline_tick = 0
                    owner.deadline_passed()

    @property
    def slot_count(self):
        """Slots holding at least one owner: for tests and diagnostics."""
        cdef Timed head
        cdef int count = 0
        for head in self.heads:
            if head.deadline_next is not head:
                count += 1
        return count

    @property
    def armed_count(self):
        """Owners armed now."""
        cdef Timed head, owner
        cdef long long count = 0
        for head in self.heads:
            owner = head.deadline_next
            while owner is not head:
                count += 1
                owner = owner.deadline_next
        return count

    def close(self):
        self.handle.cancel()
