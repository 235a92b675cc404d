# cython: language_level=3
"""Coarse deadlines for the per-request path: a hashed timing wheel.

Every proxied request needs a response-header timeout that is almost always
cancelled a millisecond later. `loop.call_later` + `cancel` per request costs
a timer handle and two libuv calls. Here arming is a set insertion into the
slot for the deadline's tick and cancelling a set removal; one loop timer per
worker advances the wheel every `TICK` seconds.

The price is resolution: a deadline never fires early and fires up to two
ticks late (arming counts from the cached `now`, up to a tick old, so one
tick is added), which is fine for gateway timeouts (the shortest sensible
ones are hundreds of ms).

The same tick keeps `now`, a cached `loop.time()` good to one tick, used for
activity timestamps so the hot path makes no clock call.
"""

TICK = 0.05
cdef double _TICK = TICK


cdef class Timed:
    cdef void deadline_passed(self):
        pass  # subclasses override; a bare Timed has nothing to time out


cdef class Deadlines:
    def __init__(self, loop):
        self.loop = loop
        self.now = loop.time()
        self.slots = {}
        self.tick_no = <long long>(self.now / _TICK)
        self.handle = loop.call_at((self.tick_no + 1) * _TICK, self._tick)

    cdef void arm(self, Timed owner, double timeout):
        """Call `owner.deadline_passed()` once `timeout` seconds have passed,
        unless `disarm(owner)` comes first. One deadline per owner at a time."""
        # +2: `now` may be up to a tick stale; never fire before `timeout`.
        cdef long long slot_no = <long long>((self.now + timeout) / _TICK) + 2
        cdef set slot = self.slots.get(slot_no)
        if slot is None:
            slot = set()
            self.slots[slot_no] = slot
        if owner.deadline_slot is not None:
            (<set>owner.deadline_slot).discard(owner)
        slot.add(owner)
        owner.deadline_slot = slot

    cdef void disarm(self, Timed owner):
        if owner.deadline_slot is not None:
            (<set>owner.deadline_slot).discard(owner)
            owner.deadline_slot = None

    def _tick(self):
        cdef double now = self.loop.time()
        # uvloop's clock has millisecond resolution: a tick run exactly on its
        # boundary may read just under it, and rescheduling that same boundary
        # would spin. The epsilon (2 ms) is covered by arm()'s extra tick.
        cdef long long current = <long long>((now + 0.002) / _TICK)
        cdef long long slot_no
        cdef set due
        cdef Timed owner
        self.now = now
        for slot_no in range(self.tick_no + 1, current + 1):
            due = self.slots.pop(slot_no, None)
            if due:
                # A callback may disarm others in this slot: iterate a copy and
                # skip any owner no longer armed here.
                for owner in list(due):
                    if owner.deadline_slot is due:
                        owner.deadline_slot = None
                        owner.deadline_passed()
        self.tick_no = current
        self.handle = self.loop.call_at((current + 1) * _TICK, self._tick)

    def close(self):
        self.handle.cancel()
