# Included by proxy.pyx (one extension module: these classes call each other
# as C, both ways). The upstream side: endpoint pools and upstream connections.

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
        # The pool is the cluster's, the timeout the route's: dialled on its behalf.
        cdef double timeout = exchange.plan.connect_timeout
        try:
            transport, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: UpstreamConnection(self),
                                            endpoint.host, endpoint.port),
                timeout)
        except TimeoutError:
            exchange.upstream_connect_failed(ProxyError(
                504, "upstream_timeout",
                f"connect to {endpoint.address} timed out after {timeout:g}s"))
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
        if len(self.idle) >= self.max_idle:  # the caller saw it open
            conn.transport.close()
            return
        # The C clock (CLOCK_MONOTONIC, as loop.time() that sweep() is given):
        # a loop.time() method call per request is measurable.
        conn.idle_since = now_ns() * 1e-9
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
        cdef MessageInfo info
        if self.exchange is not None:
            status = parser.get_status_code()
            info = scan_response(self.headers, True)
            if http_version(parser, info) != 11:
                info = scan_response(self.headers, False)
            if 100 <= status < 200 and status != 101:
                # Interim answer (RFC 9110 15.2): llhttp ends the message at its
                # head and parses the final answer as the next message.
                self.interim = True
                self.exchange.interim_response(self, status, self.reason, self.headers, info)
                return
            self.exchange.status = status
            self.exchange.response_head(self, status, self.reason, self.headers, info)

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
