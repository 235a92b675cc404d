# cython: language_level=3
"""The per-request state machine of a worker, compiled: client connections,
exchanges, upstream connections and their pools.

These four types call each other for every request, several times. As Python
classes they cost ~126k instructions per proxied small GET (callgrind,
bench/callgrind.sh), about twice a feature-less pure-Python proxy; as cdef
classes their calls to each other are C calls and their fields C struct
members. They live in one extension module because they reference each other
both ways, which Cython's cimport can't express across modules; the module is
split along its class seams into include files:

    proxy_upstream.pxi   EndpointPool, UpstreamConnection
    proxy_exchange.pxi   Exchange (the phases of one request)
    proxy_admission.pxi  its phases 3-4: the route's stages, in plan order
    proxy_client.pxi     ClientConnection

A request's way through (the phases: fastgw/pipeline/phases.py and
docs/architecture.md):

    ClientConnection                Exchange                 UpstreamConnection
    request_head: limits, framing,
      version, scan_request  --->   (created)
    route: table match, 404/405,
      body limit (413)       --->   proxy_to(): target kept
                                    start(): plan.stages in phase order
                                      (request_head, access, admission;
                                       LocalLimit natively: run_admission,
                                       proxy_admission.pxi)
                                    _build_head(): upstream request head
                                    upstream_select, pool checkout / dial --> connection_made
    request body       --------->   request_body() ----------->   transport.write
                                    interim_response() <------   1xx heads
                                    response_head()   <-------   on_headers_complete
                                      (plan.response_hooks)
                                    response_body()   <-------   on_body / raw pass-through
                                    response_end()    <-------   on_message_complete
                                    failure: _retry_after() decides once
    exchange_finished  <---------   log: plan.log_hooks, metrics, access log

Errors before the response head reached the client become a JSON local reply
(`fail`); after it, the client connection is closed (`abort`). One exchange
per client connection is active at a time; pipelined requests wait in
`pending`, so responses go out in order.
"""
import asyncio
import collections
import logging
import socket

import httptools

from fastgw._native.accesslog cimport AccessLineBuffer
from fastgw._native.deadlines cimport Deadlines, Timed, cancel_deadline
from fastgw._native.headers cimport (
    F_CHUNKED, F_CLOSE, F_LENGTH, F_NONE, HEAD_REQUEST_ID, HeaderRewrite, MessageInfo, RequestIds,
    build_request_head, build_response_head, http_version, scan_request, scan_response,
)
from fastgw._native.metrics cimport (
    G_CONNECTIONS_OPEN, G_CONNECTIONS_TOTAL, G_IN_FLIGHT, STREAM_SSE, WorkerMetrics, now_ns,
)
from fastgw._native.errors import CONTINUE_100, ProxyError, answer_reply, error_reply

log = logging.getLogger("fastgw")

cdef object HttpParserUpgrade = httptools.HttpParserUpgrade
cdef object HttpParserCallbackError = httptools.HttpParserCallbackError
cdef object HttpParserError = httptools.HttpParserError
cdef object HttpRequestParser = httptools.HttpRequestParser
cdef object HttpResponseParser = httptools.HttpResponseParser

cdef frozenset IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))

# Request bytes kept so a request can be replayed on a fresh connection when a
# pooled one turns out to be dead. Bigger requests are not replayed.
DEF REPLAY_LIMIT = 65536
# Request body buffered while the upstream connection is being set up.
DEF CONNECT_BUFFER_LIMIT = 262144
# A request head that keeps arriving without ending is cut off at this many
# bytes past the configured limit (the exact limit is checked per header).
DEF HEAD_SLACK = 65536
# Bounds on an upstream response head; beyond them the response is a 502.
DEF MAX_RESPONSE_HEADERS = 256
DEF MAX_RESPONSE_HEAD_BYTES = 65536
# Interim (1xx) answers relayed before a final one; more is a broken upstream.
DEF MAX_INTERIM_RESPONSES = 16
# Lingering close: after an error reply that ends the connection, keep reading
# (and dropping) what the client still sends for this long, so the client
# reads the reply instead of a reset.
LINGER_SECONDS = 2.0

# Why reading from the client is paused (a bit each; reading resumes at 0).
DEF PAUSE_PIPELINE = 1    # requests are queued behind the one in flight
DEF PAUSE_UPSTREAM = 2    # the upstream isn't taking the body fast enough
DEF PAUSE_CLOSING = 4     # nothing more is parsed on this connection

# What an armed exchange deadline means.
DEF WAIT_HEAD = 1   # response_header timeout: waiting for the upstream's status line
DEF WAIT_IDLE = 2   # idle timeout: a body in flight has stalled

# Where an exchange is in its stages (RoutePlan.stages).
DEF ADMIT_RUNNING = 1   # inside a stage's admit()
DEF ADMIT_WAITING = 2   # a stage answered WAIT: admission_done() resumes
DEF ADMIT_EARLY = 3     # admission_done() came before admit() returned WAIT

# How an exchange's use of an endpoint ended, reported to the cluster
# (`ClusterRuntime.report(pool, outcome)`) for circuit breaking and outlier
# detection: defined in codes.pxd; Python code imports fastgw._native.codes.
from fastgw._native.codes cimport (
    OUTCOME_5XX, OUTCOME_BAD_RESPONSE, OUTCOME_CANCELLED, OUTCOME_CONNECT, OUTCOME_OK, OUTCOME_RESET,
    OUTCOME_TIMEOUT,
)

