# Included by proxy.pyx (one extension module: these classes call each other
# as C, both ways). The client side: one client connection, its parser and queue.

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
    cdef Exchange upstream_corked # the exchange whose upstream bytes wait for the end of this read
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
            if "PRI/Upgrade" in str(err):
                # llhttp's HPE_PAUSED_H2_UPGRADE: an HTTP/2 connection preface
                # ("PRI * HTTP/2.0", prior knowledge). Say so, in HTTP/1.1 words
                # the client's developer can read, rather than a parser internal.
                self._reject(505, "http2_not_supported",
                             "HTTP/2 is not supported on this listener; use HTTP/1.1")
            else:
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
        # Scanned as HTTP/1.1 first: that scan also tells http_version() whether
        # the cheap answer holds; another version is scanned again.
        cdef MessageInfo info = scan_request(self.headers, True)
        cdef int version = http_version(parser, info)
        # llhttp stops after a head with Upgrade + Connection: upgrade (or a
        # CONNECT, refused below): without a Connection or Proxy-Connection
        # header its flag can't be set, so the method call is skipped.
        cdef bint llhttp_upgrade = info.connection_seen and parser.should_upgrade()
        cdef bint http11 = version == 11
        if not http11:
            if version == 9:
                # llhttp reads "GET /x" without a version as HTTP/0.9 and then goes
                # on parsing headers and a body: a gateway doesn't speak 0.9.
                raise RequestRejected(400, "bad_request", "request line without an HTTP version")
            if version != 10:
                raise RequestRejected(505, "http_version_not_supported",
                                      f"HTTP/{parser.get_http_version()} is not supported (HTTP/1.0 and 1.1 are)")
            info = scan_request(self.headers, False)
        cdef bytes method = parser.get_method()
        if method == b"CONNECT":
            # A forward proxy's tunnel request: a reverse proxy has nothing to
            # connect it to (and llhttp would stop parsing after its head).
            raise RequestRejected(501, "not_implemented", "CONNECT is not supported by this gateway")
        if llhttp_upgrade and (info.chunked or info.content_length > 0):
            # llhttp stops at an Upgrade (or CONNECT) head and never parses a
            # body: forwarding the head would leave the upstream waiting for
            # bytes that then come from the next request on the connection.
            raise RequestRejected(400, "bad_request", "an Upgrade request with a body is not supported")
        cdef bytes request_id = info.request_id
        if request_id is None:
            request_id = gateway.request_ids.next()
        cdef Exchange ex = Exchange.new(self, method, info, request_id,
                                        info.keep_alive and not gateway.draining, http11)
        ex.request_headers = self.headers
        ex.target = self.url
        self.parsing = ex
        if llhttp_upgrade:  # llhttp stops after this head (see _upgrade_requested)
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
        ex.path = path
        ex.query = query
        ex.params = params
        if info.content_length > gateway.max_body_bytes:
            ex.reply_locally(413, "body_too_large",
                             f"request body larger than {gateway.max_body_bytes} bytes", False)
            return
        if info.upgrade and not info.websocket:
            # Only WebSocket upgrades are tunnelled; others are served as plain
            # requests on a connection that closes afterwards (one with a body
            # was refused in on_headers_complete).
            ex.keep_alive = False
        cdef bytes target = path if plan.rewrite is None else plan.rewrite(path, params)
        if query:
            target += query
        ex.proxy_to(plan, target)

    # -- the queue of exchanges -----------------------------------------------
    cdef void _enqueue(self, Exchange ex):
        if self.current is None and not self.advancing and not self.closed and not self.pending:
            # The usual case, one request at a time: no trip through the deque.
            self._watch_busy()
            self._advance(ex)
            return
        self.pending.append(ex)
        if self.current is None:
            self._watch_busy()
            if not self.advancing:
                self._advance(None)
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
            self._advance(None)

    cdef void _advance(self, Exchange first):
        """Start `first` (if given: it was never queued), then queued exchanges
        in order; a loop, not recursion, because local replies finish
        synchronously and a burst of them must not nest."""
        cdef Exchange ex
        pending = self.pending
        self.advancing = True
        try:
            if first is not None:
                self.current = first
                first.start()
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
        cdef Exchange reply = Exchange.new(self, b"GET", None, self.gateway.request_ids.next(), False, True)
        reply.reply_locally(status, code, message, False)
        self._enqueue(reply)

    # -- WebSocket ------------------------------------------------------------
    cdef void _upgrade_requested(self, bytes rest):
        """llhttp stopped after an Upgrade request head: what follows isn't HTTP,
        so nothing more is parsed on this connection."""
        cdef Exchange ex = self.upgrading
        self.upgrading = None
        self.parser = None
        if ex is not None:
            ex.keep_alive = False  # nothing more is parsed here: close after the answer
        self.pause_reading_for(PAUSE_CLOSING)  # hold client bytes until the upstream answers
        if ex is not None and ex.info.websocket and ex.local_reply is None and rest:
            if ex.early_tunnel_data is None:
                ex.early_tunnel_data = []
            ex.early_tunnel_data.append(rest)

    cdef void start_tunnel(self, Exchange ex, UpstreamConnection upstream, bytes extra):
        from fastgw._native.tunnel import Tunnel
        self.current = None
        self._watch_busy()
        self.flush()  # the 101 head goes out before any tunnelled byte
        self.tunnel = Tunnel(self, upstream, ex.plan.websocket_idle_timeout)
        self.tunnel.start(extra, ex.early_tunnel_data or [])
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
        cdef Exchange ex
        self.corked -= 1
        if not self.corked:
            ex = self.upstream_corked
            if ex is not None:
                self.upstream_corked = None
                ex.flush_upstream()
            self.flush()

    cdef void cork_upstream(self, Exchange ex):
        """`ex` queued bytes for its upstream while corked: write them at uncork."""
        if self.upstream_corked is not ex:
            if self.upstream_corked is not None:
                self.upstream_corked.flush_upstream()  # keep one at a time, in order
            self.upstream_corked = ex

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
        cancel_deadline(self)

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
