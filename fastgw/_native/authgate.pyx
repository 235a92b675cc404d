# cython: language_level=3
"""The JWT route's per-request fast path (fastgw/policy/auth.py owns the
rest): a repeated bearer token found in the verified-token cache costs one
pass over the header names, one dict lookup and a few C comparisons.

TokenGate.admit(exchange) finds the token (Authorization: Bearer, or a
configured header), looks it up in the cache and, when the entry is usable
(same token, not at or past exp, scopes present), adds the identity headers
and answers None. Anything else (no token, a cache miss, a client header
that must be stripped, an API key, a cookie or query token) is handed to
the Python stage's `admit` untouched, which judges it from scratch.

The cache is keyed by the token's last 32 bytes (its signature's tail: a
short key is cheap to hash), and an entry holds the whole token, compared
on every hit: a token that shares the tail but not the rest is a miss,
never another token's identity. The key set's owner empties the cache when
the issuer's keys change (fastgw/auth/jwt_verify.py).
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from libc.string cimport memcmp
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec


cdef extern from "strings.h":
    int strncasecmp(const char *a, const char *b, size_t n)

DEF CACHE_KEY_BYTES = 32
KEY_BYTES = CACHE_KEY_BYTES

# Roles of a watched header name (the same numbers as policy/auth.py's).
cdef enum:
    R_BEARER = 1
    R_STRIP = 2
    R_KEY = 3
    R_TOKEN_HEADER = 4
    R_COOKIE = 5


cpdef bytes cache_key(bytes token):
    """The cache's key for `token`."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(token)
    if n <= CACHE_KEY_BYTES:
        return token
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(token) + n - CACHE_KEY_BYTES, CACHE_KEY_BYTES)


cdef inline bint _space(char c):
    return c == 32 or c == 9


cdef bytes _trimmed(const char *p, Py_ssize_t n):
    """p[:n] without surrounding spaces and tabs, as a new bytes."""
    while n > 0 and _space(p[0]):
        p += 1
        n -= 1
    while n > 0 and _space(p[n - 1]):
        n -= 1
    return PyBytes_FromStringAndSize(p, n)


cdef inline double _now():
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class Verified:
    """A verified token, as the cache keeps it (fields: authgate.pxd)."""

    def __init__(self, bytes token, double expires, consumer, frozenset scopes, tuple header_pairs, dict claims):
        self.token = token
        self.expires = expires
        self.consumer = consumer
        self.scopes = scopes
        self.header_pairs = header_pairs
        self.claims = claims


cdef class TokenGate:
    """A route's repeated-token path (fields: authgate.pxd)."""

    def __init__(self, dict watch, dict cache, required, bint any_scope, bint log_identity, stage):
        self.names = tuple(watch)
        self.roles = tuple(watch.values())
        self.lengths = 0
        for name in watch:
            if len(name) >= 64:
                raise ValueError(f"header name {name!r} is too long for the gate")
            self.lengths |= 1ULL << len(name)
        self.cache = cache
        self.required = frozenset(required) if required else None
        self.any_scope = any_scope
        self.log_identity = log_identity
        self.stage = stage
        self.allowed = 0

    def __repr__(self):
        return f"TokenGate({self.stage!r})"

    def admit(self, ex):
        cdef list headers = ex.request_headers
        cdef bytes token = None
        cdef bytes name, value, watched
        cdef Py_ssize_t n, i, count = len(self.names)
        cdef int role
        cdef const char *v
        cdef PyObject *found
        for pair in headers:
            name = (<tuple>pair)[0]
            n = PyBytes_GET_SIZE(name)
            if n >= 64 or not (self.lengths >> n) & 1:
                continue
            role = 0
            for i in range(count):  # one to three names: a case-blind compare each, no new object
                watched = <bytes>self.names[i]
                if PyBytes_GET_SIZE(watched) == n and strncasecmp(PyBytes_AS_STRING(name),
                                                                  PyBytes_AS_STRING(watched), n) == 0:
                    role = <int>self.roles[i]
                    break
            if role == 0:
                continue
            value = (<tuple>pair)[1]
            v = PyBytes_AS_STRING(value)
            if role == R_BEARER:
                if PyBytes_GET_SIZE(value) > 7 and strncasecmp(v, b"bearer ", 7) == 0:
                    token = _trimmed(v + 7, PyBytes_GET_SIZE(value) - 7)
            elif role == R_TOKEN_HEADER:
                token = _trimmed(v, PyBytes_GET_SIZE(value))
            else:  # a header to strip, an API key, a cookie: the Python stage's case
                return self.stage.admit(ex)
        if token is None or PyBytes_GET_SIZE(token) == 0:
            return self.stage.admit(ex)
        found = PyDict_GetItem(self.cache, cache_key(token))
        if found is NULL:
            return self.stage.admit(ex)
        cdef Verified entry = <Verified>found
        if (PyBytes_GET_SIZE(entry.token) != PyBytes_GET_SIZE(token)
                or memcmp(PyBytes_AS_STRING(entry.token), PyBytes_AS_STRING(token), PyBytes_GET_SIZE(token)) != 0
                or _now() >= entry.expires):
            return self.stage.admit(ex)
        if self.required is not None:
            if self.any_scope:
                if self.required.isdisjoint(entry.scopes):
                    return self.stage.admit(ex)
            elif not self.required.issubset(entry.scopes):
                return self.stage.admit(ex)
        if entry.header_pairs:
            headers.extend(entry.header_pairs)
        self.allowed += 1
        if self.log_identity:
            fields = ex.log_fields
            if fields is None:
                ex.log_fields = fields = {}
            fields["auth"] = "jwt"
            if entry.consumer is not None:
                fields["consumer"] = entry.consumer
        return None
