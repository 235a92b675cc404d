# cython: language_level=3
"""Per-request header work: scan what arrived, then write the head that leaves.

httptools (llhttp, strict mode) already rejects most framing attacks: CL with TE,
duplicate or malformed Content-Length, obs-fold, bad chunk sizes, control
characters in values. What is left for us is done here in one pass over the
header list per direction:

* `scan_request` / `scan_response` classify each header by name without
  allocating (length switch, then a case-insensitive compare), enforce what
  llhttp does not (Transfer-Encoding must be exactly `chunked`, one Host,
  Host required on HTTP/1.1), and collect what later phases need: host,
  framing, Connection tokens, request id, Expect, Upgrade.
* `build_request_head` / `build_response_head` write the outgoing head as one
  bytes object: hop-by-hop headers and the ones the Connection header names
  are dropped, X-Forwarded-* and X-Request-ID are written, then the route's
  `HeaderRewrite` (remove, set, add) is applied.

Header names are compared case-insensitively; lower-case copies are made only
for names whose length matches a name some rule asks about.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy

import os

# Header ids: what a header is to the proxy. 0 is "an ordinary end-to-end header".
DEF H_OTHER = 0
DEF H_HOST = 1
DEF H_CONTENT_LENGTH = 2
DEF H_TRANSFER_ENCODING = 3
DEF H_CONNECTION = 4
DEF H_KEEP_ALIVE = 5
DEF H_PROXY_CONNECTION = 6
DEF H_TE = 7
DEF H_TRAILER = 8
DEF H_UPGRADE = 9
DEF H_X_FORWARDED_FOR = 10
DEF H_X_FORWARDED_PROTO = 11
DEF H_X_FORWARDED_HOST = 12
DEF H_X_REQUEST_ID = 13
DEF H_EXPECT = 14

# Headers the gateway writes itself; a route rule that sets or removes one of
# them replaces the gateway's line instead of adding a second one.
DEF OWN_HOST = 1
DEF OWN_XFF = 2
DEF OWN_XFP = 4
DEF OWN_XFH = 8
DEF OWN_REQUEST_ID = 16
cdef dict _OWNED = {b"host": OWN_HOST, b"x-forwarded-for": OWN_XFF, b"x-forwarded-proto": OWN_XFP,
                    b"x-forwarded-host": OWN_XFH, b"x-request-id": OWN_REQUEST_ID}

# Gateway-written request headers (HeadFlags in headers.pxd), for Python callers.
FORWARDED = HEAD_FORWARDED
REQUEST_ID = HEAD_REQUEST_ID
TRACE = HEAD_TRACE

# Framing of a message body (values in headers.pxd), for Python callers too.
FRAMING_NONE = F_NONE
FRAMING_LENGTH = F_LENGTH
FRAMING_CHUNKED = F_CHUNKED
FRAMING_CLOSE = F_CLOSE


cdef inline unsigned char _lower(unsigned char c) noexcept nogil:
    if 65 <= c <= 90:
        return c + 32
    return c


cdef inline bint _ieq(const char* a, const char* lower_b, Py_ssize_t n) noexcept nogil:
    """a (any case) equals lower_b (already lower-case), both n bytes long."""
    cdef Py_ssize_t i
    for i in range(n):
        if _lower(<unsigned char>a[i]) != <unsigned char>lower_b[i]:
            return False
    return True


cdef int classify(bytes name) noexcept:
    cdef const char* s = PyBytes_AS_STRING(name)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
    if n == 4:
        if _ieq(s, b"host", 4):
            return H_HOST
    elif n == 2:
        if _ieq(s, b"te", 2):
            return H_TE
    elif n == 6:
        if _ieq(s, b"expect", 6):
            return H_EXPECT
    elif n == 7:
        if _ieq(s, b"upgrade", 7):
            return H_UPGRADE
        if _ieq(s, b"trailer", 7):
            return H_TRAILER
    elif n == 10:
        if _ieq(s, b"connection", 10):
            return H_CONNECTION
        if _ieq(s, b"keep-alive", 10):
            return H_KEEP_ALIVE
    elif n == 12:
        if _ieq(s, b"x-request-id", 12):
            return H_X_REQUEST_ID
    elif n == 14:
        if _ieq(s, b"content-length", 14):
            return H_CONTENT_LENGTH
    elif n == 15:
        if _ieq(s, b"x-forwarded-for", 15):
            return H_X_FORWARDED_FOR
    elif n == 16:
        if _ieq(s, b"x-forwarded-host", 16):
            return H_X_FORWARDED_HOST
        if _ieq(s, b"proxy-connection", 16):
            return H_PROXY_CONNECTION
    elif n == 17:
        if _ieq(s, b"transfer-encoding", 17):
            return H_TRANSFER_ENCODING
        if _ieq(s, b"x-forwarded-proto", 17):
            return H_X_FORWARDED_PROTO
    return H_OTHER


cdef inline bint _is_hop_by_hop(int hid) noexcept:
    return (hid == H_CONNECTION or hid == H_KEEP_ALIVE or hid == H_PROXY_CONNECTION
            or hid == H_TE or hid == H_TRAILER or hid == H_UPGRADE
            or hid == H_TRANSFER_ENCODING)


cdef bint _is_exactly_chunked(bytes value):
    """Transfer-Encoding value is `chunked` alone (any case, optional spaces)."""
    cdef bytes v = value.strip()
    return PyBytes_GET_SIZE(v) == 7 and _ieq(PyBytes_AS_STRING(v), b"chunked", 7)


cdef long long _parse_length(bytes value):
    """llhttp has validated the digits; -1 if it somehow did not."""
    cdef const char* s = PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    cdef Py_ssize_t i
    cdef long long total = 0
    cdef bint seen = False
    for i in range(n):
        if 48 <= s[i] <= 57:
            if total > 100000000000000000:
                return -1
            total = total * 10 + (s[i] - 48)
            seen = True
        elif s[i] != 32 and s[i] != 9:
            return -1
    return total if seen else -1


cdef frozenset _connection_tokens(list values):
    cdef set tokens = set()
    cdef bytes value, tok
    for value in values:
        for tok in value.split(b","):
            tok = tok.strip().lower()
            if tok:
                tokens.add(tok)
    return frozenset(tokens)


cdef class MessageInfo:
    """What `scan_request` / `scan_response` learnt about one message head
    (fields in headers.pxd)."""

    cdef void _fail(self, int status, str code, str message):
        if self.error_status == 0:
            self.error_status = status
            self.error_code = code
            self.error_message = message


cdef frozenset _PLAIN_TOKENS = frozenset((b"close", b"keep-alive", b"upgrade"))


cdef void _apply_connection(MessageInfo info, list conn_values, bint http11):
    cdef frozenset tokens
    if conn_values is None:
        info.keep_alive = http11
        return
    tokens = _connection_tokens(conn_values)
    if b"close" in tokens:
        info.keep_alive = False
    elif http11:
        info.keep_alive = True
    else:
        info.keep_alive = b"keep-alive" in tokens
    if not tokens <= _PLAIN_TOKENS:
        info.connection_tokens = tokens
    info.upgrade = b"upgrade" in tokens


cpdef MessageInfo scan_request(list headers, bint http11):
    """Validate and summarise a request head (framing llhttp left to us)."""
    cdef MessageInfo info = MessageInfo.__new__(MessageInfo)
    cdef tuple pair
    cdef bytes name, value
    cdef int hid
    cdef int hosts = 0
    cdef list conn_values = None
    cdef bytes upgrade_value = None
    info.content_length = -1
    for pair in headers:
        name = <bytes>pair[0]
        value = <bytes>pair[1]
        hid = classify(name)
        if hid == H_OTHER:
            if (PyBytes_GET_SIZE(name) == 11 and info.traceparent is None
                    and _ieq(PyBytes_AS_STRING(name), b"traceparent", 11)):
                info.traceparent = value
            continue
        if hid == H_HOST:
            hosts += 1
            info.host = value.strip()
        elif hid == H_CONTENT_LENGTH:
            info.content_length = _parse_length(value)
            if info.content_length < 0:
                info._fail(400, "bad_request", "invalid Content-Length")
        elif hid == H_TRANSFER_ENCODING:
            if _is_exactly_chunked(value):
                info.chunked = True
            else:
                info._fail(501, "unsupported_transfer_coding",
                           "only 'Transfer-Encoding: chunked' is supported")
        elif hid == H_CONNECTION:
            info.connection_seen = True
            if conn_values is None:
                conn_values = [value]
            else:
                conn_values.append(value)
        elif hid == H_PROXY_CONNECTION:
            info.connection_seen = True
        elif hid == H_X_REQUEST_ID:
            if PyBytes_GET_SIZE(value) and PyBytes_GET_SIZE(value) <= 200:
                info.request_id = value
        elif hid == H_EXPECT:
            if value.strip().lower() == b"100-continue":
                info.expect_continue = True
            else:
                info._fail(417, "expectation_failed", "only 'Expect: 100-continue' is supported")
        elif hid == H_UPGRADE:
            upgrade_value = value
    if hosts > 1:
        info._fail(400, "bad_request", "more than one Host header")
    elif hosts == 0 and http11:
        info._fail(400, "bad_request", "HTTP/1.1 request without a Host header")
    _apply_connection(info, conn_values, http11)
    if upgrade_value is not None and info.upgrade:
        info.websocket = upgrade_value.strip().lower() == b"websocket"
    return info


cpdef MessageInfo scan_response(list headers, bint http11):
    """Validate and summarise an upstream response head.

    Framing that could be read two ways becomes an error (the caller answers 502):
    a Transfer-Encoding other than `chunked`. llhttp has already refused CL with TE
    and conflicting Content-Lengths.
    """
    cdef MessageInfo info = MessageInfo.__new__(MessageInfo)
    cdef tuple pair
    cdef bytes name, value
    cdef int hid
    cdef list conn_values = None
    info.content_length = -1
    for pair in headers:
        name = <bytes>pair[0]
        value = <bytes>pair[1]
        hid = classify(name)
        if hid == H_OTHER:
            if PyBytes_GET_SIZE(name) == 12 and _ieq(PyBytes_AS_STRING(name), b"content-type", 12):
                info.event_stream = _is_event_stream(value)
            continue
        if hid == H_CONTENT_LENGTH:
            info.content_length = _parse_length(value)
            if info.content_length < 0:
                info._fail(502, "upstream_bad_response", "invalid Content-Length from upstream")
        elif hid == H_TRANSFER_ENCODING:
            if _is_exactly_chunked(value):
                info.chunked = True
            else:
                info._fail(502, "upstream_bad_response",
                           "unsupported Transfer-Encoding from upstream")
        elif hid == H_CONNECTION:
            info.connection_seen = True
            if conn_values is None:
                conn_values = [value]
            else:
                conn_values.append(value)
        elif hid == H_PROXY_CONNECTION:
            info.connection_seen = True
    _apply_connection(info, conn_values, http11)
    return info


cdef dict _VERSIONS = {"1.1": 11, "1.0": 10, "0.9": 9, "2.0": 20}


cpdef int http_version(object parser, MessageInfo info) except -1:
    """The HTTP version of the message head httptools `parser` has just
    parsed, as 11, 10, 9 or 20 (the versions llhttp accepts), -1 for another.

    `info` is that head's scan. httptools gives the version only as a string
    built with str.format (about 2,300 instructions, twice per proxied
    request), while should_keep_alive() is a flag test. llhttp's keep-alive
    rule is: HTTP/1.1 (major and minor both > 0) unless the Connection flags
    say close, other versions only if they say keep-alive, and a response
    that is delimited by the connection's close never. The Connection flags
    come only from Connection and Proxy-Connection headers, so with neither
    present a true should_keep_alive() means HTTP/1.1. Everything else asks
    for the string. tests/native/test_headers.py checks this against llhttp
    for every version it accepts."""
    if not info.connection_seen and parser.should_keep_alive():
        return 11
    return _VERSIONS.get(parser.get_http_version(), -1)


cdef class HeaderRewrite:
    """A route's header program: remove, then set (replace), then add (append).

    Names are given lower-case. `lengths` lets the builder skip lower-casing any
    header whose name length no rule mentions.
    """
    def __init__(self, add=(), set=(), remove=()):
        cdef list out = []
        self.set_pairs = tuple((bytes(n).lower(), bytes(v)) for n, v in set)
        self.add_pairs = tuple((bytes(n).lower(), bytes(v)) for n, v in add)
        self.drop = frozenset([bytes(n).lower() for n in remove] + [n for n, _ in self.set_pairs])
        self.lengths = frozenset(len(n) for n in self.drop)
        self.owned_mask = 0
        for n in self.drop:
            self.owned_mask |= _OWNED.get(n, 0)
        for n, v in self.set_pairs + self.add_pairs:
            out.append(_canonical(n) + b": " + v + b"\r\n")
        self.appended = b"".join(out)
        self.empty = not self.drop and not self.appended


cdef bytes _canonical(bytes lower_name):
    """x-served-by -> X-Served-By, for readable output heads."""
    return b"-".join([p[:1].upper() + p[1:] for p in lower_name.split(b"-")])


cdef HeaderRewrite _NO_REWRITE = HeaderRewrite()
NO_REWRITE = _NO_REWRITE


cdef inline bint _dropped(bytes name, HeaderRewrite rw, frozenset conn_tokens):
    """True when the route's rule or the Connection header removes this header."""
    cdef bytes lower = None
    if rw.lengths and PyBytes_GET_SIZE(name) in rw.lengths:
        lower = name.lower()
        if lower in rw.drop:
            return True
    if conn_tokens is not None:
        if lower is None:
            lower = name.lower()
        return lower in conn_tokens
    return False


