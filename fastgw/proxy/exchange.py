"""One request/response exchange: the state that ties a client request to an
upstream connection, and the phases it goes through.

    client side (ClientConnection)          upstream side (UpstreamConnection)
    ------------------------------          ----------------------------------
    start()            -> upstream select, pool checkout / dial
    request_body()     -> body chunks, streamed, size limit
    request_end()      -> arm the response-header timer
                          response_head()   <- status + headers: rewrite, framing
                          response_body()   <- chunks passed through as received
                          response_end()    <- release the connection, finish
    client_lost()      -> abandon: close the upstream connection

Errors before the response head has reached the client become a JSON local
reply (`fail`); after it, the client connection is closed (`abort`), because
the status line is already on the wire. Only one exchange per client
connection is active at a time; pipelined requests wait in the connection's
queue, so responses go out in order.
"""
from __future__ import annotations

from fastgw._native.headers import (
    FRAMING_CHUNKED, FRAMING_CLOSE, FRAMING_LENGTH, FRAMING_NONE,
    build_response_head, scan_response,
)
from fastgw.proxy.errors import CONTINUE_100, ProxyError, error_reply

IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))

# Request bytes kept so a request can be replayed on a fresh connection when a
# pooled one turns out to be dead. Bigger requests are not replayed.
REPLAY_LIMIT = 64 * 1024
# Request body buffered while the upstream connection is being set up.
CONNECT_BUFFER_LIMIT = 256 * 1024

# What an armed deadline means.
_WAIT_HEAD = 1   # response_header timeout: waiting for the upstream's status line
_WAIT_IDLE = 2   # idle timeout: a body in flight has stalled

_CHUNK_END = b"0\r\n\r\n"
_CRLF = b"\r\n"


