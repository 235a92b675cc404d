"""The client side of the gateway: one `ClientConnection` per accepted socket.

Phases run here, in order, when a request head is complete:
  1. request headers: limits counted while parsing (414 / 431), framing
     checks in `scan_request` (400 / 501), request id;
  2. route: host + method + path in the compiled trie (404 / 405), body size
     limit against Content-Length (413);
  6. upstream request: the head is written by the native `build_request_head`.
Later phases (upstream select, connect, body, response) belong to the
`Exchange`. Requests are answered in order: while one exchange is in flight,
pipelined requests wait in `pending` and reading from the client is paused.
"""
from __future__ import annotations

import asyncio
import collections

import httptools

from fastgw._native.headers import build_request_head, scan_request
from fastgw.proxy.errors import error_reply
from fastgw.proxy.exchange import Exchange
from fastgw.proxy.tunnel import Tunnel

# Why reading from the client is paused (a bit each; reading resumes at 0).
PAUSE_PIPELINE = 1    # requests are queued behind the one in flight
PAUSE_UPSTREAM = 2    # the upstream isn't taking the body fast enough
PAUSE_CLOSING = 4     # a reply that ends the connection is queued

# A request head that keeps arriving without ending is cut off at this many
# bytes past the configured limit (the exact limit is checked per header).
HEAD_SLACK = 64 * 1024
# Lingering close: after an error reply that ends the connection, keep reading
# (and dropping) what the client still sends for this long, so the client
# reads the reply instead of a reset.
LINGER_SECONDS = 2.0


