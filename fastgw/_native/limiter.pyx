# cython: language_level=3
"""A route's rate limits, per request: `RouteLimiter.check(peer_ip, headers)`.

The configuration is compiled in fastgw/policy/ratelimit.py (which subclasses
`RouteLimiter` and documents the keys, the multi-limit rules and the answer
headers); this module is the per-request part: one pass over the request
headers for the header values the keys name, the key bytes, `Limit.take_c`
for every limit (one clock reading for all), refunds when one limit denies,
and the answer's header lines formatted into a C buffer.

RouteLimiter(limits, trusted_proxies=(), client_ip=None)
    limits: a sequence of (Limit, key_parts, message); key_parts a tuple of
    (PART_IP, None), (PART_CONST, bytes) or (PART_HEADER, lower-case name).
    client_ip(peer, xff_values, trusted_proxies) -> bytes resolves the client
    address from X-Forwarded-For; it is only called when `trusted_proxies` is
    not empty and a key uses the client address.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport ceil
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from fastgw._native.includes.clock cimport fg_monotonic_ns

PART_IP = 0
PART_CONST = 1
PART_HEADER = 2
SEPARATOR = b"\x00"
ABSENT = b"\x01"      # the key part of a header the request does not carry
DENIED_STATUS = 429

cdef int _DENIED_STATUS = DENIED_STATUS
cdef bytes _ABSENT = ABSENT
cdef bytes _COMMA = b", "
cdef int64_t _TICKS_PER_NS = 16
cdef double _TICKS_PER_SECOND = 16e9
cdef double _EPSILON = 1e-9   # so that 2.0000000001 s (float noise) rounds up to 2, not 3


# The fields and cdef methods of the classes below are declared in limiter.pxd.

@cython.freelist(16)
@cython.final
cdef class Decision:
    """allowed; status (429 when denied, 0 when allowed); headers (CRLF-terminated
    lines); message (for the JSON error body; "" when allowed)."""

    def __repr__(self):
        return f"Decision(allowed={self.allowed}, status={self.status}, headers={self.headers!r})"


@cython.final
cdef class _Plan:
    """One limit of the route, compiled (limit is None in a plain LimitKeys)."""

    def __dealloc__(self):
        PyMem_Free(self.kinds)
        PyMem_Free(self.header_index)


cdef inline bint _same_name(const char *name, const char *lower, Py_ssize_t size) noexcept nogil:
    """ASCII case-insensitive compare of a header name with a lower-case one."""
    cdef Py_ssize_t i
    cdef char c
    for i in range(size):
        c = name[i]
        if c >= c'A' and c <= c'Z':
            c = c + 32
        if c != lower[i]:
            return False
    return True


cdef inline int64_t _ceil_seconds(int64_t ticks) noexcept nogil:
    cdef double seconds = ticks / _TICKS_PER_SECOND
    return <int64_t>ceil(seconds - _EPSILON) if seconds > 0 else 0


cdef inline char *_put(char *p, const char *text, Py_ssize_t size) noexcept nogil:
    memcpy(p, text, size)
    return p + size


cdef inline char *_put_int(char *p, int64_t value) noexcept nogil:
    cdef char digits[24]
    cdef int n = 0
    cdef unsigned long long v
    if value < 0:
        p[0] = c'-'
        p += 1
        v = <unsigned long long>(-(value + 1)) + 1
    else:
        v = <unsigned long long>value
    while True:
        digits[n] = <char>(c'0' + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    while n > 0:
        n -= 1
        p[0] = digits[n]
        p += 1
    return p


cdef bytes _format_headers(const Outcome *out, int64_t reset_s, int64_t retry_s, bint denied):
    # 6 names (104 bytes), 7 numbers of at most 20 characters, Retry-After: 240 at most.
    cdef char buf[320]
    cdef char *p = buf
    p = _put(p, b"RateLimit-Limit: ", 17)
    p = _put_int(p, out.limit)
    p = _put(p, b"\r\nRateLimit-Remaining: ", 23)
    p = _put_int(p, out.remaining)
    p = _put(p, b"\r\nRateLimit-Reset: ", 19)
    p = _put_int(p, reset_s)
    p = _put(p, b"\r\nX-RateLimit-Limit: ", 21)
    p = _put_int(p, out.limit)
    p = _put(p, b"\r\nX-RateLimit-Remaining: ", 25)
    p = _put_int(p, out.remaining)
    p = _put(p, b"\r\nX-RateLimit-Reset: ", 21)
    p = _put_int(p, reset_s)
    p = _put(p, b"\r\n", 2)
    if denied:
        p = _put(p, b"Retry-After: ", 13)
        p = _put_int(p, retry_s)
        p = _put(p, b"\r\n", 2)
    return PyBytes_FromStringAndSize(buf, p - buf)


cdef class LimitKeys:
    """The key bytes of a route's limits, from one pass over the request headers.

    LimitKeys(key_parts_list, trusted_proxies=(), client_ip=None): one tuple
    of key parts per limit. `keys(peer_ip, headers)` -> [bytes] in the same
    order. RouteLimiter (local limits) extends it; Redis-scoped limits use it
    as is, so both scopes count under exactly the same keys.
    """

    def __init__(self, key_parts_list, tuple trusted_proxies=(), client_ip=None):
        self._compile([(None, parts, "") for parts in key_parts_list], trusted_proxies, client_ip)

    cdef _compile(self, limits, tuple trusted_proxies, client_ip):
        cdef list plans = []
        cdef list wanted = []
        cdef _Plan plan
        cdef bint uses_ip = False
        cdef int i
        for limit, parts, message in limits:
            parts = tuple(parts)
            if not parts:
                raise ValueError("a limit's key needs at least one part")
            plan = _Plan.__new__(_Plan)
            plan.limit = limit
            plan.message = str(message)
            plan.nparts = len(parts)
            plan.kinds = <int *>PyMem_Malloc(plan.nparts * sizeof(int))
            plan.header_index = <int *>PyMem_Malloc(plan.nparts * sizeof(int))
            if plan.kinds == NULL or plan.header_index == NULL:
                raise MemoryError()
            consts = []
            for i, (kind, data) in enumerate(parts):
                plan.kinds[i] = kind
                plan.header_index[i] = -1
                consts.append(None)
                if kind == PART_IP:
                    uses_ip = True
                elif kind == PART_CONST:
                    if not isinstance(data, bytes):
                        raise TypeError(f"a constant key part must be bytes, got {data!r}")
                    consts[i] = data
                elif kind == PART_HEADER:
                    if not isinstance(data, bytes):
                        raise TypeError(f"a header key part must be bytes, got {data!r}")
                    name = data.lower()
                    if name not in wanted:
                        wanted.append(name)
                    plan.header_index[i] = wanted.index(name)
                else:
                    raise ValueError(f"unknown key part kind {kind!r}")
            plan.consts = tuple(consts)
            plan.single_ip = plan.nparts == 1 and plan.kinds[0] == PART_IP
            plans.append(plan)
        if not plans:
            raise ValueError("a RouteLimiter needs at least one limit")
        self.plans = tuple(plans)
        self.wanted = tuple(wanted)
        self.nwanted = len(wanted)
        self.wanted_size = <Py_ssize_t *>PyMem_Malloc((self.nwanted + 1) * sizeof(Py_ssize_t))
        self.wanted_name = <const char **>PyMem_Malloc((self.nwanted + 1) * sizeof(char *))
        if self.wanted_size == NULL or self.wanted_name == NULL:
            raise MemoryError()
        for i in range(self.nwanted):
            self.wanted_size[i] = PyBytes_GET_SIZE(self.wanted[i])
            self.wanted_name[i] = PyBytes_AS_STRING(self.wanted[i])
        self.trusted = tuple(trusted_proxies)
        self.want_xff = uses_ip and len(self.trusted) > 0
        if self.want_xff and client_ip is None:
            raise ValueError("trusted proxies need a client_ip resolver")
        self.resolve = client_ip if self.want_xff else None

    def __dealloc__(self):
        PyMem_Free(self.wanted_size)
        PyMem_Free(self.wanted_name)

    @property
    def header_names(self):
        """The lower-case header names the keys read."""
        return self.wanted

    cpdef list keys(self, bytes peer_ip, list headers):
        """Every limit's key bytes for this request, in configuration order."""
        cdef bytes ip = self._client(peer_ip, headers)
        cdef list values = self.scanned
        self.scanned = None
        cdef Py_ssize_t n = len(self.plans), i
        cdef list keys = [None] * n
        cdef _Plan plan
        for i in range(n):
            plan = <_Plan>self.plans[i]
            keys[i] = ip if plan.single_ip else _key(plan, ip, values)
        return keys

    cdef inline bytes _client(self, bytes peer_ip, list headers):
        """The client address the keys use; sets `scanned` to the wanted
        headers' values when a key reads headers (the caller takes it)."""
        cdef list xff = None
        if self.nwanted or self.want_xff:
            if self.want_xff:
                xff = []
            self.scanned = self._scan(headers, xff)
            if self.want_xff:
                return self.resolve(peer_ip, xff, self.trusted)
        return peer_ip

    cdef list _scan(self, list headers, list xff):
        """One pass over the request headers: the values of each wanted header
        (joined with ", " in the order received; None when absent); the
        X-Forwarded-For values are appended to `xff` unless it is None."""
        cdef list values = [None] * self.nwanted
        cdef bytes name, value
        cdef Py_ssize_t size, j
        cdef const char *text
        for name, value in headers:
            size = PyBytes_GET_SIZE(name)
            text = PyBytes_AS_STRING(name)
            for j in range(self.nwanted):
                if size == self.wanted_size[j] and _same_name(text, self.wanted_name[j], size):
                    found = values[j]
                    values[j] = value if found is None else found + _COMMA + value
                    break
            if xff is not None and size == 15 and _same_name(text, b"x-forwarded-for", 15):
                xff.append(value)
        return values


