"""Coarse deadlines for the per-request path: a hashed timing wheel.

Every proxied request needs a response-header timeout that is almost always
cancelled a millisecond later. `loop.call_later` + `cancel` per request costs
a timer handle and two libuv calls; measured on the small-GET benchmark that
was several percent of the worker's CPU. Here, arming is a set insertion into
the slot for the deadline's tick and cancelling is a set removal; one loop
timer per worker advances the wheel every `TICK` seconds.

The price is resolution: a deadline fires up to one tick late, which is fine
for gateway timeouts (the shortest sensible ones are hundreds of ms).

The same tick keeps `now`, a cached `loop.time()` good to one tick, used for
activity timestamps so the hot path makes no clock call.
"""
from __future__ import annotations

TICK = 0.05


class Deadlines:
    __slots__ = ("loop", "now", "slots", "tick_no", "handle")

    def __init__(self, loop):
        self.loop = loop
        self.now = loop.time()
        self.slots: dict[int, set] = {}
        self.tick_no = int(self.now / TICK)
        self.handle = loop.call_at((self.tick_no + 1) * TICK, self._tick)

    def arm(self, owner, timeout: float):
        """Call `owner.deadline_passed()` once `timeout` seconds have passed,
        unless `disarm(owner)` comes first. An owner has one deadline at a time:
        it keeps the slot in `owner.deadline_slot`."""
        slot_no = int((self.now + timeout) / TICK) + 1
        slot = self.slots.get(slot_no)
        if slot is None:
            slot = self.slots[slot_no] = set()
        old = owner.deadline_slot
        if old is not None:
            old.discard(owner)
        slot.add(owner)
        owner.deadline_slot = slot

    @staticmethod
    def disarm(owner):
        slot = owner.deadline_slot
        if slot is not None:
            slot.discard(owner)
            owner.deadline_slot = None

    def _tick(self):
        self.now = now = self.loop.time()
        current = int(now / TICK)
        slots = self.slots
        for slot_no in range(self.tick_no + 1, current + 1):
            due = slots.pop(slot_no, None)
            if due:
                # A callback may disarm others in this slot: iterate a copy and
                # skip any owner no longer armed here.
                for owner in list(due):
                    if owner.deadline_slot is due:
                        owner.deadline_slot = None
                        owner.deadline_passed()
        self.tick_no = current
        self.handle = self.loop.call_at((current + 1) * TICK, self._tick)

    def close(self):
        self.handle.cancel()
