# cython: language_level=3
"""The per-request state machine of a worker, compiled: client connections,
exchanges, upstream connections and their pools.

These four types call each other for every request, several times. As Python
classes they cost ~126k instructions per proxied small GET (callgrind,
bench/callgrind.sh), about twice a feature-less pure-Python proxy; as cdef
classes their calls to each other are C calls and their fields C struct
members. They live in one module because they reference each other both ways,
which Cython's cimport can't express across modules.

A request's way through (DESIGN.md's phases):

    ClientConnection                Exchange                 UpstreamConnection
    1 request headers  --------->   (created)
      limits, scan_request
    2 route: trie match, 404/405
      body limit (413)
    6 upstream head (native)        start():
                                    5 upstream select
                                    7 pool checkout / dial ------> connection_made
    8 request body     --------->   request_body() ----------->   transport.write
                                    response_head()   <-------   9 on_headers_complete
                                    response_body()   <-------  10 on_body
                                    response_end()    <-------     on_message_complete
    12 exchange_finished <-------

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
from fastgw._native.deadlines cimport Deadlines, Timed
from fastgw._native.headers cimport (
    F_CHUNKED, F_CLOSE, F_LENGTH, F_NONE, HeaderRewrite, MessageInfo, RequestIds,
    build_request_head, build_response_head, scan_request, scan_response,
)
from fastgw._native.metrics cimport (
    G_CONNECTIONS_OPEN, G_CONNECTIONS_TOTAL, G_IN_FLIGHT, STREAM_SSE, WorkerMetrics, now_ns,
)
from fastgw.proxy.errors import CONTINUE_100, ProxyError, error_reply

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

# Where an exchange is in its admission stages (RoutePlan.admission).
DEF ADMIT_RUNNING = 1   # inside a stage's admit()
DEF ADMIT_WAITING = 2   # a stage answered WAIT: admission_done() resumes
DEF ADMIT_EARLY = 3     # admission_done() came before admit() returned WAIT

# How an exchange's use of an endpoint ended, reported to the cluster
# (`ClusterRuntime.report(pool, outcome)`) for circuit breaking and outlier
# detection. Exported for the Python side.
DEF OUTCOME_OK = 0
DEF OUTCOME_CONNECT = 1      # refused / unreachable: nothing reached the upstream
DEF OUTCOME_TIMEOUT = 2      # connect or response-header timeout
DEF OUTCOME_RESET = 3        # closed before a complete response head
DEF OUTCOME_BAD_RESPONSE = 4 # malformed or ambiguous response
DEF OUTCOME_5XX = 5          # a 5xx status from the upstream
DEF OUTCOME_CANCELLED = 6    # the client went away: says nothing about the upstream
OK, CONNECT_FAILURE, TIMEOUT, RESET, BAD_RESPONSE, STATUS_5XX, CANCELLED = range(7)

# An admission stage's answer: "I keep this exchange and call admission_done later".
WAIT = object()

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
    cdef public bint trace                # W3C traceparent propagation


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
    cdef public object limiter            # None, or .check(peer_ip, headers) -> decision (phase 4)
    cdef public tuple admission           # None, or stages with .admit(exchange) (phase 4, async)
    cdef public object retry              # None, or a RetryRule (fastgw/policy/retry.py): phase 11
    cdef public double try_timeout        # response head deadline of one try
    cdef public int index                 # route.index: the route's metrics block


# ---------------------------------------------------------------------------
# Upstream side
# ---------------------------------------------------------------------------

cdef class EndpointPool:
    """Keep-alive connections to one endpoint. Idle ones are kept LIFO (the most
    recently used is the least likely to have been timed out by the upstream)
    and swept by the worker's sweeper, not by one timer per connection."""
    cdef public object loop
    cdef public object endpoint
    cdef public list idle
    cdef public Py_ssize_t max_idle
    cdef public double idle_timeout
    cdef public double connect_timeout
    cdef public long active      # exchanges using this endpoint now (least_request reads it)
    cdef public long created     # connections ever opened
    cdef public long open        # connections open now
    cdef public int metrics_index  # the endpoint's metrics block; -1: none

    def __init__(self, loop, endpoint, cluster):
        self.metrics_index = -1
        self.loop = loop
        self.endpoint = endpoint
        self.idle = []
        self.max_idle = cluster.pool_max_idle
        self.idle_timeout = cluster.pool_idle_timeout
        self.connect_timeout = cluster.timeouts.connect

    cdef void acquire(self, Exchange exchange, bint fresh):
        """Attach a connection to `exchange`: an idle one now, else a new one
        once connected (`upstream_ready` or `upstream_connect_failed`)."""
        cdef UpstreamConnection conn
        if exchange.timed and exchange.up_t0 == 0:
            exchange.up_t0 = now_ns()  # upstream time runs until _release_endpoint
        while self.idle and not fresh:
            conn = self.idle.pop()
            if not conn.transport.is_closing():
                conn.reused = True
                conn.attach(exchange)
                exchange.upstream_ready(conn)
                return
        self.loop.create_task(self._connect(exchange))

    async def _connect(self, Exchange exchange):
        endpoint = self.endpoint
        cdef UpstreamConnection conn
        try:
            transport, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: UpstreamConnection(self),
                                            endpoint.host, endpoint.port),
                self.connect_timeout)
        except TimeoutError:
            exchange.upstream_connect_failed(ProxyError(
                504, "upstream_timeout",
                f"connect to {endpoint.address} timed out after {self.connect_timeout:g}s"))
            return
        except OSError as err:
            exchange.upstream_connect_failed(ProxyError(
                502, "upstream_connect_failed",
                f"connect to {endpoint.address} failed: {err.strerror or err}"))
            return
        self.created += 1
        self.open += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if exchange.finished or exchange.upstream is not None:
            self.release(conn)  # the client left while we were connecting
            return
        conn.attach(exchange)
        exchange.upstream_ready(conn)

    cdef void release(self, UpstreamConnection conn):
        """Take back a connection that finished an exchange cleanly."""
        conn.exchange = None
        if not conn.transport.is_reading():
            conn.transport.resume_reading()
        if len(self.idle) >= self.max_idle or conn.transport.is_closing():
            conn.transport.close()
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    cdef void lost(self, UpstreamConnection conn):
        self.open -= 1
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def sweep(self, double now):
        """Close connections idle longer than idle_timeout (the oldest come first)."""
        cdef list idle = self.idle
        cdef double limit = now - self.idle_timeout
        cdef Py_ssize_t expired = 0
        while expired < len(idle) and (<UpstreamConnection>idle[expired]).idle_since <= limit:
            expired += 1
        if expired:
            old = idle[:expired]
            self.idle = idle[expired:]
            for conn in old:
                conn.transport.close()

    def close_idle(self):
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.transport.close()