cdef class RouteLimiter(LimitKeys):
    """See the module doc. Subclassed by fastgw.policy.ratelimit.RouteLimiter."""

    def __init__(self, limits, tuple trusted_proxies=(), client_ip=None):
        limits = list(limits)
        for limit, parts, message in limits:
            if limit is None or not isinstance(limit, Limit):
                raise TypeError("a limit must be a Limit")
        self._compile(limits, trusted_proxies, client_ip)
        self.single = self.plans[0] if len(self.plans) == 1 else None
        self.outcomes = <Outcome *>PyMem_Malloc(len(self.plans) * sizeof(Outcome))
        if self.outcomes == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.outcomes)

    def check(self, bytes peer_ip not None, list headers not None):
        """Count one request: a Decision (allowed, status, headers, message)."""
        cdef bytes ip = self._client(peer_ip, headers)
        cdef list values = self.scanned
        self.scanned = None
        cdef int64_t now = fg_monotonic_ns() * _TICKS_PER_NS
        cdef _Plan plan = self.single
        cdef bytes key
        cdef Outcome out
        if plan is not None:
            key = ip if plan.single_ip else _key(plan, ip, values)
            out = plan.limit.take_c(<const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                                    now, True)
            return _decision(plan.message, &out)
        return self._check_all(ip, values, now)

    cdef object _check_all(self, bytes ip, list values, int64_t now):
        """Every limit; refunds when one denies; the most restrictive answers."""
        cdef Py_ssize_t n = len(self.plans), i, worst = -1
        cdef list keys = [None] * n
        cdef _Plan plan
        cdef bytes key
        cdef bint denied = False
        for i in range(n):
            plan = <_Plan>self.plans[i]
            key = ip if plan.single_ip else _key(plan, ip, values)
            keys[i] = key
            self.outcomes[i] = plan.limit.take_c(<const unsigned char *>PyBytes_AS_STRING(key),
                                                 PyBytes_GET_SIZE(key), now, True)
            if not self.outcomes[i].allowed:
                denied = True
        for i in range(n):
            if denied:
                if self.outcomes[i].allowed:
                    key = <bytes>keys[i]
                    (<_Plan>self.plans[i]).limit.refund_c(<const unsigned char *>PyBytes_AS_STRING(key),
                                                          PyBytes_GET_SIZE(key), now)
                elif worst < 0 or self.outcomes[i].retry_after > self.outcomes[worst].retry_after:
                    worst = i   # among denials the longest wait
            elif worst < 0 or self.outcomes[i].remaining < self.outcomes[worst].remaining:
                worst = i       # among allows the lowest remaining
        return _decision((<_Plan>self.plans[worst]).message, &self.outcomes[worst])