# The outgoing heads are written into one C buffer (on the stack up to
# _HEAD_STACK bytes, then on the heap) and copied once into the bytes object:
# a list of parts and b"".join cost ~2,500 instructions more per head
# (bench/RESULTS.md, section 11).
DEF _HEAD_STACK = 4096


cdef struct HeadBuf:
    char *data
    Py_ssize_t size
    Py_ssize_t cap
    char *heap          # the heap copy once the head outgrew the stack buffer


cdef int _grow(HeadBuf *b, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = b.cap * 2
    cdef char *p
    while cap < b.size + need:
        cap *= 2
    if b.heap == NULL:
        p = <char *>malloc(cap)
        if p == NULL:
            raise MemoryError()
        memcpy(p, b.data, b.size)
    else:
        p = <char *>realloc(b.heap, cap)
        if p == NULL:
            raise MemoryError()
    b.heap = p
    b.data = p
    b.cap = cap
    return 0


cdef inline int _put(HeadBuf *b, const char *s, Py_ssize_t n) except -1:
    if b.size + n > b.cap:
        _grow(b, n)
    memcpy(b.data + b.size, s, n)
    b.size += n
    return 0


cdef inline int _put_bytes(HeadBuf *b, bytes v) except -1:
    return _put(b, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))


cdef inline int _put_line(HeadBuf *b, bytes name, bytes value) except -1:
    """`name: value\r\n`"""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
    cdef Py_ssize_t v = PyBytes_GET_SIZE(value)
    cdef char *p
    if b.size + n + v + 4 > b.cap:
        _grow(b, n + v + 4)
    p = b.data + b.size
    memcpy(p, PyBytes_AS_STRING(name), n)
    p[n] = 58     # ':'
    p[n + 1] = 32
    memcpy(p + n + 2, PyBytes_AS_STRING(value), v)
    p[n + v + 2] = 13
    p[n + v + 3] = 10
    b.size += n + v + 4
    return 0


