# The JWT route's native fast path (authgate.pyx): its types, for modules
# that cimport them.

cpdef bytes cache_key(bytes token)


cdef class Verified:
    cdef public bytes token
    cdef public double expires        # time.time() from which the entry is not used
    cdef public object consumer       # the `sub` claim (str) or None
    cdef public frozenset scopes      # scopes and roles
    cdef public tuple header_pairs    # ((name, value), ...) for the upstream request
    cdef public dict claims


cdef class TokenGate:
    cdef tuple names                  # the watched lower-case header names ...
    cdef tuple roles                  # ... and their roles
    cdef unsigned long long lengths   # bit n: some watched name has n bytes (names < 64 bytes)
    cdef dict cache
    cdef frozenset required           # None: no scope required
    cdef bint any_scope
    cdef bint log_identity
    cdef object stage                 # the Python AuthStage: everything but the fast path
    cdef public long long allowed     # requests this fast path let through
