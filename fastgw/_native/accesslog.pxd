# Declarations shared with fastgw/_native/proxy.pyx, whose Exchange._account
# hands its typed fields to the access log without building Python objects.
from fastgw._native.headers cimport MessageInfo


cdef class AccessLineBuffer:
    cdef char *buf                  # the lines not yet written, back to back
    cdef Py_ssize_t length, capacity
    cdef readonly Py_ssize_t limit  # flush() once this many bytes are buffered
    cdef readonly double sampling
    cdef tuple redact_query         # bytes: query parameter names whose values are logged as REDACTED
    cdef tuple header_names         # bytes, lower-case: request headers logged
    cdef tuple header_keys          # bytes: '"name":' for each of header_names
    cdef char *header_redacted      # per header_names entry: 1 = logged as REDACTED
    cdef char *header_done          # scratch per line: the header's key is written
    cdef dict route_json            # RoutePlan -> b'"route name"'
    cdef dict pool_json             # EndpointPool -> b'"host:port"'
    cdef dict address_json          # address str -> b'"host:port"' (the Python-object path)
    cdef long long second           # the UTC second second_text shows
    cdef char second_text[32]       # "YYYY-MM-DDTHH:MM:SS."
    cdef Py_ssize_t second_len
    cdef object random

    cdef int record(self, bytes method, bytes target, bytes request_id, bytes peer_ip, MessageInfo info,
                    object plan, object pool, int status, long long body_bytes, long long bytes_out,
                    long long duration_ns, long long upstream_ns, int retries, int rate_limit,
                    list request_headers) except -1
    cdef bytes _remember(self, dict cache, object key, object text)
    cdef int _reserve(self, Py_ssize_t more) except -1
    cdef int _done(self) except -1
    cdef int _line(self, bytes method, bytes target, bytes request_id, bytes peer_ip,
                   bytes trace, Py_ssize_t trace_at, Py_ssize_t trace_len, bytes route, bytes upstream,
                   int status, long long body_bytes, long long bytes_out, long long duration_ns,
                   long long upstream_ns, int retries, int rate_limit, list request_headers) except -1
    cdef char *_time(self, char *out) noexcept
    cdef char *_ms(self, char *out, long long ns) except NULL
    cdef char *_path(self, char *out, const unsigned char *target, Py_ssize_t n) noexcept
    cdef int _match_header(self, object name) noexcept
    cdef int _headers(self, list headers) except -1
    cdef int _header_value(self, object value, int k, bint more) except -1
