# Included by proxy.pyx, after proxy_exchange.pxi. Phases 3-4 of an exchange:
# the route's stages (plugins, access, limits, slots) run in plan order.
# Module-level cdef functions over an Exchange rather than its methods only
# because Cython allows no include inside a class body; they are C calls
# all the same (no vtable), and `self` is the exchange they serve.

cdef void run_admission(Exchange self):
    """Run the plan's remaining stages in order; stop at a refusal or at a
    stage that keeps the exchange (WAIT); after the last one, phase 5."""
    cdef tuple stages = self.plan.stages
    while self.admission_step < len(stages):
        stage = stages[self.admission_step]
        self.admission_step += 1
        if type(stage) is LocalLimit:
            if not pass_local_limit(self, (<LocalLimit>stage).limiter):
                return  # answered 429 (a local reply)
            continue
        self.admission_state = ADMIT_RUNNING
        if type(stage) is PluginHook:
            verdict = call_plugin_hook(self, <PluginHook>stage)
        else:
            try:
                verdict = stage.admit(self)
            except Exception as err:  # a bug in a stage: this request fails, the rest go on
                self.client.gateway.log_internal_error(f"stage {stage!r}", err)
                verdict = ProxyError(500, "internal_error", "internal error in a stage")
        if verdict is WAIT:
            if self.admission_state == ADMIT_EARLY:  # it already decided
                verdict = self.admission_verdict
                self.admission_verdict = None
            else:
                self.admission_state = ADMIT_WAITING
                return
        self.admission_state = 0
        if verdict is not None:
            refuse(self, verdict)
            return
    self._build_head()
    self._select_upstream()

cdef object call_plugin_hook(Exchange self, PluginHook stage):
    """Call a plugin's request hook: None goes on; anything else is judged
    by the plugin runtime (an Answer, an awaitable to wait for, an error)."""
    cdef ExchangeView view
    if self.context is None:
        view = stage.make_request.__new__(stage.make_request)
        view._ex = self
        self.context = view
    cdef long long started = now_ns()
    try:
        result = stage.hook(self.context)
    except Exception as err:
        return stage.on_error(err)
    cdef long long spent = now_ns() - started
    if spent > stage.budget_ns:
        stage.on_slow(spent)
    if result is None:
        return None
    return stage.on_result(self, result, started)

cdef bint pass_local_limit(Exchange self, object limiter):
    """Host-local rate limits (phase 4): True passes; False answered 429."""
    cdef GatewayCore gateway = self.client.gateway
    decision = limiter.check(self.client.peer_ip, self.request_headers)
    self.rate_limit = 1 if decision.allowed else 2
    if gateway.metrics is not None:
        gateway.metrics.rate_limited(self.plan.index, decision.allowed)
    if decision.allowed:
        self.add_response_headers(decision.headers)
        return True
    # As any local reply: the rest of a body is read and dropped, the
    # connection kept.
    self.local_reply = (decision.status, "rate_limited", decision.message, decision.headers)
    self._write_error(decision.status, "rate_limited", decision.message, decision.headers)
    self._response_finished()
    return False

cdef void refuse(Exchange self, verdict):
    """A stage said no (a ProxyError) or answered itself (an Answer).
    Nothing went upstream: a request without a body keeps its connection
    (the rest of a body would have to be read and dropped first, so a
    request with one is answered on a closing connection)."""
    if not (self.request_done or (not self.info.chunked and self.info.content_length <= 0)):
        self.keep_alive = False
    self.response_done = True
    if type(verdict) is Answer:
        self._write_answer(<Answer>verdict)
    else:
        self._write_error(verdict.status, verdict.code, verdict.message, verdict.headers)
    self._response_finished()