cdef inline bytes _finish(HeadBuf *b):
    return PyBytes_FromStringAndSize(b.data, b.size)


cpdef bytes build_request_head(bytes method, bytes target, list headers, MessageInfo info,
                               HeaderRewrite rw, bytes client_ip, bytes request_id,
                               bytes default_host, int flags=HEAD_FORWARDED | HEAD_REQUEST_ID):
    """The upstream request head: one bytes object, ready for one write.

    Host is passed through. What the gateway writes itself is chosen by
    `flags` (the route's policies): with HEAD_FORWARDED, X-Forwarded-For gets
    the client address appended and X-Forwarded-Proto and X-Forwarded-Host are
    written by the gateway (it is the edge, so client-sent values are not
    trusted; without it all three pass through as received); with
    HEAD_REQUEST_ID, X-Request-ID is the request's id (else the client's
    passes through); with HEAD_TRACE, the client's traceparent is replaced by
    the gateway's span in the same trace (see `_write_traceparent`).
    An HTTP/1.0 request without Host gets `default_host` (the upstream request is
    HTTP/1.1, where Host is mandatory). A route rule that sets or removes one of
    these gateway-written headers replaces the gateway's line; Content-Length
    is never removed.
    """
    cdef bint trace = flags & HEAD_TRACE
    cdef bint forwarded = flags & HEAD_FORWARDED
    cdef char stack[_HEAD_STACK]
    cdef HeadBuf b
    b.data = stack
    b.size = 0
    b.cap = _HEAD_STACK
    b.heap = NULL
    cdef tuple pair
    cdef bytes name, value
    cdef bytes xff = None
    cdef int hid
    cdef frozenset conn_tokens = info.connection_tokens
    cdef int owned = rw.owned_mask
    try:
        _put_bytes(&b, method)
        _put_bytes(&b, b" ")
        _put_bytes(&b, target)
        _put_bytes(&b, b" HTTP/1.1\r\n")
        for pair in headers:
            name = <bytes>pair[0]
            value = <bytes>pair[1]
            hid = classify(name)
            if hid == H_OTHER:
                if (rw.lengths or conn_tokens is not None) and _dropped(name, rw, conn_tokens):
                    continue
                if trace and PyBytes_GET_SIZE(name) == 11 and _ieq(PyBytes_AS_STRING(name), b"traceparent", 11):
                    continue  # replaced below
                _put_line(&b, name, value)
            elif hid == H_CONTENT_LENGTH or (hid == H_HOST and not owned & OWN_HOST):
                # Content-Length frames the body: no rule may drop it (config refuses too).
                _put_line(&b, name, value)
            elif hid == H_X_FORWARDED_FOR and forwarded:
                xff = value if xff is None else xff + b", " + value
            elif ((not forwarded and (hid == H_X_FORWARDED_FOR or hid == H_X_FORWARDED_PROTO
                                      or hid == H_X_FORWARDED_HOST))
                  or (hid == H_X_REQUEST_ID and not flags & HEAD_REQUEST_ID)):
                # Not the gateway's to write on this route: an end-to-end header.
                if (rw.lengths or conn_tokens is not None) and _dropped(name, rw, conn_tokens):
                    continue
                _put_line(&b, name, value)
            # Hop-by-hop headers, X-Forwarded-Proto/Host and X-Request-ID are written
            # below. Expect is answered by the gateway itself (it sends 100 Continue
            # once the upstream connection is up), so it is not forwarded.
        if info.host is None and not owned & OWN_HOST:
            _put_bytes(&b, b"Host: ")
            _put_bytes(&b, default_host)
            _put_bytes(&b, b"\r\n")
        if info.chunked:
            _put_bytes(&b, b"Transfer-Encoding: chunked\r\n")
        if info.websocket:
            _put_bytes(&b, b"Connection: upgrade\r\nUpgrade: websocket\r\n")
        if forwarded and not owned & OWN_XFF:
            _put_bytes(&b, b"X-Forwarded-For: ")
            if xff is not None:
                _put_bytes(&b, xff)
                _put_bytes(&b, b", ")
            _put_bytes(&b, client_ip)
            _put_bytes(&b, b"\r\n")
        if forwarded and not owned & OWN_XFP:
            _put_bytes(&b, b"X-Forwarded-Proto: http\r\n")
        if forwarded and info.host is not None and not owned & OWN_XFH:
            _put_bytes(&b, b"X-Forwarded-Host: ")
            _put_bytes(&b, info.host)
            _put_bytes(&b, b"\r\n")
        if flags & HEAD_REQUEST_ID and not owned & OWN_REQUEST_ID:
            _put_bytes(&b, b"X-Request-ID: ")
            _put_bytes(&b, request_id)
            _put_bytes(&b, b"\r\n")
        if trace:
            _put_bytes(&b, _write_traceparent(info))
        if not rw.empty:
            _put_bytes(&b, rw.appended)
        _put_bytes(&b, b"\r\n")
        return _finish(&b)
    finally:
        if b.heap != NULL:
            free(b.heap)