class RequestRejected(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "gateway", "loop", "transport", "parser", "peer_ip", "url", "headers",
        "head_bytes", "head_seen", "in_head", "current", "pending", "parsing",
        "paused", "write_paused", "corked", "out", "closed", "last_activity",
        "deadline_slot", "timer", "tunnel", "lingering", "advancing", "upgrading",
    )

    def __init__(self, gateway):
        self.gateway = gateway
        self.loop = gateway.loop
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer_ip = b"unknown"
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.head_seen = 0        # bytes received while a head was incomplete
        self.in_head = False
        self.current = None       # the exchange whose response is being written
        self.pending = collections.deque()
        self.parsing = None       # the exchange whose request body is arriving
        self.paused = 0
        self.write_paused = False
        self.corked = 0
        self.out = []
        self.closed = False
        self.last_activity = 0.0
        self.deadline_slot = None  # armed in the worker's Deadlines wheel when idle
        self.timer = None          # lingering close only
        self.tunnel = None
        self.lingering = False
        self.advancing = False
        self.upgrading = None     # the WebSocket exchange whose head ended the HTTP stream

    # -- asyncio.Protocol --------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0].encode()
        self.gateway.connections.add(self)
        self.last_activity = self.gateway.deadlines.now
        self._watch_idle(self.gateway.settings.client_header_timeout)

    def data_received(self, data):
        self.last_activity = self.gateway.deadlines.now
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        if self.lingering or self.parser is None:
            return
        self.cork()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade_requested(data[upgrade.args[0]:])
        except httptools.HttpParserCallbackError as err:
            cause = err.__context__
            if isinstance(cause, RequestRejected):
                self._reject(cause.status, cause.code, cause.message)
            else:
                self.gateway.log_internal_error("request callback", cause or err)
                self._reject(500, "internal_error", "internal error while reading the request")
        except httptools.HttpParserError as err:
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
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.gateway.deadlines.disarm(self)
        if self.tunnel is not None:
            self.tunnel.client_lost()
        if self.current is not None:
            self.current.client_lost()
            self.current = None
        for ex in self.pending:
            ex.client_lost()
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
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.head_seen = 0
        self.in_head = True
        if self.current is None:
            self._watch_idle(self.gateway.settings.client_header_timeout)

    def on_url(self, url):
        self.url += url
        if len(self.url) > self.gateway.limits.max_uri_bytes:
            raise RequestRejected(414, "uri_too_long",
                                  f"request target longer than {self.gateway.limits.max_uri_bytes} bytes")

    def on_header(self, name, value):
        headers = self.headers
        headers.append((name, value))
        self.head_bytes += len(name) + len(value) + 4
        limits = self.gateway.limits
        if len(headers) > limits.max_header_count:
            raise RequestRejected(431, "headers_too_large",
                                  f"more than {limits.max_header_count} header fields")
        if self.head_bytes > limits.max_header_bytes:
            raise RequestRejected(431, "headers_too_large",
                                  f"header fields larger than {limits.max_header_bytes} bytes")

    def on_headers_complete(self):
        self.in_head = False
        self.head_seen = 0
        gateway = self.gateway
        parser = self.parser
        http11 = parser.get_http_version() == "1.1"
        method = parser.get_method()
        info = scan_request(self.headers, http11)
        request_id = info.request_id or gateway.request_ids.next()
        ex = Exchange(self, method, info, request_id, info.keep_alive and not gateway.draining, http11)
        self.parsing = ex
        if info.upgrade:
            self.upgrading = ex
        if info.error_status:
            ex.reply_locally(info.error_status, info.error_code, info.error_message, keep_alive=False)
        else:
            self._route(ex, method, info)
        self._enqueue(ex)

    def on_body(self, body):
        ex = self.parsing
        if ex is not None:
            ex.request_body(body)

    def on_message_complete(self):
        ex = self.parsing
        if ex is not None:
            self.parsing = None
            ex.request_end()

    # -- phase 2: route -------------------------------------------------------
    def _route(self, ex, method, info):
        gateway = self.gateway
        url = self.url
        if url[:1] == b"/":
            q = url.find(b"?")
            path, query = (url, b"") if q < 0 else (url[:q], url[q:])
            host = info.host or b""
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                ex.reply_locally(400, "bad_request", "invalid request target", keep_alive=False)
                return
            if parsed.path is None or parsed.host is None:
                ex.reply_locally(400, "bad_request", "unsupported request target form",
                                 keep_alive=False)
                return
            path = parsed.path
            query = b"?" + parsed.query if parsed.query else b""
            host = parsed.host  # absolute-form: the URI's authority wins over Host
        found = gateway.routes.match(host, method, path)
        if found is None:
            allowed = gateway.routes.allowed_methods(host, path)
            if allowed:
                ex.reply_locally(405, "method_not_allowed",
                                 f"{method.decode('latin-1')} is not allowed on {path.decode('latin-1')}",
                                 extra_headers=b"Allow: " + ", ".join(allowed).encode() + b"\r\n")
            else:
                ex.reply_locally(404, "no_route",
                                 f"no route for {path.decode('latin-1')}")
            return
        route, params = found
        plan = gateway.plans[route.index]
        if info.content_length > gateway.max_body_bytes:
            ex.reply_locally(413, "body_too_large",
                             f"request body larger than {gateway.max_body_bytes} bytes",
                             keep_alive=False)
            return
        if info.upgrade and not info.websocket:
            # Only WebSocket upgrades are tunnelled; others are served as plain
            # requests on a connection that closes afterwards. llhttp stops at
            # an Upgrade head, so such a request can't carry a body.
            if info.chunked or info.content_length > 0:
                ex.reply_locally(400, "bad_request",
                                 "a non-WebSocket Upgrade request with a body is not supported",
                                 keep_alive=False)
                return
            ex.keep_alive = False
        target = plan.upstream_path(path, params) + query
        ex.proxy_to(plan, build_request_head(method, target, self.headers, info,
                                             plan.request_rewrite, self.peer_ip, ex.request_id,
                                             plan.default_host))

    # -- the queue of exchanges -----------------------------------------------
    def _enqueue(self, ex):
        self.pending.append(ex)
        if self.current is None:
            self._watch_busy()
            if not self.advancing:
                self._advance()
        else:
            self._pause(PAUSE_PIPELINE)

    def exchange_finished(self, ex):
        """`ex` has written its whole response: close, or start the next one."""
        if self.current is not ex:
            return
        self.current = None
        if not ex.keep_alive:
            self._close_after_reply(ex)
        elif not self.advancing:  # else the loop in _advance picks the next one
            self._advance()

    def _advance(self):
        """Start queued exchanges in order; a loop, not recursion, because local
        replies finish synchronously and a burst of them must not nest."""
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
                self.flush()
                self.transport.close()
                return
            self._resume(PAUSE_PIPELINE)
            self._watch_idle(self.gateway.settings.keepalive_timeout)

    def _close_after_reply(self, ex):
        for waiting in self.pending:
            waiting.client_lost()
        self.pending.clear()
        self.parser = None
        if ex.request_done:
            self.flush()
            self.transport.close()
        else:
            self._linger()

    def _reject(self, status, code, message):
        """A request that can't be parsed any further: reply in turn, then close."""
        parser, self.parser = self.parser, None
        if parser is None:
            return
        ex = self.parsing
        if ex is not None and ex is self.current and ex.response_started:
            ex.abort()
            return
        self._pause(PAUSE_CLOSING)
        if ex is not None:
            self.parsing = None
            if ex is self.current:
                ex.client_lost()  # drop its upstream side; the reply replaces it
                self.current = None
            elif ex in self.pending:
                self.pending.remove(ex)
                ex.client_lost()
        reply = Exchange(self, b"GET", None, self.gateway.request_ids.next(), False, True)
        reply.reply_locally(status, code, message, keep_alive=False)
        self._enqueue(reply)

    def body_too_large(self, ex):
        self._reject(413, "body_too_large",
                     f"request body larger than {self.gateway.max_body_bytes} bytes")

    # -- WebSocket ------------------------------------------------------------
    def _upgrade_requested(self, rest):
        """llhttp stopped after an Upgrade request head: what follows isn't HTTP,
        so nothing more is parsed on this connection."""
        ex, self.upgrading = self.upgrading, None
        self.parser = None
        self._pause(PAUSE_CLOSING)  # hold client bytes until the upstream answers
        if ex is not None and ex.info.websocket and ex.local_reply is None and rest:
            ex.early_tunnel_data.append(rest)

    def start_tunnel(self, ex, upstream, extra):
        self.current = None
        self._watch_busy()
        self.flush()  # the 101 head goes out before any tunnelled byte
        self.tunnel = Tunnel(self, upstream, ex.plan.timeouts.websocket_idle)
        self.tunnel.start(extra, ex.early_tunnel_data)
        self.paused = 0
        self.transport.resume_reading()

    # -- flow control -----------------------------------------------------
    def _pause(self, reason):
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason):
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def pause_reading_for_upstream(self):
        self._pause(PAUSE_UPSTREAM)

    def resume_reading_for_upstream(self):
        self._resume(PAUSE_UPSTREAM)

    def upstream_attached(self, ex):
        self._resume(PAUSE_UPSTREAM)

    # -- writing ------------------------------------------------------------
    def cork(self):
        self.corked += 1

    def uncork(self):
        self.corked -= 1
        if not self.corked:
            self.flush()

    def flush(self):
        out = self.out
        if out and not self.closed:
            self.out = []
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writelines(out)

    def send(self, data):
        if self.corked:
            self.out.append(data)
        elif not self.closed:
            self.transport.write(data)

    def send_many(self, parts):
        if self.corked:
            self.out.extend(parts)
        elif not self.closed:
            self.transport.writelines(parts)

    def touch(self):
        self.last_activity = self.gateway.deadlines.now

    def abort(self):
        """Close now: a response was cut short (the client sees a short body)."""
        self.flush()
        self.parser = None
        if not self.closed:
            self.transport.close()

    def _linger(self):
        self.flush()
        self.lingering = True
        self._resume(PAUSE_CLOSING | PAUSE_PIPELINE | PAUSE_UPSTREAM)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._watch_busy()
        self.timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    # -- timeouts: idle keep-alive and slow request heads ----------------------
    def _watch_idle(self, timeout):
        """Idle or reading a head: close if nothing completes within `timeout`."""
        self.gateway.deadlines.arm(self, timeout)

    def _watch_busy(self):
        """An exchange is in flight: it keeps its own deadlines."""
        if self.deadline_slot is not None:
            self.deadline_slot.discard(self)
            self.deadline_slot = None

    def deadline_passed(self):
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
