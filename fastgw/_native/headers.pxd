# Declarations shared with fastgw/_native/proxy.pyx, which calls these
# without going through Python.

cdef enum Framing:
    F_NONE = 0      # no body (GET without CL, 204, 304, HEAD response)
    F_LENGTH = 1    # Content-Length
    F_CHUNKED = 2   # Transfer-Encoding: chunked
    F_CLOSE = 3     # response delimited by connection close


# Headers the gateway writes into the upstream request, one bit per policy
# (fastgw/policy/forwarded_headers.py, request_id.py, trace_context.py); a
# route's plan holds the bits its policies set (RoutePlan.head_flags).
cdef enum HeadFlags:
    HEAD_FORWARDED = 1      # X-Forwarded-For appended, -Proto and -Host written
    HEAD_REQUEST_ID = 2     # X-Request-ID to the upstream and back to the client
    HEAD_TRACE = 4          # traceparent: the gateway's span in the client's trace


cdef class MessageInfo:
    cdef public int error_status        # 0: fine; else the status to answer with
    cdef public str error_code
    cdef public str error_message
    cdef public bytes host              # request: the Host value (None if absent)
    cdef public long long content_length  # -1: no Content-Length
    cdef public bint chunked
    cdef public bint keep_alive
    cdef public bint expect_continue
    cdef public bint websocket          # Upgrade: websocket with Connection: upgrade
    cdef public bint upgrade            # any Upgrade header with Connection: upgrade
    cdef public bytes request_id
    cdef public frozenset connection_tokens  # None when Connection lists only close/keep-alive/upgrade
    cdef public bytes traceparent       # request: the client's traceparent value (None if absent)
    cdef public bytes sent_traceparent  # request: the traceparent line sent upstream, once built
    cdef public bint event_stream       # response: Content-Type text/event-stream (SSE)
    cdef public bint connection_seen    # a Connection or Proxy-Connection header was present

    cdef void _fail(self, int status, str code, str message)


cdef class HeaderRewrite:
    cdef readonly frozenset drop        # names removed or replaced
    cdef readonly tuple set_pairs
    cdef readonly tuple add_pairs
    cdef readonly bytes appended        # set + add, pre-serialised
    cdef readonly frozenset lengths
    cdef readonly bint empty
    cdef readonly int owned_mask        # OWN_* bits: headers the gateway writes that the rule replaces or removes


cdef class RequestIds:
    cdef bytes prefix
    cdef public unsigned long long counter  # public: tests set it near the wrap of 8 hex digits

    cpdef bytes next(self)


cpdef MessageInfo scan_request(list headers, bint http11)
cpdef MessageInfo scan_response(list headers, bint http11)
cpdef int http_version(object parser, MessageInfo info) except -1
cpdef bytes build_request_head(bytes method, bytes target, list headers, MessageInfo info,
                               HeaderRewrite rw, bytes client_ip, bytes request_id,
                               bytes default_host, int flags=*)
cpdef bytes build_response_head(int status, bytes reason, list headers, MessageInfo info,
                                HeaderRewrite rw, bytes request_id, int framing, bint keep_alive,
                                bint http10_client=*, bytes extra=*)
cpdef bytes status_line(int status, bytes reason=*)
cpdef bytes trace_id_of(bytes traceparent)
