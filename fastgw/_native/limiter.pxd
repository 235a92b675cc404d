# Declarations of limiter.pyx's types, for modules that cimport them (the
# request path could run a route's local limits without going through Python).
cimport cython
from libc.stdint cimport int64_t

from fastgw._native.ratelimit cimport Limit, Outcome


@cython.final
cdef class Decision:
    cdef readonly bint allowed
    cdef readonly int status
    cdef readonly bytes headers
    cdef readonly str message


# One limit of the route, compiled (limit is None in a plain LimitKeys).
@cython.final
cdef class _Plan:
    cdef Limit limit
    cdef bint single_ip           # the key is the client address alone
    cdef int nparts
    cdef int *kinds               # PART_* per key part
    cdef int *header_index        # for PART_HEADER: index into RouteLimiter's wanted names
    cdef tuple consts             # for PART_CONST: the bytes (None elsewhere)
    cdef str message


cdef class LimitKeys:
    cdef tuple plans              # _Plan per limit, in configuration order
    cdef tuple wanted             # lower-case header names the keys read
    cdef Py_ssize_t nwanted
    cdef bint want_xff            # collect X-Forwarded-For for `resolve`
    cdef object resolve           # client_ip callable, or None
    cdef readonly tuple trusted
    cdef Py_ssize_t *wanted_size
    cdef const char **wanted_name
    cdef list scanned             # _client's header values, handed to the caller at once

    cdef _compile(self, limits, tuple trusted_proxies, client_ip)
    cpdef list keys(self, bytes peer_ip, list headers)
    cdef inline bytes _client(self, bytes peer_ip, list headers)
    cdef list _scan(self, list headers, list xff)


cdef class RouteLimiter(LimitKeys):
    cdef _Plan single             # plans[0] when there is exactly one limit, else None
    cdef Outcome *outcomes        # scratch for several limits

    cdef object _check_all(self, bytes ip, list values, int64_t now)