cdef bytes _key(_Plan plan, bytes ip, list values):
    """The key parts joined with NUL."""
    cdef Py_ssize_t total = plan.nparts - 1, i
    cdef object piece
    for i in range(plan.nparts):
        total += PyBytes_GET_SIZE(_piece(plan, i, ip, values))
    cdef bytes key = PyBytes_FromStringAndSize(NULL, total)
    cdef char *p = PyBytes_AS_STRING(key)
    for i in range(plan.nparts):
        if i:
            p[0] = 0
            p += 1
        piece = _piece(plan, i, ip, values)
        p = _put(p, PyBytes_AS_STRING(piece), PyBytes_GET_SIZE(piece))
    return key


cdef inline object _piece(_Plan plan, Py_ssize_t i, bytes ip, list values):
    cdef int kind = plan.kinds[i]
    if kind == 0:    # PART_IP
        return ip
    if kind == 1:    # PART_CONST
        return plan.consts[i]
    found = values[plan.header_index[i]]
    return _ABSENT if found is None else found


def decision(bint allowed, long long limit, long long remaining, double reset_seconds,
             double retry_after_seconds, str message):
    """A Decision from a limit's answer computed elsewhere (a Redis-scoped
    limit's script): the same headers and message as a local limit's."""
    cdef Outcome out
    out.allowed = allowed
    out.limit = limit
    out.remaining = remaining
    out.reset = <int64_t>(reset_seconds * _TICKS_PER_SECOND)
    out.retry_after = <int64_t>(retry_after_seconds * _TICKS_PER_SECOND)
    return _decision(message, &out)


cdef Decision _decision(str message, const Outcome *out):
    cdef Decision decision = Decision.__new__(Decision)
    cdef int64_t reset_s = _ceil_seconds(out.reset)
    cdef int64_t retry_s = 0
    if out.allowed:
        decision.allowed = True
        decision.status = 0
        decision.headers = _format_headers(out, reset_s, 0, False)
        decision.message = ""
        return decision
    retry_s = _ceil_seconds(out.retry_after)
    if retry_s < 1:
        retry_s = 1
    decision.allowed = False
    decision.status = _DENIED_STATUS
    decision.headers = _format_headers(out, reset_s, retry_s, True)
    decision.message = f"{message}; retry in {retry_s} s"
    return decision