# A stage's answer: "I keep this exchange and call admission_done later".
WAIT = object()

# Why a try failed, for the one retry decision (Exchange._retry_after).
DEF FAILED_CONNECT = 1   # refused, unreachable or timed out dialling: nothing was sent
DEF FAILED_RESET = 2     # closed before a complete response head
DEF FAILED_TIMEOUT = 3   # no response head within the try's deadline

cdef bytes CHUNK_END = b"0\r\n\r\n"
cdef bytes CRLF = b"\r\n"


class StopParsing(Exception):
    """Raised from a parser callback once the connection is closing, so llhttp
    parses nothing more of what is already buffered."""


class RequestRejected(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


cdef class GatewayCore:
    """What a request reads from the worker's runtime, as typed fields.
    `fastgw.proxy.gateway.Gateway` subclasses it and fills it in."""
    cdef public object loop
    cdef public object route_match        # Router.match: (host, method, path) -> (route, params)
    cdef public object allowed_methods    # (host, path) -> [str]
    cdef public list plans                # route.index -> RoutePlan
    cdef public RequestIds request_ids
    cdef public Deadlines deadlines
    cdef public set connections
    cdef public bint draining
    cdef public long long max_body_bytes
    cdef public long long max_head_bytes
    cdef public Py_ssize_t max_uri_bytes
    cdef public Py_ssize_t max_header_bytes
    cdef public Py_ssize_t max_header_count
    cdef public double client_header_timeout
    cdef public double keepalive_timeout
    cdef public WorkerMetrics metrics     # None: metrics off (fastgw/observe/metrics.py)
    cdef public object access_log         # None, or .log(exchange) (fastgw/observe/access_log.py)


cdef class RoutePlan:
    """What a matched route does, compiled once per config: cluster, header
    programs, timeouts and the upstream path rewrite."""
    cdef public object route
    cdef public object cluster            # ClusterRuntime: .pick() -> EndpointPool
    cdef public HeaderRewrite request_rewrite
    cdef public HeaderRewrite response_rewrite
    cdef public double idle_timeout
    cdef public double websocket_idle_timeout
    cdef public object rewrite            # None, or (path, params) -> upstream path
    cdef public bytes default_host        # Host for HTTP/1.0 requests without one
    cdef public tuple stages              # None, or the route's stages in phase order
                                          # (access, admission: fastgw/pipeline/phases.py):
                                          # LocalLimit, or objects with .admit(exchange)
    cdef public tuple response_hooks      # None, or hook(exchange, status, headers) -> None | ProxyError
    cdef public tuple log_hooks           # None, or hook(exchange), when the exchange is over
    cdef public object retry              # None, or a RetryRule (fastgw/policy/retry.py): phase 11
    cdef public double try_timeout        # response head deadline of one try
    cdef public double connect_timeout    # the route's timeouts.connect, else the cluster's
    cdef public int index                 # route.index: the route's metrics block
    cdef public int head_flags            # HEAD_* bits (headers.pxd): the request headers the
                                          # gateway writes (forwarded_headers, request_id and
                                          # trace_context in fastgw/policy/)


cdef class LocalLimit:
    """A route's host-local rate limits as one of its stages. The exchange
    runs it itself (no Python call through `admit`), and a refusal keeps the
    client's connection like any local reply: the body is read and dropped."""
    cdef public object limiter            # RouteLimiter: .check(peer_ip, headers) -> Decision

    def __init__(self, limiter):
        self.limiter = limiter


cdef class ExchangeView:
    """The base of the plugins' Request view (fastgw/plugins/api.py): made by
    the exchange without a Python __init__, holding the exchange it shows."""
    cdef readonly object _ex
    cdef public object _headers

    def _bind(self, exchange):
        self._ex = exchange


cdef class PluginHook:
    """A plugin's request-phase hook (on_request_head, on_access) as a stage.
    The exchange calls it itself, timing it with the C clock: on a route with
    a no-op plugin, the Python work per request is the hook's own frame and
    the plugin's Request view (fastgw/plugins/runtime.py builds these)."""
    cdef public object hook          # hook(request) -> None | Answer | awaitable
    cdef public type make_request    # the plugins' Request class (an ExchangeView), made once per exchange
    cdef public object on_result     # (exchange, result, started_ns) -> verdict, for a result not None
    cdef public object on_error      # (error) -> ProxyError (logs it)
    cdef public object on_slow       # (spent_ns) -> None (logs it)
    cdef public long long budget_ns
    cdef public object phase         # fastgw.pipeline.phases.Phase
    cdef public str label            # for logs: "<plugin NAME HOOK>"

    def __repr__(self):
        return self.label


cdef class Answer:
    """A stage's (a plugin's) own answer instead of the upstream's: status,
    complete header lines (b"Name: value\r\n" each) and a body."""
    cdef public int status
    cdef public bytes header_lines
    cdef public bytes body

    def __init__(self, int status, bytes header_lines=b"", bytes body=b""):
        self.status = status
        self.header_lines = header_lines
        self.body = body


include "proxy_upstream.pxi"
include "proxy_exchange.pxi"
include "proxy_admission.pxi"
include "proxy_client.pxi"
