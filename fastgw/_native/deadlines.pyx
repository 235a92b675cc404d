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

Emptied slots are dropped once a second (`_tick`). Cancelling is a set
removal that leaves the slot's set in `slots` until its tick comes, and a
keep-alive connection re-arms its keepalive deadline (`server.timeouts.keepalive`,
up to minutes ahead) after every request: without the sweep the wheel held a
set for every tick of the next `keepalive` seconds, each as large as the
connections that passed through it (sets never shrink), e.g. 300 s / 50 ms =
6,000 sets, several MB per worker and more with more connections (issue 17,
finding 6; bench/RESULTS.md "Memory under a long load"). With it the wheel holds
about one set per armed owner at most, plus the last second's.

The same tick keeps `now`, a cached `loop.time()` good to one tick, used for
activity timestamps so the hot path makes no clock call.
"""

TICK = 0.05
cdef double _TICK = TICK
# Ticks between sweeps of emptied slots (one second): often enough that few
# empty sets pile up, rarely enough that walking `slots` costs nothing.
SWEEP_TICKS = 20
cdef long long _SWEEP_TICKS = SWEEP_TICKS


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
        cdef list empty
        if current // _SWEEP_TICKS != self.tick_no // _SWEEP_TICKS:
            # Once a second: forget the slots every owner has left (disarmed or
            # re-armed elsewhere). No owner's `deadline_slot` is an empty set.
            empty = [slot_no for slot_no, slot in self.slots.items() if not slot]
            for slot_no in empty:
                del self.slots[slot_no]
        self.tick_no = current
        self.handle = self.loop.call_at((current + 1) * _TICK, self._tick)

    @property
    def slot_count(self):
        """Slots (sets) the wheel holds now, empty ones included: for tests and diagnostics."""
        return len(self.slots)

    @property
    def armed_count(self):
        """Owners armed now."""
        return sum(len(<set>slot) for slot in self.slots.values())

    def close(self):
        self.handle.cancel()
