cdef class Timed:
    """Something that can have one deadline armed in a `Deadlines` wheel."""
    cdef object deadline_slot   # the wheel's set holding this owner, or None
    cdef void deadline_passed(self)


cdef class Deadlines:
    cdef readonly object loop
    cdef readonly double now
    cdef dict slots
    cdef long long tick_no
    cdef object handle

    cdef void arm(self, Timed owner, double timeout)
    cdef void disarm(self, Timed owner)
