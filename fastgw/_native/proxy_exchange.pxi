# Included by proxy.pyx (one extension module: these classes call each other
# as C, both ways). The exchange: one request and its answer, through the phases.

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
    cdef public list early_tunnel_data  # client bytes after a WebSocket head, held until 101 (None: none)
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
    cdef Py_ssize_t admission_step  # next stage of plan.stages to run
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
    # What stages and plugins read (set at phase 2, route).
    cdef public bytes path       # the request path, as received
    cdef public bytes query      # "?..." or b""
    cdef public object params    # None, or ((name, value), ...) of the path template
    cdef bytes upstream_target   # path (rewritten) + query: the upstream request target
    cdef public dict log_fields  # None, or fields stages add to the access log line
    cdef public object context   # None, or what Python stages keep per exchange (a plugin Request)

    def __init__(self, ClientConnection client, bytes method, MessageInfo info,
                 bytes request_id, bint keep_alive, bint http11):
        self._setup(client, method, info, request_id, keep_alive, http11)

    @staticmethod
    cdef Exchange new(ClientConnection client, bytes method, MessageInfo info,
                      bytes request_id, bint keep_alive, bint http11):
        """The native constructor: no Python call and argument parsing per request."""
        cdef Exchange ex = Exchange.__new__(Exchange)
        ex._setup(client, method, info, request_id, keep_alive, http11)
        return ex

    cdef void _setup(self, ClientConnection client, bytes method, MessageInfo info,
                     bytes request_id, bint keep_alive, bint http11):
        self.client = client
        self.method = method
        self.info = info
        self.request_id = request_id
        self.keep_alive = keep_alive
        self.http11 = http11
        self.is_head = method == b"HEAD"
        self.pending_out = []
        self.sent = []
        cdef GatewayCore gateway = client.gateway
        if gateway.metrics is not None or gateway.access_log is not None:
            self.timed = True
            self.started_ns = now_ns()
            if gateway.metrics is not None:
                gateway.metrics.add(G_IN_FLIGHT, 1)

    # -- setup -------------------------------------------------------------
    cdef void proxy_to(self, RoutePlan plan, bytes target):
        """Phase 2 found the route. The upstream head is built once the stages
        have run (they may change request headers); body bytes that arrive
        meanwhile queue behind the slot it will fill (`_build_head`)."""
        self.plan = plan
        self.upstream_target = target
        if plan.log_hooks is not None and not self.timed:
            # Log hooks run when the exchange is accounted for, with metrics
            # and the access log off too.
            self.timed = True
            self.started_ns = now_ns()
        self.pending_out.append(None)
        self.sent.append(None)

    cdef void _build_head(self):
        cdef RoutePlan plan = self.plan
        cdef bytes head = build_request_head(self.method, self.upstream_target, self.request_headers,
                                             self.info, plan.request_rewrite, self.client.peer_ip,
                                             self.request_id, plan.default_host, plan.head_flags)
        self.pending_out[0] = head  # nothing has been written: the slot is still first
        self.pending_bytes += len(head)
        if self.sent is not None:
            self.sent[0] = head
            self.sent_bytes += len(head)
            if self.sent_bytes > REPLAY_LIMIT:
                self.sent = None

    cdef bytes _echoed_id(self):
        """The request id for the client's response head, or None when the
        route's plan has no request-id policy (policy/request_id.py)."""
        return self.request_id if self.plan.head_flags & HEAD_REQUEST_ID else None

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
        if self.plan.stages is not None:
            run_admission(self)
            return
        self._build_head()
        self._select_upstream()

    # -- phases 3-4 run in proxy_admission.pxi; a stage that waited ends here --
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
            refuse(self, verdict)
        else:
            run_admission(self)

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
        self._close_books()
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
        if self.client.corked:
            # Inside the client's read: the head goes out with the body bytes
            # of the same read, in one write, when the read is done.
            self.client.cork_upstream(self)
        else:
            self.flush_upstream()
        self.client.resume_reading_for(PAUSE_UPSTREAM)
        if self.request_done:
            self._arm(WAIT_HEAD, self.plan.try_timeout)
        else:
            self._arm(WAIT_IDLE, self.plan.idle_timeout)  # the client is still sending its body

    def upstream_connect_failed(self, error):
        if not self.finished:
            self.outcome = OUTCOME_TIMEOUT if error.status == 504 else OUTCOME_CONNECT
            if not self._retry_after(FAILED_CONNECT):
                self.fail(error)

    cdef void interim_response(self, UpstreamConnection conn, int status, bytes reason,
                               list headers, MessageInfo info):
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
        if info.error_status:
            self.upstream_bad_response(conn, info.error_message)
            return
        self.client.send(build_response_head(
            status, reason, headers, info, self.plan.response_rewrite, self._echoed_id(),
            F_NONE, True, False))

    cdef void response_head(self, UpstreamConnection conn, int status, bytes reason,
                            list headers, MessageInfo info):
        self._cancel_timer()
        if status >= 500:
            self.outcome = OUTCOME_5XX
            retry = self.plan.retry
            if retry is not None and status in retry.statuses and self.retries < retry.attempts:
                if self._retry_status(conn, retry, headers):
                    return
        if info.error_status:
            self.upstream_bad_response(conn, info.error_message)
            return
        if self.plan.response_hooks is not None and status != 101:
            for hook in self.plan.response_hooks:  # phase 9: they may edit `headers`
                refused = hook(self, status, headers)
                if refused is not None:
                    self._drop_upstream(conn)
                    self.fail(refused)
                    return
        if info.event_stream and self.timed:
            self._stream_opened()
        self.upstream_keep_alive = info.keep_alive
        if status == 101:
            if not self.info.websocket:
                self.upstream_bad_response(conn, "upstream switched protocols unasked")
                return
            self.upgraded = True
            self.keep_alive = False
            self.response_started = True
            self.client.send(build_response_head(
                101, reason, headers, info, self.plan.response_rewrite, self._echoed_id(),
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
            status, reason, headers, info, self.plan.response_rewrite, self._echoed_id(),
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
            self._close_books()
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
        if self._retry_after(FAILED_RESET):
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

    cdef bint _retry_after(self, int failure):
        """The retry decision for a try that failed (FAILED_*) before any
        response byte reached the client: schedule another try (True), or let
        the failure answer (False). A retryable 5xx head decides in
        `_retry_status`, which needs the head (Retry-After)."""
        retry = self.plan.retry
        if retry is None:
            return False
        if failure == FAILED_CONNECT:
            if not retry.on_connect_failure:
                return False
        elif failure == FAILED_RESET:
            if not retry.on_reset:
                return False
        elif not retry.on_timeout:
            return False
        cdef bint nothing_sent = failure == FAILED_CONNECT
        if not self._may_retry(nothing_sent):
            return False
        self._schedule_retry(nothing_sent, 0.0)
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
        cancel_deadline(self)

    cdef void deadline_passed(self):
        if self.finished or self.response_done:
            return
        if self.deadline_kind == WAIT_HEAD:
            if self.response_started:
                return
            self.outcome = OUTCOME_TIMEOUT
            self._drop_upstream(self.upstream)
            if self._retry_after(FAILED_TIMEOUT):
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
        if self.upstream is not None and not self.client.corked:
            self.upstream.transport.write(data)
            return
        self.pending_out.append(data)
        self._pending_grew(len(data))

    cdef void _send_upstream3(self, bytes a, bytes b, bytes c):
        self._log_sent(a)
        self._log_sent(b)
        self._log_sent(c)
        if self.upstream is not None and not self.client.corked:
            self.upstream.transport.writelines((a, b, c))
            return
        self.pending_out.extend((a, b, c))
        self._pending_grew(len(a) + len(b) + len(c))

    cdef void _pending_grew(self, Py_ssize_t size):
        """Request bytes were queued: until the client's read is done (the
        upstream is attached: one write then, bounded by one read), or until
        a connection is attached (bounded by CONNECT_BUFFER_LIMIT)."""
        self.pending_bytes += size
        if self.upstream is not None:
            self.client.cork_upstream(self)
        elif self.pending_bytes > CONNECT_BUFFER_LIMIT:
            self.client.pause_reading_for(PAUSE_UPSTREAM)

    cdef void flush_upstream(self):
        """Write the queued request bytes to the attached upstream, in one call.
        (A POST's head and the body bytes read with it: one syscall, not two.)"""
        cdef list out = self.pending_out
        if self.upstream is None or not out:
            return
        self.pending_out = []
        self.pending_bytes = 0
        if len(out) == 1:
            self.upstream.transport.write(out[0])
        else:
            self.upstream.transport.writelines(out)

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
        if self.response_extra is not None:
            # What the stages that passed added (CORS, rate-limit state) goes
            # on the gateway's own errors too: a browser can read a 401/429/502
            # only when it carries Access-Control-Allow-Origin.
            extra = self.response_extra + extra
        self.client.send(error_reply(status, code, message, self.request_id,
                                     self.keep_alive, extra))

    cdef void _write_answer(self, Answer answer):
        self.status = answer.status
        self.bytes_out += len(answer.body)
        self.client.send(answer_reply(answer.status, answer.header_lines, answer.body, self.request_id,
                                      self.keep_alive, self.is_head, self.response_extra))

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
        self._close_books()
        self.client.abort()

    cdef void _response_finished(self):
        self.response_done = True
        self._maybe_finish()

    cdef void _maybe_finish(self):
        if self.response_done and (self.request_done or not self.keep_alive) and not self.finished:
            self._mark_finished()
            self._release_endpoint()
            self._close_books()
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

    cdef void _close_books(self):
        """The exchange is over: metrics, log hooks and the access log, then
        the plugins' Request view is dropped. The view refers back to the
        exchange; left in place, that cycle made every exchange on a route
        with a plugin garbage for the cyclic GC, whose collections cost ~4,000
        instructions per request (bench/RESULTS.md, section 11)."""
        if self.timed:
            self._account()
        self.context = None

    cdef void _account(self):
        """The exchange is over (once): metrics, log hooks, then the access log."""
        if self.accounted:
            return
        self.accounted = True
        self.duration_ns = now_ns() - self.started_ns
        cdef GatewayCore gateway = self.client.gateway
        cdef WorkerMetrics metrics = gateway.metrics
        cdef AccessLineBuffer line
        if metrics is not None:
            metrics.request_done(self.plan.index if self.plan is not None else -1, self.method,
                                 self.status, self.duration_ns, self.upstream_ns, self.body_bytes,
                                 self.bytes_out)
            if self.event_stream:
                metrics.stream_closed(STREAM_SSE)
        if self.plan is not None and self.plan.log_hooks is not None:
            for hook in self.plan.log_hooks:  # phase 12: before the line, so they can add fields
                try:
                    hook(self)
                except Exception as err:
                    gateway.log_internal_error("a log hook", err)
        if gateway.access_log is not None:
            try:
                if isinstance(gateway.access_log, AccessLineBuffer):  # the JSON log alone: no Python call
                    line = <AccessLineBuffer>gateway.access_log
                    if line.record(self.method, self.target, self.request_id, self.client.peer_ip, self.info,
                                   self.plan, self.pool, self.status, self.body_bytes, self.bytes_out,
                                   self.duration_ns, self.upstream_ns, self.retries, self.rate_limit,
                                   self.request_headers):
                        if self.log_fields:
                            line.append_fields(self.log_fields)
                        else:
                            line._done()
                else:
                    gateway.access_log.log(self)
            except Exception as err:  # a logging bug must not break the request path
                gateway.log_internal_error("access log", err)

    @property
    def endpoint(self):
        """The address of the endpoint last used, or None."""
        return self.pool.endpoint.address if self.pool is not None else None