cdef class UpstreamConnection:
    """One keep-alive connection to an upstream endpoint: parses responses
    with httptools and hands each event to the exchange it serves. In its pool
    it keeps reading, so an upstream that closes an idle connection is noticed
    and the connection dropped at once."""
    cdef public EndpointPool pool
    cdef public object transport
    cdef object parser
    cdef public Exchange exchange
    cdef list headers
    cdef Py_ssize_t head_bytes
    cdef bytes reason
    cdef public bint reused
    cdef double idle_since
    cdef public object tunnel
    cdef bint got_bytes          # any response byte for the current exchange
    cdef bint reset_parser       # a HEAD response ended at its head
    cdef bint feeding            # inside parser callbacks
    cdef bint interim            # the message being parsed is a 1xx (not the final answer)
    cdef bint stray              # the upstream sent a message nobody asked for: never pool
    cdef int release_pending     # -1: none; else the deferred exchange_done(reusable)
    cdef public long long raw_remaining  # Content-Length body bytes still to pass through
                                         # without the parser; -1 when not in that mode

    def __init__(self, EndpointPool pool):
        self.pool = pool
        self.parser = HttpResponseParser(self)
        self.headers = []
        self.reason = b""
        self.release_pending = -1
        self.raw_remaining = -1

    # -- asyncio protocol -----------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.tunnel is not None:
            self.tunnel.from_upstream(data)
            return
        cdef Exchange exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the upstream is out of step. Drop it.
            self.transport.close()
            return
        self.got_bytes = True
        if self.raw_remaining > 0:
            self._pass_body(exchange, data)
            return
        cdef ClientConnection client = exchange.client
        client.corked += 1
        self.feeding = True
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            exchange.upstream_upgraded(self, data[upgrade.args[0]:])
        except HttpParserCallbackError as err:
            cause = err.__context__ or err
            if self.exchange is not None:
                self.exchange.upstream_bad_response(self, str(cause) or type(cause).__name__)
        except HttpParserError as err:
            if self.exchange is not None:
                self.exchange.upstream_bad_response(self, f"malformed response from upstream: {err}")
        finally:
            self.feeding = False
            if self.reset_parser:
                self.reset_parser = False
                self.parser = HttpResponseParser(self)
            if self.release_pending >= 0:
                reusable = self.release_pending
                self.release_pending = -1
                self._finish_exchange(reusable)
            client.uncork()

    cdef void _pass_body(self, Exchange exchange, bytes data):
        """The rest of a Content-Length body: the bytes as read go straight to the
        client, with no copy by the parser (httptools would make a new bytes
        object of every body chunk: half the memcpy of a 1 MiB response)."""
        cdef Py_ssize_t n = len(data)
        if n <= self.raw_remaining:
            self.raw_remaining -= n
            exchange.response_body(data)
        else:
            # More than the body: the upstream sent bytes nobody asked for.
            exchange.response_body(data[:self.raw_remaining])
            self.raw_remaining = 0
            exchange.upstream_keep_alive = False
        if self.raw_remaining == 0:
            self.raw_remaining = -1
            self.parser = HttpResponseParser(self)  # llhttp never saw the body's end
            exchange.response_end(self)

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc):
        self.pool.lost(self)
        if self.tunnel is not None:
            self.tunnel.upstream_lost()
            return
        cdef Exchange exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.upstream_lost(self)

    def pause_writing(self):
        if self.exchange is not None:
            self.exchange.client.pause_reading_for(PAUSE_UPSTREAM)
        elif self.tunnel is not None:
            self.tunnel.upstream_write_paused()

    def resume_writing(self):
        if self.exchange is not None:
            self.exchange.client.resume_reading_for(PAUSE_UPSTREAM)
        elif self.tunnel is not None:
            self.tunnel.upstream_write_resumed()

    # -- httptools callbacks --------------------------------------------------
    def on_message_begin(self):
        if self.exchange is None:
            # A message after the one the exchange was given (excess bytes in
            # the same read): the connection is out of step and must not serve
            # another client. Stop parsing; _finish_exchange closes it.
            self.stray = True
            raise StopParsing()
        self.headers = []
        self.head_bytes = 0
        self.reason = b""
        self.interim = False

    def on_status(self, bytes reason):
        self.reason += reason

    def on_header(self, bytes name, bytes value):
        self.head_bytes += len(name) + len(value) + 4
        self.headers.append((name, value))
        if len(self.headers) > MAX_RESPONSE_HEADERS or self.head_bytes > MAX_RESPONSE_HEAD_BYTES:
            raise ValueError("upstream response head too large")

    def on_headers_complete(self):
        parser = self.parser
        if self.exchange is not None:
            status = parser.get_status_code()
            if 100 <= status < 200 and status != 101:
                # Interim answer (RFC 9110 15.2): llhttp ends the message at its
                # head and parses the final answer as the next message.
                self.interim = True
                self.exchange.interim_response(self, status, self.reason, self.headers,
                                               parser.get_http_version() == "1.1")
                return
            self.exchange.status = status
            self.exchange.response_head(self, status, self.reason, self.headers,
                                        parser.get_http_version() == "1.1")

    def on_body(self, bytes body):
        if self.raw_remaining > 0:
            self.raw_remaining -= len(body)
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self):
        if self.interim:
            self.interim = False  # the final answer is still to come
            return
        if self.exchange is not None:
            self.exchange.response_end(self)

    # -- exchange side ---------------------------------------------------------
    cdef void attach(self, Exchange exchange):
        self.exchange = exchange
        self.got_bytes = False

    cdef void exchange_done(self, bint reusable):
        """The exchange is over: back to the pool, or closed. Inside parser
        callbacks this waits until feed_data returns, so the rest of this
        message is never mistaken for the next exchange's."""
        self.exchange = None
        if self.feeding:
            self.release_pending = reusable
        else:
            self._finish_exchange(reusable)

    cdef void _finish_exchange(self, bint reusable):
        if self.transport is None:
            return
        if reusable and not self.stray and not self.transport.is_closing():
            self.pool.release(self)
        else:
            self.transport.close()


# ---------------------------------------------------------------------------
# The exchange
# ---------------------------------------------------------------------------

