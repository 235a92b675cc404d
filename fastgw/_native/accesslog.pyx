"""The access log's line builder: one JSON line per exchange, written straight
into a byte buffer from the bytes and integers the exchange already holds.

The line is byte for byte what `orjson.dumps(fields, option=OPT_APPEND_NEWLINE)`
of today's field dict gives (fastgw/observe/access_log.py documents the
fields; tests/native/test_access_log_native.py keeps that formatter as the
reference): keys in the same order, no spaces, strings escaped as orjson
escapes them (`\\"`, `\\\\`, `\\b \\t \\n \\f \\r`, other control bytes as
`\\u00XX` in lower-case hex, nothing else), request bytes taken as latin-1, so a
byte >= 0x80 becomes its two-byte UTF-8 form, and milliseconds printed as
the shortest float repr of `ns // 1000 / 1000`.

Why native: the Python formatter (a 16-key dict per request, latin-1
decodes, orjson) cost ~31,000 instructions per request, more than half of a
small proxied GET; this costs a few thousand (bench/RESULTS.md).
Writing the buffer out (timer, size, exit, pipe pieces) stays in Python:
it is off the request path.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.string cimport memchr, memcmp, memcpy, memset
from libc.stdio cimport snprintf
from libc.time cimport time_t, timespec, tm

import random as _random

import orjson

from fastgw._native.headers cimport MessageInfo, trace_id_of

cdef extern from "<time.h>" nogil:
    int clock_gettime(int clk_id, timespec *tp)
    tm *gmtime_r(const time_t *timep, tm *result)
    int CLOCK_REALTIME

cdef const char *HEX = b"0123456789abcdef"
cdef bytes NULL_JSON = b"null"
# The line's own fields: a plugin's field of the same name is left out.
BUILTIN_FIELDS = frozenset(("time", "request_id", "trace_id", "client_ip", "method", "path", "route", "status",
                            "bytes_in", "bytes_out", "duration_ms", "upstream_ms", "upstream", "retries",
                            "rate_limit", "headers"))
DEF MAX_EXACT_US = 1000000000000000  # below 10**15 us the shortest repr is the plain decimal

# What each byte becomes inside a JSON string: 0 = itself, 1 = \u00XX, else
# the letter after the backslash. Bytes >= 0x80 are handled apart (UTF-8).
cdef unsigned char ESCAPE[256]


cdef void _fill_escape_table() noexcept:
    cdef int c
    memset(ESCAPE, 0, sizeof(ESCAPE))
    for c in range(0x20):
        ESCAPE[c] = 1
    ESCAPE[0x08] = ord("b")
    ESCAPE[0x09] = ord("t")
    ESCAPE[0x0a] = ord("n")
    ESCAPE[0x0c] = ord("f")
    ESCAPE[0x0d] = ord("r")
    ESCAPE[0x22] = ord('"')
    ESCAPE[0x5c] = ord("\\")


_fill_escape_table()


cdef inline char *_escape(char *out, const unsigned char *s, Py_ssize_t n) noexcept:
    """Write s[:n], latin-1, as the inside of a JSON string; at most 6*n bytes."""
    cdef Py_ssize_t i = 0, run
    cdef unsigned char c, e
    while i < n:
        run = i
        while run < n and s[run] < 0x80 and ESCAPE[s[run]] == 0:
            run += 1
        if run > i:
            memcpy(out, s + i, run - i)
            out += run - i
            i = run
            if i == n:
                break
        c = s[i]
        if c >= 0x80:
            out[0] = <char>(0xc0 | (c >> 6))
            out[1] = <char>(0x80 | (c & 0x3f))
            out += 2
        else:
            e = ESCAPE[c]
            out[0] = b"\\"
            if e == 1:
                out[1] = b"u"
                out[2] = b"0"
                out[3] = b"0"
                out[4] = HEX[c >> 4]
                out[5] = HEX[c & 15]
                out += 6
            else:
                out[1] = <char>e
                out += 2
        i += 1
    return out


cdef inline char *_put(char *out, const char *s, Py_ssize_t n) noexcept:
    memcpy(out, s, n)
    return out + n


cdef inline char *_int(char *out, long long value) noexcept:
    """A decimal integer; at most 20 bytes."""
    cdef char digits[24]
    cdef int n = 0
    cdef unsigned long long v
    if value < 0:
        out[0] = b"-"
        out += 1
        v = <unsigned long long>(-(value + 1)) + 1
    else:
        v = <unsigned long long>value
    while True:
        digits[n] = <char>(48 + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    while n:
        n -= 1
        out[0] = digits[n]
        out += 1
    return out


cdef inline char *_millis(char *out, long long us) noexcept:
    """us / 1000 as Python's (and orjson's) shortest float repr, for
    0 <= us < 10**15: the decimal with trailing zeros dropped, at least one."""
    cdef long long frac = us % 1000
    out = _int(out, us // 1000)
    out[0] = b"."
    out += 1
    if frac == 0:
        out[0] = b"0"
        return out + 1
    out[0] = <char>(48 + frac // 100)
    out += 1
    frac %= 100
    if frac:
        out[0] = <char>(48 + frac // 10)
        out += 1
        frac %= 10
        if frac:
            out[0] = <char>(48 + frac)
            out += 1
    return out


cdef inline bint _same_lower(const unsigned char *s, const unsigned char *lower, Py_ssize_t n) noexcept:
    """s[:n] equals the lower-case `lower`, ASCII case folded as bytes.lower()."""
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = s[i]
        if 65 <= c <= 90:
            c += 32
        if c != lower[i]:
            return False
    return True


cdef class AccessLineBuffer:
    """Builds access-log lines into a growing buffer; `take()` hands the
    buffered lines over as bytes. The subclass in fastgw/observe/access_log.py
    writes them out and defines `flush()`, called here once `limit` bytes
    are buffered."""

    def __cinit__(self, *args, **kwargs):
        self.capacity = 4096
        self.buf = <char *>PyMem_Malloc(self.capacity)
        if self.buf is NULL:
            raise MemoryError()
        self.second = -1

    def __init__(self, double sampling, headers, redact_headers, redact_query, Py_ssize_t limit):
        cdef Py_ssize_t i
        self.sampling = sampling
        self.limit = limit
        self.redact_query = tuple(bytes(q) for q in redact_query)
        self.header_names = tuple(sorted(set(bytes(h).lower() for h in headers)))
        self.header_keys = tuple(orjson.dumps(h.decode("latin-1")) + b":" for h in self.header_names)
        redacted = set(bytes(h).lower() for h in redact_headers)
        n = len(self.header_names)
        self.header_redacted = <char *>PyMem_Malloc(n + 1)
        self.header_done = <char *>PyMem_Malloc(n + 1)
        if self.header_redacted is NULL or self.header_done is NULL:
            raise MemoryError()
        for i in range(n):
            self.header_redacted[i] = self.header_names[i] in redacted
        self.route_json = {}
        self.pool_json = {}
        self.address_json = {}
        self.random = _random.random

    def __dealloc__(self):
        PyMem_Free(self.buf)
        PyMem_Free(self.header_redacted)
        PyMem_Free(self.header_done)

    # -- handing the lines over ------------------------------------------------
    @property
    def buffered(self):
        """Bytes buffered and not yet taken."""
        return self.length

    def take(self):
        """The buffered lines as bytes (b"" if none); the buffer is emptied."""
        data = PyBytes_FromStringAndSize(self.buf, self.length)
        self.length = 0
        return data

    # -- per exchange -----------------------------------------------------------
    cdef int record(self, bytes method, bytes target, bytes request_id, bytes peer_ip, MessageInfo info,
                    object plan, object pool, int status, long long body_bytes, long long bytes_out,
                    long long duration_ns, long long upstream_ns, int retries, int rate_limit,
                    list request_headers) except -1:
        """The exchange's line, from fastgw/_native/proxy.pyx's typed fields.
        `plan` is its RoutePlan or None, `pool` the EndpointPool last used or None."""
        if self.sampling < 1.0 and self.random() >= self.sampling:
            return 0
        cdef bytes trace = None
        cdef Py_ssize_t trace_at = 0, trace_len = 0
        if info is not None:
            trace = info.sent_traceparent  # b"traceparent: 00-<trace id>-<span id>-<flags>\r\n"
            if trace is not None:
                trace_at = 16
            else:
                trace = trace_id_of(info.traceparent)
            if trace is not None:
                trace_len = max(0, min(PyBytes_GET_SIZE(trace), trace_at + 32) - trace_at)
        cdef bytes route = NULL_JSON
        if plan is not None:
            route = self.route_json.get(plan)
            if route is None:
                route = self._remember(self.route_json, plan, plan.route.name)
        cdef bytes upstream = None
        if pool is not None:
            upstream = self.pool_json.get(pool)
            if upstream is None:
                upstream = self._remember(self.pool_json, pool, pool.endpoint.address)
        self._line(method, target, request_id, peer_ip, trace, trace_at, trace_len, route, upstream,
                   status, body_bytes, bytes_out, duration_ns, upstream_ns, retries, rate_limit,
                   request_headers)
        return 1  # written: the caller adds plugin fields (append_fields) or ends it (_done)

    def log(self, ex):
        """The same line from any object with the Exchange's attributes: the
        path Observers (access log with span export) and tests take."""
        if self.sampling < 1.0 and self.random() >= self.sampling:
            return
        info = ex.info
        trace = None
        trace_at = 0
        if info is not None:
            trace = info.sent_traceparent
            if trace is not None:
                trace_at = 16
            else:
                trace = trace_id_of(info.traceparent)
        trace_len = max(0, min(len(trace), trace_at + 32) - trace_at) if trace is not None else 0
        plan = ex.plan
        route = orjson.dumps(plan.route.name) if plan is not None else NULL_JSON
        address = ex.endpoint
        upstream = None
        if address is not None:
            upstream = self.address_json.get(address)
            if upstream is None:
                upstream = self._remember(self.address_json, address, address)
        self._line(ex.method, ex.target, ex.request_id, ex.client.peer_ip, trace, trace_at, trace_len, route,
                   upstream, ex.status, ex.body_bytes, ex.bytes_out, ex.duration_ns, ex.upstream_ns,
                   ex.retries, ex.rate_limit, ex.request_headers)
        fields = getattr(ex, "log_fields", None)
        if fields:
            self.append_fields(fields)
        else:
            self._done()

    cdef bytes _remember(self, dict cache, object key, object text):
        if len(cache) >= 4096:  # endpoints come and go with discovery: don't keep dead ones forever
            cache.clear()
        value = orjson.dumps(text)
        cache[key] = value
        return value

    cdef int _reserve(self, Py_ssize_t more) except -1:
        cdef Py_ssize_t need = self.length + more
        cdef Py_ssize_t capacity = self.capacity
        cdef char *grown
        if need <= capacity:
            return 0
        while capacity < need:
            capacity *= 2
        grown = <char *>PyMem_Realloc(self.buf, capacity)
        if grown is NULL:
            raise MemoryError()
        self.buf = grown
        self.capacity = capacity
        return 0

    cdef int _line(self, bytes method, bytes target, bytes request_id, bytes peer_ip,
                   bytes trace, Py_ssize_t trace_at, Py_ssize_t trace_len, bytes route, bytes upstream,
                   int status, long long body_bytes, long long bytes_out, long long duration_ns,
                   long long upstream_ns, int retries, int rate_limit, list request_headers) except -1:
        cdef Py_ssize_t target_len = PyBytes_GET_SIZE(target) if target is not None else 0
        # Every byte of a string may become 6; a redacted query parameter adds "=REDACTED".
        self._reserve(400 + 6 * (PyBytes_GET_SIZE(method) + PyBytes_GET_SIZE(request_id)
                                 + PyBytes_GET_SIZE(peer_ip) + trace_len) + 16 * target_len
                      + PyBytes_GET_SIZE(route) + (PyBytes_GET_SIZE(upstream) if upstream is not None else 0))
        cdef char *start = self.buf + self.length
        cdef char *p = start
        p = _put(p, b'{"time":"', 9)
        p = self._time(p)
        p = _put(p, b'","request_id":"', 16)
        p = _escape(p, <const unsigned char *>PyBytes_AS_STRING(request_id), PyBytes_GET_SIZE(request_id))
        if trace_len > 0:
            p = _put(p, b'","trace_id":"', 14)
            p = _escape(p, <const unsigned char *>PyBytes_AS_STRING(trace) + trace_at, trace_len)
            p = _put(p, b'","client_ip":"', 15)
        else:
            p = _put(p, b'","trace_id":null,"client_ip":"', 31)
        p = _escape(p, <const unsigned char *>PyBytes_AS_STRING(peer_ip), PyBytes_GET_SIZE(peer_ip))
        p = _put(p, b'","method":"', 12)
        p = _escape(p, <const unsigned char *>PyBytes_AS_STRING(method), PyBytes_GET_SIZE(method))
        if target is not None:
            p = _put(p, b'","path":"', 10)
            p = self._path(p, <const unsigned char *>PyBytes_AS_STRING(target), target_len)
            p = _put(p, b'","route":', 10)
        else:
            p = _put(p, b'","path":null,"route":', 22)
        p = _put(p, PyBytes_AS_STRING(route), PyBytes_GET_SIZE(route))
        p = _put(p, b',"status":', 10)
        p = _int(p, status)
        p = _put(p, b',"bytes_in":', 12)
        p = _int(p, body_bytes)
        p = _put(p, b',"bytes_out":', 13)
        p = _int(p, bytes_out)
        p = _put(p, b',"duration_ms":', 15)
        p = self._ms(p, duration_ns)
        if upstream is not None:
            p = _put(p, b',"upstream_ms":', 15)
            p = self._ms(p, upstream_ns)
            p = _put(p, b',"upstream":', 12)
            p = _put(p, PyBytes_AS_STRING(upstream), PyBytes_GET_SIZE(upstream))
        else:
            p = _put(p, b',"upstream_ms":null,"upstream":null', 35)
        p = _put(p, b',"retries":', 11)
        p = _int(p, retries)
        if rate_limit == 1:
            p = _put(p, b',"rate_limit":"allowed","headers":', 34)
        elif rate_limit == 2:
            p = _put(p, b',"rate_limit":"denied","headers":', 33)
        else:
            p = _put(p, b',"rate_limit":null,"headers":', 29)
        if not self.header_names:
            p = _put(p, b"null}\n", 6)
            self.length = p - self.buf
        else:
            self.length = p - self.buf
            self._headers(request_headers)
        return 0

    cdef int _done(self) except -1:
        """A line is complete (with any plugin fields): flush at the limit."""
        if self.length >= self.limit:
            self.flush()
        return 0

    def append_fields(self, dict fields):
        """Fields plugins added (Request.log) into the line just written,
        before its closing brace; a built-in field's name is never replaced,
        and a value JSON can't hold is logged as its repr. Only called for a
        line that was written (not sampled out) and not yet flushed."""
        parts = []
        for name, value in fields.items():
            name = str(name)
            if name in BUILTIN_FIELDS:
                continue
            try:
                encoded = orjson.dumps(value)
            except TypeError:
                encoded = orjson.dumps(repr(value))
            parts.append(b"," + orjson.dumps(name) + b":" + encoded)
        if not parts or self.length < 2 or self.buf[self.length - 2] != b"}"[0]:
            self._done()
            return
        cdef bytes members = b"".join(parts)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(members)
        self.length -= 2  # "}\n"
        self._reserve(n + 2)
        memcpy(self.buf + self.length, PyBytes_AS_STRING(members), n)
        self.length += n
        self.buf[self.length] = b"}"[0]
        self.buf[self.length + 1] = b"\n"[0]
        self.length += 2
        self._done()

    cdef char *_time(self, char *out) noexcept:
        """When the exchange ended, UTC to the millisecond: the formatted
        second is kept until the clock leaves it."""
        cdef timespec ts
        cdef tm parts
        cdef time_t second
        clock_gettime(CLOCK_REALTIME, &ts)
        cdef long long ms = (<long long>ts.tv_sec * 1000000000 + ts.tv_nsec) // 1000000
        cdef long long millis = ms % 1000
        if ms // 1000 != self.second:
            self.second = ms // 1000
            second = <time_t>self.second
            gmtime_r(&second, &parts)
            self.second_len = snprintf(self.second_text, sizeof(self.second_text),
                                       b"%04d-%02d-%02dT%02d:%02d:%02d.", parts.tm_year + 1900,
                                       parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min,
                                       parts.tm_sec)
        out = _put(out, self.second_text, self.second_len)
        out[0] = <char>(48 + millis // 100)
        out[1] = <char>(48 + millis // 10 % 10)
        out[2] = <char>(48 + millis % 10)
        out[3] = b"Z"
        return out + 4

    cdef char *_ms(self, char *out, long long ns) except NULL:
        if 0 <= ns < MAX_EXACT_US * 1000:
            return _millis(out, ns // 1000)
        text = orjson.dumps(ns // 1000 / 1000)  # never for real durations; exact as before
        return _put(out, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))

    cdef char *_path(self, char *out, const unsigned char *target, Py_ssize_t n) noexcept:
        """The target with the values of redact_query parameters replaced."""
        cdef const unsigned char *query = <const unsigned char *>memchr(target, b"?", n)
        if query is NULL or not self.redact_query:
            return _escape(out, target, n)
        cdef Py_ssize_t start = query - target + 1, end, name_end, i, k
        cdef const unsigned char *amp
        cdef const unsigned char *eq
        cdef bytes name
        cdef bint redact
        out = _escape(out, target, start)
        while True:
            amp = <const unsigned char *>memchr(target + start, b"&", n - start)
            end = amp - target if amp is not NULL else n
            eq = <const unsigned char *>memchr(target + start, b"=", end - start)
            name_end = eq - target if eq is not NULL else end
            redact = False
            for i in range(len(self.redact_query)):
                name = <bytes>PyTuple_GET_ITEM(self.redact_query, i)
                k = PyBytes_GET_SIZE(name)
                if k == name_end - start and memcmp(PyBytes_AS_STRING(name), target + start, k) == 0:
                    redact = True
                    break
            if redact:  # as before: "name=REDACTED", even for a bare "name"
                out = _escape(out, target + start, name_end - start)
                out = _put(out, b"=REDACTED", 9)
            else:
                out = _escape(out, target + start, end - start)
            if end == n:
                return out
            out[0] = b"&"
            out += 1
            start = end + 1

    cdef int _match_header(self, object name) noexcept:
        """The index in header_names of this request header name, or -1."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(name), i
        cdef bytes wanted
        for i in range(len(self.header_names)):
            wanted = <bytes>PyTuple_GET_ITEM(self.header_names, i)
            if PyBytes_GET_SIZE(wanted) == n and _same_lower(
                    <const unsigned char *>PyBytes_AS_STRING(name),
                    <const unsigned char *>PyBytes_AS_STRING(wanted), n):
                return i
        return -1

    cdef int _headers(self, list headers) except -1:
        """The chosen request headers as an object, then the line's end:
        keys in order of first appearance, repeated fields joined by ", "."""
        cdef Py_ssize_t count = PyList_GET_SIZE(headers) if headers is not None else 0
        cdef Py_ssize_t i, j
        cdef int k
        cdef bint first = True
        cdef object pair, value
        cdef bytes key
        cdef char *p
        memset(self.header_done, 0, len(self.header_names))
        self._reserve(1)
        self.buf[self.length] = b"{"
        self.length += 1
        for i in range(count):
            pair = <object>PyList_GET_ITEM(headers, i)
            k = self._match_header(<object>PyTuple_GET_ITEM(pair, 0))
            if k < 0 or self.header_done[k]:
                continue
            self.header_done[k] = 1
            key = <bytes>PyTuple_GET_ITEM(self.header_keys, k)
            self._reserve(PyBytes_GET_SIZE(key) + 2)
            p = self.buf + self.length
            if not first:
                p[0] = b","
                p += 1
            first = False
            p = _put(p, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
            p[0] = b'"'
            self.length = p + 1 - self.buf
            self._header_value(<object>PyTuple_GET_ITEM(pair, 1), k, False)
            for j in range(i + 1, count):
                pair = <object>PyList_GET_ITEM(headers, j)
                if self._match_header(<object>PyTuple_GET_ITEM(pair, 0)) == k:
                    self._header_value(<object>PyTuple_GET_ITEM(pair, 1), k, True)
            self._reserve(1)
            self.buf[self.length] = b'"'
            self.length += 1
        self._reserve(3)
        p = _put(self.buf + self.length, b"}}\n", 3)  # the headers object, the line
        self.length = p - self.buf
        return 0

    cdef int _header_value(self, object value, int k, bint more) except -1:
        cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
        self._reserve(6 * n + 12)
        cdef char *p = self.buf + self.length
        if more:
            p = _put(p, b", ", 2)
        if self.header_redacted[k]:
            p = _put(p, b"REDACTED", 8)
        else:
            p = _escape(p, <const unsigned char *>PyBytes_AS_STRING(value), n)
        self.length = p - self.buf
        return 0