cdef dict _STATUS_LINES = {}
cdef dict _REASONS = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 201: b"Created",
    202: b"Accepted", 204: b"No Content", 206: b"Partial Content",
    301: b"Moved Permanently", 302: b"Found", 304: b"Not Modified",
    400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 413: b"Content Too Large",
    414: b"URI Too Long", 417: b"Expectation Failed", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


cdef int _last_status = 0
cdef bytes _last_reason = None
cdef bytes _last_line = None


cpdef bytes status_line(int status, bytes reason=None):
    """`HTTP/1.1 200 OK\\r\\n`, cached for the upstream's usual reason phrases
    (the last one asked for first: an upstream answers mostly one status)."""
    global _last_status, _last_reason, _last_line
    cdef bytes line
    if status == _last_status and reason is not None and reason == _last_reason:
        return _last_line
    cdef bytes asked = reason
    if reason is None or not reason:
        reason = _REASONS.get(status, b"Unknown")
    key = (status, reason)
    line = _STATUS_LINES.get(key)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(_STATUS_LINES) < 256:
            _STATUS_LINES[key] = line
    if asked is not None and asked and PyBytes_GET_SIZE(asked) <= 64:
        _last_status, _last_reason, _last_line = status, asked, line
    return line


cpdef bytes build_response_head(int status, bytes reason, list headers, MessageInfo info,
                                HeaderRewrite rw, bytes request_id, int framing, bint keep_alive,
                                bint http10_client=False, bytes extra=None):
    """The client response head: hop-by-hop dropped, route rules applied,
    framing re-declared (`framing` is what the gateway will send),
    X-Request-ID added when the upstream did not send one (unless
    `request_id` is None: the route does not echo ids), then `extra`
    (complete header lines from the route's policies)."""
    cdef char stack[_HEAD_STACK]
    cdef HeadBuf b
    b.data = stack
    b.size = 0
    b.cap = _HEAD_STACK
    b.heap = NULL
    cdef tuple pair
    cdef bytes name, value
    cdef int hid
    cdef bint has_request_id = False
    cdef frozenset conn_tokens = info.connection_tokens
    try:
        _put_bytes(&b, status_line(status, reason))
        for pair in headers:
            name = <bytes>pair[0]
            value = <bytes>pair[1]
            hid = classify(name)
            if hid == H_OTHER or hid == H_X_FORWARDED_FOR or hid == H_X_FORWARDED_PROTO \
                    or hid == H_X_FORWARDED_HOST or hid == H_HOST or hid == H_EXPECT:
                if (rw.lengths or conn_tokens is not None) and _dropped(name, rw, conn_tokens):
                    continue
            elif hid == H_X_REQUEST_ID:
                if rw.owned_mask & OWN_REQUEST_ID:
                    continue
                has_request_id = True
            elif hid == H_CONTENT_LENGTH:
                if framing != FRAMING_LENGTH:
                    continue
            else:
                continue  # hop-by-hop
            _put_line(&b, name, value)
        if framing == FRAMING_CHUNKED:
            _put_bytes(&b, b"Transfer-Encoding: chunked\r\n")
        if not has_request_id and request_id is not None and not rw.owned_mask & OWN_REQUEST_ID:
            _put_bytes(&b, b"X-Request-ID: ")
            _put_bytes(&b, request_id)
            _put_bytes(&b, b"\r\n")
        if not rw.empty:
            _put_bytes(&b, rw.appended)
        if extra:
            _put_bytes(&b, extra)  # header lines a policy added (rate-limit state, ...)
        if status == 101:
            _put_bytes(&b, b"Connection: upgrade\r\nUpgrade: websocket\r\n")
        elif not keep_alive:
            _put_bytes(&b, b"Connection: close\r\n")
        elif http10_client:
            _put_bytes(&b, b"Connection: keep-alive\r\n")  # 1.0 closes unless told otherwise
        _put_bytes(&b, b"\r\n")
        return _finish(&b)
    finally:
        if b.heap != NULL:
            free(b.heap)