cdef class Exchange(Timed):
    cdef public ClientConnection client
    cdef public RoutePlan plan
    cdef public bytes method
    cdef public MessageInfo info
    cdef public bytes request_id
    cdef public bint keep_alive
    cdef bint http11
    cdef bint is_head
    cdef public list early_tunnel_data  # client bytes after a WebSocket head, held until 101
    cdef public UpstreamConnection upstream
    cdef EndpointPool pool
    cdef list pending_out        # request bytes waiting for the upstream connection
    cdef Py_ssize_t pending_bytes
    cdef list sent               # replay log; None once too big to replay
    cdef Py_ssize_t sent_bytes
    cdef bint retried
    cdef public bint request_done
    cdef public bint response_done
    cdef public bint response_started
    cdef public bint finished
    cdef int framing             # what the client gets
    cdef int upstream_framing    # what the upstream sends
    cdef public long long body_bytes
    cdef public bint upgraded
    cdef tuple local_reply       # (status, code, message, extra headers) or None
    cdef bint continue_sent
    cdef int interim_count       # 1xx answers seen from the upstream (all tries)
    cdef public bint upstream_keep_alive
    cdef bint upstream_paused
    cdef bint counted            # counted in pool.active
    cdef int outcome             # OUTCOME_*: reported to the cluster when the endpoint is released
    cdef public list request_headers  # the client's header list (balancers may hash on it)
    cdef int deadline_kind
    cdef bytes response_extra    # header lines policies add to the response (rate-limit state)
    cdef Py_ssize_t admission_step  # next stage of plan.admission to run
    cdef int admission_state     # ADMIT_*
    cdef object admission_verdict  # a verdict given while its stage's admit() was still running
    cdef list finish_callbacks   # None, or callables run once when the exchange ends
    cdef EndpointPool failed_pool  # the endpoint the last try failed on
    cdef object retry_timer      # the backoff before the next try
    cdef bint holds_retry        # counted in the cluster's retry budget
    # Observability (fastgw/observe): timed when metrics or the access log are on.
    cdef public bint timed
    cdef bint accounted          # counted once, when it finished
    cdef bint event_stream       # an SSE response: a stream for the metrics
    cdef public int status       # what the client got (0: nothing)
    cdef public long long started_ns, up_t0, upstream_ns, duration_ns, bytes_out
    cdef public bytes target     # the request target as received (access log)
    cdef public int retries      # tries after the first (phase 11; not stale-connection replays)
    cdef public int rate_limit   # 0: no limit on the route, 1: allowed, 2: denied

    def __init__(self, ClientConnection client, bytes method, MessageInfo info,
                 bytes request_id, bint keep_alive, bint http11):
        self.client = client
        self.method = method
        self.info = info
        self.request_id = request_id
        self.keep_alive = keep_alive
        self.http11 = http11
        self.is_head = method == b"HEAD"
        self.early_tunnel_data = []
        self.pending_out = []
        self.sent = []
        cdef GatewayCore gateway = client.gateway
        if gateway.metrics is not None or gateway.access_log is not None:
            self.timed = True
            self.started_ns = now_ns()
            if gateway.metrics is not None:
                gateway.metrics.add(G_IN_FLIGHT, 1)

    # -- setup -------------------------------------------------------------
    cdef void proxy_to(self, RoutePlan plan, bytes head):
        self.plan = plan
        self._queue_out(head)

    cdef void reply_locally(self, int status, str code, str message, int keep_alive=-1,
                            bytes extra_headers=b""):
        """Make this exchange a local reply (no upstream)."""
        if keep_alive >= 0:
            self.keep_alive = keep_alive
        self.local_reply = (status, code, message, extra_headers)

    # -- client side -------------------------------------------------------
    cdef void start(self):
        """The exchange is at the head of its connection's queue: go."""
        if self.local_reply is not None:
            status, code, message, extra = self.local_reply
            self._write_error(status, code, message, extra)
            self._response_finished()
            return
        if self.plan.admission is not None:
            self._run_admission()
            return
        self._select_upstream()

    # -- phase 4: admission stages (Redis limits, concurrency slots) -----------
    cdef void _run_admission(self):
        """Run the plan's remaining stages in order; stop at a refusal or at a
        stage that keeps the exchange (WAIT); after the last one, phase 5."""
        cdef tuple stages = self.plan.admission
        while self.admission_step < len(stages):
            stage = stages[self.admission_step]
            self.admission_step += 1
            self.admission_state = ADMIT_RUNNING
            try:
                verdict = stage.admit(self)
            except Exception as err:  # a bug in a stage: this request fails, the rest go on
                self.client.gateway.log_internal_error(f"admission stage {stage!r}", err)
                verdict = ProxyError(500, "internal_error", "internal error in an admission stage")
            if verdict is WAIT:
                if self.admission_state == ADMIT_EARLY:  # it already decided
                    verdict = self.admission_verdict
                    self.admission_verdict = None
                else:
                    self.admission_state = ADMIT_WAITING
                    return
            self.admission_state = 0
            if verdict is not None:
                self._refuse(verdict)
                return
        self._select_upstream()

    def admission_done(self, verdict):
        """A stage that answered WAIT decides: None goes on, a ProxyError refuses."""
        if self.admission_state == ADMIT_RUNNING:
            self.admission_state = ADMIT_EARLY
            self.admission_verdict = verdict
            return
        if self.admission_state != ADMIT_WAITING or self.finished:
            return
        self.admission_state = 0
        if verdict is not None:
            self._refuse(verdict)
        else:
            self._run_admission()

    cdef void _refuse(self, error):
        """An admission stage said no. Nothing went upstream: a request without a
        body keeps its connection (the rest of a body would have to be read and
        dropped first, so a request with one is answered on a closing connection)."""
        if self.request_done or (not self.info.chunked and self.info.content_length <= 0):
            self.response_done = True
            self._write_error(error.status, error.code, error.message, error.headers)
            self._response_finished()
        else:
            self.fail(error)

    def add_response_headers(self, bytes lines):
        """Header lines ("Name: value\r\n" each) for the response this exchange sends."""
        self.response_extra = lines if self.response_extra is None else self.response_extra + lines

    def on_finish(self, callback):
        """Call `callback(exchange)` once when the exchange ends, however it ends."""
        if self.finish_callbacks is None:
            self.finish_callbacks = [callback]
        else:
            self.finish_callbacks.append(callback)

    cdef void _mark_finished(self):
        self.finished = True
        if self.holds_retry:
            self.holds_retry = False
            if self.retry_timer is not None:
                self.retry_timer.cancel()
                self.retry_timer = None
            self.plan.cluster.retry_budget.release()
        cdef list callbacks = self.finish_callbacks
        if callbacks is not None:
            self.finish_callbacks = None
            for callback in callbacks:
                try:
                    callback(self)
                except Exception as err:
                    self.client.gateway.log_internal_error("an exchange's finish callback", err)

    # -- phase 5: upstream select ---------------------------------------------
    cdef void _select_upstream(self):
        try:
            if self.failed_pool is None:
                pool = self.plan.cluster.pick(self)  # phase 5: upstream select
            else:
                pool = self.plan.cluster.pick_retry(self, self.failed_pool)
        except ProxyError as refused:            # e.g. 503 circuit_open
            self.fail(refused)
            return
        if pool is None:
            self.fail(ProxyError(503, "no_endpoint",
                                 f"cluster '{self.plan.cluster.config.name}' has no endpoint"))
            return
        self.pool = <EndpointPool>pool
        self.pool.active += 1
        self.counted = True
        self.pool.acquire(self, False)

    cdef void request_body(self, bytes chunk):
        cdef Py_ssize_t size = len(chunk)
        self.body_bytes += size
        if self.local_reply is not None or self.response_done:
            return  # nobody to forward to: the body is read and dropped
        if self.info.chunked:
            self._send_upstream3(b"%x\r\n" % size, chunk, CRLF)
        else:
            self._send_upstream(chunk)

    cdef void request_end(self):
        self.request_done = True
        if self.local_reply is not None or self.finished:
            self._maybe_finish()
            return
        if self.info.chunked and not self.response_done:
            self._send_upstream(CHUNK_END)
        if self.upstream is not None and not self.response_started:
            self._arm(WAIT_HEAD, self.plan.try_timeout)
        self._maybe_finish()

    cdef void client_lost(self):
        """The client went away: drop the upstream side at once."""
        self._cancel_timer()
        if self.counted and not self.response_done and self.outcome == OUTCOME_OK:
            self.outcome = OUTCOME_CANCELLED
        self._mark_finished()
        self._release_endpoint()
        if self.timed:
            self._account()
        cdef UpstreamConnection upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.exchange = None
            upstream.transport.close()

    cdef void client_write_paused(self):
        if self.upstream is not None and not self.upstream_paused:
            self.upstream_paused = True
            self.upstream.transport.pause_reading()

    cdef void client_write_resumed(self):
        if self.upstream is not None and self.upstream_paused:
            self.upstream_paused = False
            self.upstream.transport.resume_reading()

    # -- upstream side -----------------------------------------------------
    cdef void upstream_ready(self, UpstreamConnection conn):
        """A connection is attached (pooled or freshly dialled)."""
        if self.finished:
            conn.exchange_done(True)
            return
        self.upstream = conn
        if self.client.write_paused:
            self.upstream_paused = True
            conn.transport.pause_reading()
        if self.info.expect_continue and not self.continue_sent and not self.request_done:
            # The upstream is reachable: now let the client send its body.
            self.continue_sent = True
            self.client.send(CONTINUE_100)
        out = self.pending_out
        self.pending_out = []
        self.pending_bytes = 0
        if len(out) == 1:
            conn.transport.write(out[0])
        else:
            conn.transport.writelines(out)
        self.client.resume_reading_for(PAUSE_UPSTREAM)
        if self.request_done:
            self._arm(WAIT_HEAD, self.plan.try_timeout)
        else:
            self._arm(WAIT_IDLE, self.plan.idle_timeout)  # the client is still sending its body

    def upstream_connect_failed(self, error):
        if not self.finished:
            self.outcome = OUTCOME_TIMEOUT if error.status == 504 else OUTCOME_CONNECT
            retry = self.plan.retry
            if retry is not None and retry.on_connect_failure and self._retry(True, 0.0):
                return
            self.fail(error)

    cdef void interim_response(self, UpstreamConnection conn, int status, bytes reason,
                               list headers, bint http11):
        """A 1xx other than 101 before the final answer. Relayed to HTTP/1.1
        clients (RFC 9110 15.2: 103 Early Hints, 102, unknown 1xx), dropped for
        HTTP/1.0 ones. A 100 Continue is never relayed: the gateway sends its own
        when the client asked (upstream_ready), and an unasked one means nothing
        to the client. The response_header deadline keeps running: interim
        answers don't extend the wait for the final one."""
        self.interim_count += 1
        if self.interim_count > MAX_INTERIM_RESPONSES:
            self.upstream_bad_response(conn, "upstream sent too many interim (1xx) responses")
            return
        if status == 100 or not self.http11:
            return
        cdef MessageInfo info = scan_response(headers, http11)
        if info.error_status:
            self.upstream_bad_response(conn, info.error_message)
            return
        self.client.send(build_response_head(
            status, reason, headers, info, self.plan.response_rewrite, self.request_id,
            F_NONE, True, False))

    cdef void response_head(self, UpstreamConnection conn, int status, bytes reason,
                            list headers, bint http11):
        self._cancel_timer()
        if status >= 500:
            self.outcome = OUTCOME_5XX
            retry = self.plan.retry
            if retry is not None and status in retry.statuses and self.retries < retry.attempts:
                if self._retry_status(conn, retry, headers):
                    return
        cdef MessageInfo info = scan_response(headers, http11)
        if info.event_stream and self.timed:
            self._stream_opened()
        if info.error_status:
            self.upstream_bad_response(conn, info.error_message)
            return
        self.upstream_keep_alive = info.keep_alive
        if status == 101:
            if not self.info.websocket:
                self.upstream_bad_response(conn, "upstream switched protocols unasked")
                return
            self.upgraded = True
            self.keep_alive = False
            self.response_started = True
            self.client.send(build_response_head(
                101, reason, headers, info, self.plan.response_rewrite, self.request_id,
                F_NONE, False, False))
            return
        if info.chunked:
            self.upstream_framing = F_CHUNKED
        elif info.content_length >= 0:
            self.upstream_framing = F_LENGTH
        else:
            self.upstream_framing = F_CLOSE
        cdef int framing
        if self.is_head or status == 204 or status == 304:
            framing = F_LENGTH if info.content_length >= 0 else F_NONE
            self.upstream_framing = F_NONE
        elif self.upstream_framing == F_LENGTH:
            framing = F_LENGTH
        else:
            framing = F_CHUNKED if self.http11 else F_CLOSE
        self.framing = framing
        if framing == F_CLOSE or self.client.gateway.draining or self.info.websocket:
            self.keep_alive = False
        self.response_started = True
        self.client.send(build_response_head(
            status, reason, headers, info, self.plan.response_rewrite, self.request_id,
            framing, self.keep_alive, not self.http11, self.response_extra))
        if framing == F_LENGTH and self.upstream_framing == F_LENGTH:
            # Bytes after this read skip the parser (UpstreamConnection._pass_body).
            conn.raw_remaining = info.content_length
        if self.upstream_framing == F_NONE:
            # No body follows (HEAD, 204, 304). llhttp can't be told a response
            # answers HEAD, so the connection gets a fresh parser for the next one.
            conn.reset_parser = True
            self.response_end(conn)
        elif self.plan.idle_timeout:
            self._arm(WAIT_IDLE, self.plan.idle_timeout)

    cdef void response_body(self, bytes body):
        self.bytes_out += len(body)
        if self.framing == F_CHUNKED:
            self.client.send3(b"%x\r\n" % len(body), body, CRLF)
        elif self.framing != F_NONE:
            self.client.send(body)
        self.client.last_activity = self.client.gateway.deadlines.now

    cdef void response_end(self, UpstreamConnection conn):
        if self.upgraded or self.response_done:
            return
        self._cancel_timer()
        conn.raw_remaining = -1
        if self.framing == F_CHUNKED:
            self.client.send(CHUNK_END)
        self.response_done = True
        self.upstream = None
        # Reusable only when both messages were framed and moved whole: the
        # request's body was forwarded to its end (request_done) and the
        # answer read to its end. An Upgrade request is never reused: its
        # body, if any, was not parsed (llhttp stops at the head).
        conn.exchange_done(self.upstream_keep_alive and self.request_done
                           and self.upstream_framing != F_CLOSE and not self.info.upgrade)
        self._release_endpoint()
        # An upstream that answered before the whole body arrived no longer
        # pushes back: the rest of the body is read and dropped.
        self.client.resume_reading_for(PAUSE_UPSTREAM)
        self._response_finished()

    cdef void upstream_upgraded(self, UpstreamConnection conn, bytes extra):
        """The upstream answered 101: the connection pair becomes a byte tunnel."""
        if self.upgraded and not self.finished:
            self._cancel_timer()
            self._mark_finished()
            self.upstream = None
            conn.exchange = None
            self._release_endpoint()
            if self.timed:
                self._account()
            self.client.start_tunnel(self, conn, extra)
        else:
            self.upstream_bad_response(conn, "unexpected protocol switch from upstream")

    cdef void upstream_lost(self, UpstreamConnection conn):
        """The upstream connection closed under this exchange."""
        self.upstream = None
        if self.finished:
            return
        if self.response_started:
            if self.upstream_framing == F_CLOSE:
                self.upstream_keep_alive = False
                self.response_end(conn)  # close-delimited body: EOF is its end
            else:
                self.abort()
            return
        if (conn.reused and not conn.got_bytes and not self.retried
                and self.sent is not None and self.method in IDEMPOTENT):
            # A pooled connection the upstream had already closed: replay the
            # request once on a fresh connection instead of answering 502.
            self._cancel_timer()
            self.retried = True
            self.pending_out = list(self.sent)
            self.pending_bytes = 0
            self.pool.acquire(self, True)
            return
        self.outcome = OUTCOME_RESET
        retry = self.plan.retry
        if retry is not None and retry.on_reset and self._retry(False, 0.0):
            return
        self.fail(ProxyError(502, "upstream_reset",
                             f"upstream {self.pool.endpoint.address} closed the connection "
                             "before a complete response head"))

    cdef void upstream_bad_response(self, UpstreamConnection conn, str message):
        self.outcome = OUTCOME_BAD_RESPONSE
        self._drop_upstream(conn)
        if self.response_started:
            self.abort()
        else:
            self.fail(ProxyError(502, "upstream_bad_response", message))

    # -- phase 11: retries -------------------------------------------------------
    cdef bint _retry_status(self, UpstreamConnection conn, object retry, list headers):
        """A retryable 5xx head: try again (the response is dropped with its
        connection) unless its Retry-After asks for longer than we wait."""
        cdef double wait = 0.0
        for name, value in headers:
            if len(name) == 11 and name.lower() == b"retry-after":
                wait = retry.parse_retry_after(value)
                break
        if wait < 0 or wait > retry.max_retry_after:
            return False
        if not self._may_retry(False):
            return False
        self._drop_upstream(conn)
        self._schedule_retry(False, wait)
        return True

    cdef bint _retry(self, bint nothing_sent, double wait):
        """After a failed try and before any response byte reached the client:
        schedule another try (True), or let the failure answer (False)."""
        if not self._may_retry(nothing_sent):
            return False
        self._schedule_retry(nothing_sent, wait)
        return True

    cdef bint _may_retry(self, bint nothing_sent):
        retry = self.plan.retry
        if self.response_started or self.finished or self.upgraded or self.retries >= retry.attempts:
            return False
        if not nothing_sent:
            # The request may have reached the upstream: only methods that may
            # run twice, and only if every byte sent so far can be sent again.
            if self.sent is None or self.method not in IDEMPOTENT:
                return False
        if not self.holds_retry:
            if not self.plan.cluster.retry_budget.acquire(self.plan.cluster.pools):
                return False
            self.holds_retry = True
        return True

    cdef void _schedule_retry(self, bint nothing_sent, double wait):
        self._cancel_timer()
        self._release_endpoint()  # reports the failed try's outcome to the cluster
        self.failed_pool = self.pool
        self.outcome = OUTCOME_OK
        self.retries += 1
        self.plan.cluster.retry_budget.sent += 1
        if not nothing_sent:
            self.pending_out = list(self.sent)
            self.pending_bytes = self.sent_bytes
        cdef double delay = self.plan.retry.backoff(self.retries)
        if wait > delay:
            delay = wait
        self.retry_timer = self.client.loop.call_later(delay, self._try_again)

    def _try_again(self):
        self.retry_timer = None
        if not self.finished:
            self._select_upstream()

    # -- timers ----------------------------------------------------------------
    cdef void _arm(self, int kind, double timeout):
        self.deadline_kind = kind
        self.client.gateway.deadlines.arm(self, timeout)

    cdef void _cancel_timer(self):
        if self.deadline_slot is not None:
            (<set>self.deadline_slot).discard(self)
            self.deadline_slot = None

    cdef void deadline_passed(self):
        if self.finished or self.response_done:
            return
        if self.deadline_kind == WAIT_HEAD:
            if self.response_started:
                return
            self.outcome = OUTCOME_TIMEOUT
            self._drop_upstream(self.upstream)
            retry = self.plan.retry
            if retry is not None and retry.on_timeout and self._retry(False, 0.0):
                return
            self.fail(ProxyError(504, "upstream_timeout",
                                 f"no response head from {self.pool.endpoint.address} within "
                                 f"{self.plan.try_timeout:g}s"))
            return
        # Mid-body: abort when neither side moved a byte for `idle` seconds.
        cdef double idle = self.plan.idle_timeout
        cdef double quiet = self.client.gateway.deadlines.now - self.client.last_activity
        if quiet < idle:
            self._arm(WAIT_IDLE, idle - quiet)
            return
        self._drop_upstream(self.upstream)
        self.abort()

    # -- helpers ---------------------------------------------------------------
    cdef inline void _log_sent(self, bytes data):
        if self.sent is not None:
            self.sent.append(data)
            self.sent_bytes += len(data)
            if self.sent_bytes > REPLAY_LIMIT:
                self.sent = None

    cdef void _send_upstream(self, bytes data):
        self._log_sent(data)
        if self.upstream is not None:
            self.upstream.transport.write(data)
        else:
            self.pending_out.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes > CONNECT_BUFFER_LIMIT:
                self.client.pause_reading_for(PAUSE_UPSTREAM)

    cdef void _send_upstream3(self, bytes a, bytes b, bytes c):
        self._log_sent(a)
        self._log_sent(b)
        self._log_sent(c)
        if self.upstream is not None:
            self.upstream.transport.writelines((a, b, c))
        else:
            self.pending_out.extend((a, b, c))
            self.pending_bytes += len(a) + len(b) + len(c)
            if self.pending_bytes > CONNECT_BUFFER_LIMIT:
                self.client.pause_reading_for(PAUSE_UPSTREAM)

    cdef void _queue_out(self, bytes data):
        self.pending_out.append(data)
        self._log_sent(data)

    cdef void _drop_upstream(self, UpstreamConnection conn):
        self._cancel_timer()
        if conn is not None:
            conn.exchange = None
            conn.transport.close()
        self.upstream = None
        self._release_endpoint()
        self.client.resume_reading_for(PAUSE_UPSTREAM)

    cdef void _release_endpoint(self):
        """Stop counting this exchange as in flight on its endpoint (once), and
        tell the cluster how it went when the cluster watches outcomes."""
        if self.counted:
            self.counted = False
            self.pool.active -= 1
            if self.timed:
                self._upstream_done()
            cluster = self.plan.cluster
            if cluster.watches_outcomes:
                cluster.report(self.pool, self.outcome)

    cdef void _write_error(self, int status, str code, str message, bytes extra=b""):
        self.status = status
        self.client.send(error_reply(status, code, message, self.request_id,
                                     self.keep_alive, extra))

    cdef void fail(self, error):
        """End the exchange with a local error reply (nothing sent yet)."""
        self._cancel_timer()
        if self.upstream is not None:
            self._drop_upstream(self.upstream)
        self.response_done = True
        if not self.request_done:
            # The rest of the request body can't be framed away safely: close after.
            self.keep_alive = False
        self._write_error(error.status, error.code, error.message, error.headers)
        self._response_finished()

    cdef void abort(self):
        """The response is partly sent and can't be completed: close the client."""
        self._cancel_timer()
        self.response_done = True
        self._mark_finished()
        self._release_endpoint()
        if self.timed:
            self._account()
        self.client.abort()

    cdef void _response_finished(self):
        self.response_done = True
        self._maybe_finish()

    cdef void _maybe_finish(self):
        if self.response_done and (self.request_done or not self.keep_alive) and not self.finished:
            self._mark_finished()
            self._release_endpoint()
            if self.timed:
                self._account()
            self.client.exchange_finished(self)

    # -- observability -----------------------------------------------------------
    cdef void _upstream_done(self):
        """One use of an endpoint ended: its time and outcome."""
        cdef long long spent = now_ns() - self.up_t0 if self.up_t0 else 0
        self.up_t0 = 0
        self.upstream_ns += spent
        cdef WorkerMetrics metrics = self.client.gateway.metrics
        if metrics is not None:
            metrics.upstream_done(self.pool.metrics_index, self.plan.index, self.outcome, spent)

    cdef void _stream_opened(self):
        cdef WorkerMetrics metrics = self.client.gateway.metrics
        if metrics is not None and not self.event_stream:
            self.event_stream = True
            metrics.stream_opened(STREAM_SSE)

    cdef void _account(self):
        """The exchange is over (once): metrics, then the access log."""
        if self.accounted:
            return
        self.accounted = True
        self.duration_ns = now_ns() - self.started_ns
        cdef GatewayCore gateway = self.client.gateway
        cdef WorkerMetrics metrics = gateway.metrics
        if metrics is not None:
            metrics.request_done(self.plan.index if self.plan is not None else -1, self.method,
                                 self.status, self.duration_ns, self.upstream_ns, self.body_bytes,
                                 self.bytes_out)
            if self.event_stream:
                metrics.stream_closed(STREAM_SSE)
        if gateway.access_log is not None:
            try:
                if isinstance(gateway.access_log, AccessLineBuffer):  # the JSON log alone: no Python call
                    (<AccessLineBuffer>gateway.access_log).record(
                        self.method, self.target, self.request_id, self.client.peer_ip, self.info, self.plan,
                        self.pool, self.status, self.body_bytes, self.bytes_out, self.duration_ns,
                        self.upstream_ns, self.retries, self.rate_limit, self.request_headers)
                else:
                    gateway.access_log.log(self)
            except Exception as err:  # a logging bug must not break the request path
                gateway.log_internal_error("access log", err)

    @property
    def endpoint(self):
        """The address of the endpoint last used, or None."""
        return self.pool.endpoint.address if self.pool is not None else None