class Exchange:
    __slots__ = (
        "client", "plan", "method", "info", "request_id", "keep_alive", "http11",
        "early_tunnel_data", "upstream", "pool", "pending_out", "pending_bytes", "sent",
        "retried", "request_done", "response_done", "response_started", "framing",
        "upstream_framing", "body_bytes", "upgraded", "is_head", "local_reply",
        "finished", "continue_sent", "upstream_keep_alive", "upstream_paused", "counted",
        "deadline_slot", "deadline_kind",
    )

    def __init__(self, client, method, info, request_id, keep_alive, http11):
        self.client = client
        self.method = method
        self.info = info
        self.request_id = request_id
        self.keep_alive = keep_alive
        self.http11 = http11
        self.is_head = method == b"HEAD"
        self.plan = None
        self.early_tunnel_data = []  # client bytes after a WebSocket head, held until 101
        self.upstream = None
        self.pool = None
        self.pending_out = []
        self.pending_bytes = 0
        self.sent = []            # replay log; None once too big to replay
        self.retried = False
        self.request_done = False
        self.response_done = False
        self.response_started = False
        self.framing = FRAMING_NONE
        self.upstream_framing = FRAMING_NONE
        self.body_bytes = 0
        self.upgraded = False
        self.local_reply = None
        self.finished = False
        self.continue_sent = False
        self.upstream_keep_alive = False
        self.upstream_paused = False
        self.counted = False
        self.deadline_slot = None   # armed in the worker's Deadlines wheel
        self.deadline_kind = 0

    # ------------------------------------------------------------------ setup
    def proxy_to(self, plan, head):
        self.plan = plan
        self._queue_out(head)

    def reply_locally(self, status, code, message, keep_alive=None, extra_headers=b""):
        """Make this exchange a local reply (no upstream)."""
        if keep_alive is not None:
            self.keep_alive = keep_alive
        self.local_reply = (status, code, message, extra_headers)

    # ------------------------------------------------------------ client side
    def start(self):
        """The exchange is at the head of its connection's queue: go."""
        if self.local_reply is not None:
            status, code, message, extra = self.local_reply
            self._write_error(status, code, message, extra)
            self._response_finished()
            return
        pool = self.plan.cluster.pick()
        if pool is None:
            self.fail(ProxyError(503, "no_endpoint",
                                 f"cluster '{self.plan.cluster.config.name}' has no endpoint"))
            return
        self.pool = pool
        pool.active += 1
        self.counted = True
        pool.acquire(self)

    def request_body(self, chunk):
        size = len(chunk)
        self.body_bytes += size
        if self.body_bytes > self.client.gateway.max_body_bytes:
            self.client.body_too_large(self)
            return
        if self.local_reply is not None or self.response_done:
            return  # nobody to forward to: the body is read and dropped
        if self.info.chunked:
            self._send_upstream(b"%x\r\n" % size, chunk, _CRLF)
        else:
            self._send_upstream(chunk)

    def request_end(self):
        self.request_done = True
        if self.local_reply is not None or self.finished:
            self._maybe_finish()
            return
        if self.info.chunked and not self.response_done:
            self._send_upstream(_CHUNK_END)
        if self.upstream is not None and not self.response_started:
            self._arm_response_timer()
        self._maybe_finish()

    def client_lost(self):
        """The client went away: drop the upstream side at once."""
        self._cancel_timer()
        self.finished = True
        self._release_endpoint()
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.exchange = None
            upstream.transport.close()

    def wants_upstream(self):
        return not self.finished and self.upstream is None

    def client_write_paused(self):
        if self.upstream is not None and not self.upstream_paused:
            self.upstream_paused = True
            self.upstream.transport.pause_reading()

    def client_write_resumed(self):
        if self.upstream is not None and self.upstream_paused:
            self.upstream_paused = False
            self.upstream.transport.resume_reading()

    # ---------------------------------------------------------- upstream side
    def upstream_ready(self, conn):
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
        out, self.pending_out, self.pending_bytes = self.pending_out, [], 0
        conn.transport.writelines(out)
        self.client.upstream_attached(self)
        if self.request_done:
            self._arm_response_timer()
        else:
            self._arm_idle_timer()  # the client is still sending its body

    def upstream_connect_failed(self, error):
        if self.finished:
            return
        self.fail(error)

    def response_head(self, conn, status, reason, headers, http11):
        if 100 <= status < 200 and status != 101:
            return  # interim: the gateway answered Expect itself, nothing to relay
        self._cancel_timer()
        info = scan_response(headers, http11)
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
                FRAMING_NONE, False))
            return
        if info.chunked:
            self.upstream_framing = FRAMING_CHUNKED
        elif info.content_length >= 0:
            self.upstream_framing = FRAMING_LENGTH
        else:
            self.upstream_framing = FRAMING_CLOSE
        if self.is_head or status == 204 or status == 304:
            framing = FRAMING_LENGTH if info.content_length >= 0 else FRAMING_NONE
            self.upstream_framing = FRAMING_NONE
        elif self.upstream_framing == FRAMING_LENGTH:
            framing = FRAMING_LENGTH
        else:
            framing = FRAMING_CHUNKED if self.http11 else FRAMING_CLOSE
        self.framing = framing
        if framing == FRAMING_CLOSE or self.client.gateway.draining or self.info.websocket:
            self.keep_alive = False
        self.response_started = True
        self.client.send(build_response_head(
            status, reason, headers, info, self.plan.response_rewrite, self.request_id,
            framing, self.keep_alive, not self.http11))
        if self.upstream_framing == FRAMING_NONE:
            # No body follows (HEAD, 204, 304). llhttp cannot be told a response
            # answers HEAD, so the connection gets a fresh parser for the next one.
            conn.reset_parser = True
            self.response_end(conn)
        elif self.plan.timeouts.idle:
            self._arm_idle_timer()

    def response_body(self, body):
        if self.framing == FRAMING_CHUNKED:
            self.client.send_many((b"%x\r\n" % len(body), body, _CRLF))
        elif self.framing != FRAMING_NONE:
            self.client.send(body)
        self.client.touch()

    def response_end(self, conn):
        if self.upgraded or self.response_done:
            return
        self._cancel_timer()
        if self.framing == FRAMING_CHUNKED:
            self.client.send(_CHUNK_END)
        self.response_done = True
        self.upstream = None
        conn.exchange_done(self.upstream_keep_alive and self.request_done
                           and self.upstream_framing != FRAMING_CLOSE)
        self._release_endpoint()
        self._response_finished()

    def upstream_upgraded(self, conn, extra):
        """The upstream answered 101: the connection pair becomes a byte tunnel."""
        if self.upgraded and not self.finished:
            self._cancel_timer()
            self.finished = True
            self.upstream = None
            conn.exchange = None
            self._release_endpoint()
            self.client.start_tunnel(self, conn, extra)
        else:
            self.upstream_bad_response(conn, "unexpected protocol switch from upstream")

    def upstream_lost(self, conn, exc):
        """The upstream connection closed under this exchange."""
        self.upstream = None
        if self.finished:
            return
        if self.response_started:
            if self.upstream_framing == FRAMING_CLOSE:
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
            self.pending_out, self.pending_bytes = list(self.sent), 0
            self.pool.acquire(self, fresh=True)
            return
        self.fail(ProxyError(502, "upstream_reset",
                             f"upstream {self.pool.endpoint.address} closed the connection "
                             "before a complete response head"))

    def upstream_bad_response(self, conn, message):
        self._drop_upstream(conn)
        if self.response_started:
            self.abort()
        else:
            self.fail(ProxyError(502, "upstream_bad_response", message))

    def upstream_broken(self, conn, error):
        """A callback raised while parsing the upstream response."""
        self.upstream_bad_response(conn, str(error) or type(error).__name__)

    def upstream_write_paused(self):
        self.client.pause_reading_for_upstream()

    def upstream_write_resumed(self):
        self.client.resume_reading_for_upstream()

    # ----------------------------------------------------------------- timers
    def _arm_response_timer(self):
        self.deadline_kind = _WAIT_HEAD
        self.client.gateway.deadlines.arm(self, self.plan.timeouts.response_header)

    def _arm_idle_timer(self):
        self.deadline_kind = _WAIT_IDLE
        self.client.gateway.deadlines.arm(self, self.plan.timeouts.idle)

    def _cancel_timer(self):
        if self.deadline_slot is not None:
            self.deadline_slot.discard(self)
            self.deadline_slot = None

    def deadline_passed(self):
        if self.finished or self.response_done:
            return
        if self.deadline_kind == _WAIT_HEAD:
            if self.response_started:
                return
            self._drop_upstream(self.upstream)
            self.fail(ProxyError(504, "upstream_timeout",
                                 f"no response head from {self.pool.endpoint.address} within "
                                 f"{self.plan.timeouts.response_header:g}s"))
            return
        # Mid-body: abort when neither side moved a byte for `idle` seconds.
        idle = self.plan.timeouts.idle
        quiet = self.client.gateway.deadlines.now - self.client.last_activity
        if quiet < idle:
            self.client.gateway.deadlines.arm(self, idle - quiet)
            return
        self._drop_upstream(self.upstream)
        self.abort()

    # ---------------------------------------------------------------- helpers
    def _send_upstream(self, *parts):
        sent = self.sent
        if sent is not None:
            for p in parts:
                sent.append(p)
            if sum(map(len, sent)) > REPLAY_LIMIT:
                self.sent = None
        upstream = self.upstream
        if upstream is not None:
            if len(parts) == 1:
                upstream.transport.write(parts[0])
            else:
                upstream.transport.writelines(parts)
        else:
            for p in parts:
                self.pending_out.append(p)
                self.pending_bytes += len(p)
            if self.pending_bytes > CONNECT_BUFFER_LIMIT:
                self.client.pause_reading_for_upstream()

    def _queue_out(self, data):
        self.pending_out.append(data)
        if self.sent is not None:
            self.sent.append(data)

    def _drop_upstream(self, conn):
        self._cancel_timer()
        if conn is not None:
            conn.exchange = None
            conn.transport.close()
        self.upstream = None
        self._release_endpoint()

    def _release_endpoint(self):
        """Stop counting this exchange as in flight on its endpoint (once)."""
        if self.counted:
            self.counted = False
            self.pool.active -= 1

    def _write_error(self, status, code, message, extra=b""):
        self.client.send(error_reply(status, code, message, self.request_id,
                                     self.keep_alive, extra))

    def fail(self, error: ProxyError):
        """End the exchange with a local error reply (nothing sent yet)."""
        self._cancel_timer()
        if self.upstream is not None:
            self._drop_upstream(self.upstream)
        self.response_done = True
        if not self.request_done:
            # The rest of the request body can't be framed away safely: close after.
            self.keep_alive = False
        self._write_error(error.status, error.code, error.message)
        self._response_finished()

    def abort(self):
        """The response is partly sent and cannot be completed: close the client."""
        self._cancel_timer()
        self.response_done = True
        self.finished = True
        self._release_endpoint()
        self.client.abort()

    def _response_finished(self):
        self.response_done = True
        self._maybe_finish()

    def _maybe_finish(self):
        if self.response_done and (self.request_done or not self.keep_alive) and not self.finished:
            self.finished = True
            self._release_endpoint()
            self.client.exchange_finished(self)