cdef class RequestIds:
    """Request ids unique across workers and restarts: a random per-process
    prefix and a counter. Cheaper than uuid4 and just as unique for tracing."""

    def __init__(self):
        self.prefix = os.urandom(6).hex().encode() + b"-"
        self.counter = 0

    cpdef bytes next(self):
        # prefix + the counter in lower-case hex, at least 8 digits (as "%08x"),
        # written directly: bytes formatting cost ~1,700 instructions here.
        cdef char digits[16]
        cdef const char *hexdigits = b"0123456789abcdef"
        cdef unsigned long long v
        cdef int n = 0
        self.counter += 1
        v = self.counter
        while v or n < 8:
            digits[15 - n] = hexdigits[v & 15]
            v >>= 4
            n += 1
        cdef Py_ssize_t plen = PyBytes_GET_SIZE(self.prefix)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, plen + n)
        cdef char *p = PyBytes_AS_STRING(out)
        memcpy(p, PyBytes_AS_STRING(self.prefix), plen)
        memcpy(p + plen, digits + 16 - n, n)
        return out


cdef bint _is_event_stream(bytes value):
    """Content-Type is text/event-stream (any case, parameters allowed)."""
    cdef bytes v = value.strip()
    return PyBytes_GET_SIZE(v) >= 17 and _ieq(PyBytes_AS_STRING(v), b"text/event-stream", 17) \
        and (PyBytes_GET_SIZE(v) == 17 or v[17:18] in (b";", b" ", b"\t"))