# ---------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------

cdef class ClientConnection(Timed):
    cdef public GatewayCore gateway
    cdef public object loop
    cdef public object transport
    cdef object parser
    cdef public bytes peer_ip
    cdef bytes url
    cdef list headers
    cdef Py_ssize_t head_bytes
    cdef Py_ssize_t head_seen     # bytes received while a head was incomplete
    cdef bint in_head
    cdef Exchange current         # the exchange whose response is being written
    cdef object pending           # deque of exchanges waiting their turn
    cdef Exchange parsing         # the exchange whose request body is arriving
    cdef Exchange upgrading       # the WebSocket exchange whose head ended the HTTP stream
    cdef int paused
    cdef public bint write_paused
    cdef int corked
    cdef list out
    cdef public bint closed
    cdef public double last_activity
    cdef object linger_timer
    cdef public object tunnel
    cdef bint lingering
    cdef bint advancing

    def __init__(self, GatewayCore gateway):
        self.gateway = gateway
        self.loop = gateway.loop
        self.parser = HttpRequestParser(self)
        self.peer_ip = b"unknown"
        self.url = b""
        self.headers = []
        self.pending = collections.deque()
        self.out = []

    # -- asyncio protocol -----------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0].encode()
        self.gateway.connections.add(self)
        if self.gateway.metrics is not None:
            self.gateway.metrics.add(G_CONNECTIONS_OPEN, 1)
            self.gateway.metrics.add(G_CONNECTIONS_TOTAL, 1)
        self.last_activity = self.gateway.deadlines.now
        self.gateway.deadlines.arm(self, self.gateway.client_header_timeout)

    def data_received(self, data):
        self.last_activity = self.gateway.deadlines.now
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        if self.lingering or self.parser is None:
            return
        self.corked += 1
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            self._upgrade_requested(data[upgrade.args[0]:])
        except HttpParserCallbackError as err:
            cause = err.__context__
            if isinstance(cause, StopParsing):
                pass
            elif isinstance(cause, RequestRejected):
                self._reject(cause.status, cause.code, cause.message)
            else:
                self.gateway.log_internal_error("request callback", cause or err)
                self._reject(500, "internal_error", "internal error while reading the request")
        except HttpParserError as err:
            self._reject(400, "bad_request", f"malformed request: {err}")
        else:
            if self.in_head:
                # httptools buffers a header line until it ends: bound that here.
                self.head_seen += len(data)
                if self.head_seen > self.gateway.max_head_bytes + HEAD_SLACK:
                    self._reject(431, "headers_too_large", "request head too large")
        finally:
            self.uncork()

    def eof_received(self):
        # Like nginx (proxy_ignore_client_abort off): a client that closes its
        # side has gone away; in-flight exchanges are abandoned at once rather
        # than streamed into a socket nobody reads.
        return False

    def connection_lost(self, exc):
        self.closed = True
        self.gateway.connections.discard(self)
        if self.gateway.metrics is not None:
            self.gateway.metrics.add(G_CONNECTIONS_OPEN, -1)
        if self.linger_timer is not None:
            self.linger_timer.cancel()
            self.linger_timer = None
        self.gateway.deadlines.disarm(self)
        if self.tunnel is not None:
            self.tunnel.client_lost()
        if self.current is not None:
            self.current.client_lost()
            self.current = None
        for ex in self.pending:
            (<Exchange>ex).client_lost()
        self.pending.clear()
        self.parsing = None
        self.gateway.connection_closed()

    def pause_writing(self):
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.client_write_paused()
        elif self.current is not None:
            self.current.client_write_paused()

    def resume_writing(self):
        self.write_paused = False
        if self.tunnel is not None:
            self.tunnel.client_write_resumed()
        elif self.current is not None:
            self.current.client_write_resumed()

    # -- httptools callbacks (phase 1: request headers) -----------------------
    def on_message_begin(self):
        if self.parser is None:
            raise StopParsing()  # a reply that ends the connection is under way
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.head_seen = 0
        self.in_head = True
        if self.current is None:
            self.gateway.deadlines.arm(self, self.gateway.client_header_timeout)

    def on_url(self, bytes url):
        self.url += url
        if len(self.url) > self.gateway.max_uri_bytes:
            raise RequestRejected(414, "uri_too_long",
                                  f"request target longer than {self.gateway.max_uri_bytes} bytes")

    def on_header(self, bytes name, bytes value):
        cdef list headers = self.headers
        headers.append((name, value))
        self.head_bytes += len(name) + len(value) + 4
        if len(headers) > self.gateway.max_header_count:
            raise RequestRejected(431, "headers_too_large",
                                  f"more than {self.gateway.max_header_count} header fields")
        if self.head_bytes > self.gateway.max_header_bytes:
            raise RequestRejected(431, "headers_too_large",
                                  f"header fields larger than {self.gateway.max_header_bytes} bytes")

    def on_headers_complete(self):
        self.in_head = False
        self.head_seen = 0
        cdef GatewayCore gateway = self.gateway
        parser = self.parser
        version = parser.get_http_version()
        cdef bint http11 = version == "1.1"
        if not http11 and version != "1.0":
            # llhttp reads "GET /x" without a version as HTTP/0.9 and then goes
            # on parsing headers and a body: a gateway doesn't speak 0.9.
            if version == "0.9":
                raise RequestRejected(400, "bad_request", "request line without an HTTP version")
            raise RequestRejected(505, "http_version_not_supported",
                                  f"HTTP/{version} is not supported (HTTP/1.0 and 1.1 are)")
        cdef bytes method = parser.get_method()
        cdef MessageInfo info = scan_request(self.headers, http11)
        if parser.should_upgrade() and (info.chunked or info.content_length > 0):
            # llhttp stops at an Upgrade (or CONNECT) head and never parses a
            # body: forwarding the head would leave the upstream waiting for
            # bytes that then come from the next request on the connection.
            raise RequestRejected(400, "bad_request", "an Upgrade request with a body is not supported")
        cdef bytes request_id = info.request_id
        if request_id is None:
            request_id = gateway.request_ids.next()
        cdef Exchange ex = Exchange(self, method, info, request_id,
                                    info.keep_alive and not gateway.draining, http11)
        ex.request_headers = self.headers
        ex.target = self.url
        self.parsing = ex
        if info.upgrade:
            self.upgrading = ex
        if info.error_status:
            ex.reply_locally(info.error_status, info.error_code, info.error_message, False)
        else:
            self._route(ex, method, info)
        self._enqueue(ex)

    def on_body(self, bytes body):
        cdef Exchange ex = self.parsing
        if ex is not None:
            if ex.body_bytes + len(body) > self.gateway.max_body_bytes:
                # Raised to stop llhttp here: nothing after this byte is parsed.
                raise RequestRejected(413, "body_too_large",
                                      f"request body larger than {self.gateway.max_body_bytes} bytes")
            ex.request_body(body)

    def on_message_complete(self):
        cdef Exchange ex = self.parsing
        if ex is not None:
            self.parsing = None
            ex.request_end()

    # -- phase 2: route -------------------------------------------------------
    cdef void _route(self, Exchange ex, bytes method, MessageInfo info):
        cdef GatewayCore gateway = self.gateway
        cdef bytes url = self.url
        cdef bytes path, query, host
        cdef Py_ssize_t q
        if url[:1] == b"/":
            q = url.find(b"?")
            if q < 0:
                path, query = url, b""
            else:
                path, query = url[:q], url[q:]
            host = info.host if info.host is not None else b""
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                ex.reply_locally(400, "bad_request", "invalid request target", False)
                return
            if parsed.path is None or parsed.host is None:
                ex.reply_locally(400, "bad_request", "unsupported request target form", False)
                return
            path = parsed.path
            query = b"?" + parsed.query if parsed.query else b""
            host = parsed.host  # absolute-form: the URI's authority wins over Host
        found = gateway.route_match(host, method, path)
        if found is None:
            allowed = gateway.allowed_methods(host, path)
            if allowed:
                ex.reply_locally(405, "method_not_allowed",
                                 f"{method.decode('latin-1')} is not allowed on {path.decode('latin-1')}",
                                 -1, b"Allow: " + ", ".join(allowed).encode() + b"\r\n")
            else:
                ex.reply_locally(404, "no_route", f"no route for {path.decode('latin-1')}")
            return
        route, params = found
        cdef RoutePlan plan = <RoutePlan>gateway.plans[route.index]
        ex.plan = plan  # local replies from here on count under the route
        if info.content_length > gateway.max_body_bytes:
            ex.reply_locally(413, "body_too_large",
                             f"request body larger than {gateway.max_body_bytes} bytes", False)
            return
        if plan.limiter is not None:  # phase 4: limit
            decision = plan.limiter.check(self.peer_ip, self.headers)
            ex.rate_limit = 1 if decision.allowed else 2
            if gateway.metrics is not None:
                gateway.metrics.rate_limited(plan.index, decision.allowed)
            if not decision.allowed:
                ex.reply_locally(decision.status, "rate_limited", decision.message, -1,
                                 decision.headers)
                return
            ex.response_extra = decision.headers
        if info.upgrade and not info.websocket:
            # Only WebSocket upgrades are tunnelled; others are served as plain
            # requests on a connection that closes afterwards (one with a body
            # was refused in on_headers_complete).
            ex.keep_alive = False
        cdef bytes target = path if plan.rewrite is None else plan.rewrite(path, params)
        if query:
            target += query
        ex.proxy_to(plan, build_request_head(method, target, self.headers, info,
                                             plan.request_rewrite, self.peer_ip, ex.request_id,
                                             plan.default_host, gateway.trace))

    # -- the queue of exchanges -----------------------------------------------
    cdef void _enqueue(self, Exchange ex):
        self.pending.append(ex)
        if self.current is None:
            self._watch_busy()
            if not self.advancing:
                self._advance()
        else:
            self.pause_reading_for(PAUSE_PIPELINE)

    cdef void exchange_finished(self, Exchange ex):
        """`ex` has written its whole response: close, or start the next one."""
        if self.current is not ex:
            return
        self.current = None
        if not ex.keep_alive:
            self._close_after_reply(ex)
        elif not self.advancing:  # else the loop in _advance picks the next one
            self._advance()

    cdef void _advance(self):
        """Start queued exchanges in order; a loop, not recursion, because local
        replies finish synchronously and a burst of them must not nest."""
        cdef Exchange ex
        pending = self.pending
        self.advancing = True
        try:
            while self.current is None and pending and not self.closed:
                ex = pending.popleft()
                self.current = ex
                ex.start()
        finally:
            self.advancing = False
        if self.current is None and not self.closed:
            if self.gateway.draining:
                # Idle from now: the drain closes it after its grace period,
                # not at once (the client may already be sending on it).
                self.last_activity = self.gateway.deadlines.now
            self.resume_reading_for(PAUSE_PIPELINE)
            self.gateway.deadlines.arm(self, self.gateway.keepalive_timeout)

    cdef void _close_after_reply(self, Exchange ex):
        for waiting in self.pending:
            (<Exchange>waiting).client_lost()
        self.pending.clear()
        self.parser = None
        if ex.request_done:
            self.flush()
            self.transport.close()
        else:
            self._linger()

    cdef void _reject(self, int status, str code, str message):
        """A request that can't be parsed any further: reply in turn, then close."""
        if self.parser is None:
            return
        self.parser = None
        cdef Exchange ex = self.parsing
        if ex is not None and ex is self.current and ex.response_started:
            ex.abort()
            return
        self.pause_reading_for(PAUSE_CLOSING)
        if ex is not None:
            self.parsing = None
            if ex is self.current:
                ex.client_lost()  # drop its upstream side; the reply replaces it
                self.current = None
            elif ex in self.pending:
                self.pending.remove(ex)
                ex.client_lost()
        cdef Exchange reply = Exchange(self, b"GET", None, self.gateway.request_ids.next(), False, True)
        reply.reply_locally(status, code, message, False)
        self._enqueue(reply)

    # -- WebSocket ------------------------------------------------------------
    cdef void _upgrade_requested(self, bytes rest):
        """llhttp stopped after an Upgrade request head: what follows isn't HTTP,
        so nothing more is parsed on this connection."""
        cdef Exchange ex = self.upgrading
        self.upgrading = None
        self.parser = None
        self.pause_reading_for(PAUSE_CLOSING)  # hold client bytes until the upstream answers
        if ex is not None and ex.info.websocket and ex.local_reply is None and rest:
            ex.early_tunnel_data.append(rest)

    cdef void start_tunnel(self, Exchange ex, UpstreamConnection upstream, bytes extra):
        from fastgw.proxy.tunnel import Tunnel
        self.current = None
        self._watch_busy()
        self.flush()  # the 101 head goes out before any tunnelled byte
        self.tunnel = Tunnel(self, upstream, ex.plan.websocket_idle_timeout)
        self.tunnel.start(extra, ex.early_tunnel_data)
        self.paused = 0
        self.transport.resume_reading()

    # -- flow control -----------------------------------------------------
    cdef void pause_reading_for(self, int reason):
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    cdef void resume_reading_for(self, int reason):
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    # -- writing ------------------------------------------------------------
    cdef void uncork(self):
        self.corked -= 1
        if not self.corked:
            self.flush()

    cpdef flush(self):
        cdef list out = self.out
        if out and not self.closed:
            self.out = []
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writelines(out)

    cdef void send(self, bytes data):
        if self.corked:
            self.out.append(data)
        elif not self.closed:
            self.transport.write(data)

    cdef void send3(self, bytes a, bytes b, bytes c):
        if self.corked:
            self.out.append(a)
            self.out.append(b)
            self.out.append(c)
        elif not self.closed:
            self.transport.writelines((a, b, c))

    cdef void abort(self):
        """Close now: a response was cut short (the client sees a short body)."""
        self.flush()
        self.parser = None
        if not self.closed:
            self.transport.close()

    cdef void _linger(self):
        self.flush()
        self.lingering = True
        self.resume_reading_for(PAUSE_CLOSING | PAUSE_PIPELINE | PAUSE_UPSTREAM)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._watch_busy()
        self.linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    # -- timeouts: idle keep-alive and slow request heads ----------------------
    cdef void _watch_busy(self):
        """An exchange is in flight: it keeps its own deadlines."""
        if self.deadline_slot is not None:
            (<set>self.deadline_slot).discard(self)
            self.deadline_slot = None

    cdef void deadline_passed(self):
        if self.closed or self.lingering or self.current is not None or self.tunnel is not None:
            return
        if self.in_head:
            # A head that started but never finished: tell the client why.
            self.parser = None
            self.transport.write(error_reply(408, "request_timeout",
                                             "request head not received in time",
                                             self.gateway.request_ids.next(), False))
        self.transport.close()

    def close_if_idle(self):
        """Drain: idle keep-alive connections close now, busy ones after their reply."""
        if self.current is None and not self.pending and self.tunnel is None and not self.in_head:
            self.transport.close()
