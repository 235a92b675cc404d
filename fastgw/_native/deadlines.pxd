cdef class Timed:
    """Something that can have one deadline armed in a `Deadlines` wheel."""
    # Links in the list of the wheel slot holding this owner (None: not armed).
    cdef Timed deadline_prev
    cdef Timed deadline_next
    cdef long long deadline_tick  # the tick it is due at; 0 when not armed
    cdef void deadline_passed(self)


cdef class Deadlines:
    cdef readonly object loop
    cdef readonly double now
    cdef list heads               # one list head (a bare Timed) per slot of the wheel
    cdef long long tick_no
    cdef object handle

    cdef void arm(self, Timed owner, double timeout)
    cdef void disarm(self, Timed owner)


cdef inline void cancel_deadline(Timed owner):
    """Disarm `owner` without its wheel at hand: unlink it from its slot."""
    cdef Timed prev = owner.deadline_prev
    cdef Timed after
    if prev is not None:
        after = owner.deadline_next
        prev.deadline_next = after
        after.deadline_prev = prev
        owner.deadline_prev = None
        owner.deadline_next = None
    owner.deadline_tick = 0