# --- W3C trace context ----------------------------------------------------
#
# traceparent = version "-" trace-id "-" parent-id "-" flags, lower-case hex:
# 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01. The gateway is a
# span of the trace: upstream it sends the same trace id and flags with its
# own span id as the parent id. A missing or invalid header starts a new
# trace (flags 01, sampled: the gateway exports no spans itself, and a
# downstream parent-based sampler should still record). tracestate is vendor
# data the gateway has no business in: it is passed through as received.
# Ids come from a splitmix64 stream seeded from os.urandom in each process
# (after fork too): unique, not secret, and far cheaper than a syscall per
# request.

cdef unsigned long long _rng_state = 0
cdef const char *_HEX = b"0123456789abcdef"


def _reseed():
    global _rng_state
    _rng_state = int.from_bytes(os.urandom(8), "little")


_reseed()
os.register_at_fork(after_in_child=_reseed)


cdef inline unsigned long long _next64() noexcept nogil:
    global _rng_state
    _rng_state += 0x9e3779b97f4a7c15ULL
    cdef unsigned long long z = _rng_state
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL
    return z ^ (z >> 31)


cdef inline void _hex64(char *out, unsigned long long v) noexcept nogil:
    cdef int i
    for i in range(16):
        out[15 - i] = _HEX[v & 15]
        v >>= 4


cdef inline bint _is_hex(const char *s, Py_ssize_t n, bint *all_zero) noexcept nogil:
    cdef Py_ssize_t i
    cdef char c
    all_zero[0] = True
    for i in range(n):
        c = s[i]
        if not ((48 <= c <= 57) or (97 <= c <= 102)):
            return False
        if c != 48:
            all_zero[0] = False
    return True


cdef bint _valid_traceparent(bytes value) noexcept:
    """Version 00 exactly, or a later version's 00-compatible prefix; the
    trace and parent ids must not be all zeros; version ff is invalid."""
    cdef const char *s = PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    cdef bint zero
    if n < 55 or s[2] != 45 or s[35] != 45 or s[52] != 45:
        return False
    if not _is_hex(s, 2, &zero) or (s[0] == 102 and s[1] == 102):
        return False
    if zero:  # version 00: nothing may follow
        if n != 55:
            return False
    elif n > 55 and s[55] != 45:
        return False
    if not _is_hex(s + 3, 32, &zero) or zero:
        return False
    if not _is_hex(s + 36, 16, &zero) or zero:
        return False
    return _is_hex(s + 53, 2, &zero)


cdef bytes _write_traceparent(MessageInfo info):
    """The traceparent header line for the upstream (kept in info.sent_traceparent:
    trace id at [16:48], the gateway's span id at [49:65])."""
    cdef char line[70]
    cdef bytes incoming = info.traceparent
    cdef const char *s
    memcpy(line, b"traceparent: 00-", 16)
    if incoming is not None:
        incoming = incoming.strip()
    if incoming is not None and _valid_traceparent(incoming):
        s = PyBytes_AS_STRING(incoming)
        memcpy(line + 16, s + 3, 32)
        line[66] = s[53]
        line[67] = s[54]
    else:
        _hex64(line + 16, _next64())
        _hex64(line + 32, _next64())
        line[66] = 48
        line[67] = 49   # 01: sampled
    line[48] = 45
    _hex64(line + 49, _next64())
    line[65] = 45
    line[68] = 13
    line[69] = 10
    info.sent_traceparent = line[:70]
    return info.sent_traceparent


cpdef bytes trace_id_of(bytes traceparent):
    """The trace id of a valid traceparent value, else None (for logs)."""
    if traceparent is None:
        return None
    traceparent = traceparent.strip()
    if not _valid_traceparent(traceparent):
        return None
    return traceparent[3:35]


def valid_traceparent(bytes value):
    return _valid_traceparent(value.strip())
