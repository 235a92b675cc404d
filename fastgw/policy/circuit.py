"""A circuit breaker per cluster: stop sending requests to a cluster that keeps
failing, answer 503 `circuit_open` at once instead, and try again later.

States (transitions on a monotonic clock, each logged once on "fastgw"):

    closed     requests flow; outcomes are counted. The circuit opens when
               `failures` consecutive requests failed, or, with
               `failure_ratio`, when the failures among the last `window`
               outcomes reach that share (once `min_requests` are counted).
    open       `admit()` refuses with 503 circuit_open and `Retry-After` (the
               seconds until half-open); the upstream is not touched. Outcomes
               of requests admitted before the circuit opened are ignored.
    half-open  after `open_for`: `half_open_probes` requests are let through
               (more are refused, Retry-After 1). Every probe succeeds ->
               closed, with fresh counts; one fails -> open again for
               `open_for`.

Failures are CONNECT_FAILURE, TIMEOUT, RESET, BAD_RESPONSE and STATUS_5XX; OK
resets the consecutive count (and counts as a success in the window).
CANCELLED (the client went away) counts neither way; a cancelled probe frees
its slot for another.

State is per worker process: with N workers each has its own breaker and
counts, so a cluster may be open in one worker and closed in another, and up
to N * half_open_probes probes reach the upstream.

While half-open, any outcome reported counts as a probe's, including a late
one from a request admitted before the circuit opened (the report carries no
request identity); such a request outlived `open_for`, so its outcome is
recent news about the upstream.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque

from fastgw._native.codes import CANCELLED, OK
from fastgw.proxy.errors import ProxyError

log = logging.getLogger("fastgw")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


class CircuitBreaker:
    """One cluster's breaker in one worker. `admit()` before choosing an
    endpoint (raises ProxyError 503 when refused), `release()` if an admitted
    request never used an endpoint, `record(outcome)` once per admitted
    request that did."""

    __slots__ = ("config", "name", "clock", "state", "open_until", "consecutive",
                 "recent", "recent_failures", "probes_admitted", "probe_successes")

    def __init__(self, config, cluster_name: str, clock=time.monotonic):
        self.config = config
        self.name = cluster_name
        self.clock = clock
        self.state = CLOSED
        self.open_until = 0.0
        self.consecutive = 0
        # failure_ratio model: the last `window` outcomes (True: failed).
        self.recent: deque[bool] = deque(maxlen=config.window)
        self.recent_failures = 0
        self.probes_admitted = 0
        self.probe_successes = 0

    # -- per request -----------------------------------------------------------
    def admit(self) -> None:
        state = self.state
        if state is CLOSED:
            return
        if state is OPEN:
            now = self.clock()
            if now < self.open_until:
                raise self._refusal(self.open_until - now)
            self._half_open()
        if self.probes_admitted < self.config.half_open_probes:
            self.probes_admitted += 1
            return
        raise self._refusal(1.0)  # the probes are out: their outcome decides

    def release(self) -> None:
        """An admitted request never reached an endpoint (no endpoint to pick)."""
        if self.state is HALF_OPEN and self.probes_admitted > self.probe_successes:
            self.probes_admitted -= 1

    def record(self, outcome: int) -> None:
        if outcome == CANCELLED:
            self.release()  # says nothing about the upstream
            return
        failed = outcome != OK
        state = self.state
        if state is CLOSED:
            if self.config.failure_ratio is None:
                if not failed:
                    self.consecutive = 0
                    return
                self.consecutive += 1
                if self.consecutive >= self.config.failures:
                    self._open(f"{self.consecutive} consecutive failures")
            else:
                self._count_in_window(failed)
        elif state is HALF_OPEN:
            if failed:
                self._open("a half-open probe failed")
            else:
                self.probe_successes += 1
                if self.probe_successes >= self.config.half_open_probes:
                    self._close()
        # OPEN: a request admitted before the circuit opened; ignored.

    # -- internals -------------------------------------------------------------
    def _count_in_window(self, failed: bool) -> None:
        recent = self.recent
        if len(recent) == recent.maxlen and recent[0]:
            self.recent_failures -= 1
        recent.append(failed)
        if failed:
            self.recent_failures += 1
            total = len(recent)
            if total >= self.config.min_requests and self.recent_failures >= self.config.failure_ratio * total:
                self._open(f"{self.recent_failures} of the last {total} requests failed")

    def _reset_counts(self) -> None:
        self.consecutive = 0
        self.recent.clear()
        self.recent_failures = 0
        self.probes_admitted = 0
        self.probe_successes = 0

    def _open(self, reason: str) -> None:
        self.state = OPEN
        self.open_until = self.clock() + self.config.open_for
        self._reset_counts()
        log.warning("circuit breaker: cluster '%s' opened (%s); refusing requests for %gs (this worker)",
                    self.name, reason, self.config.open_for)

    def _half_open(self) -> None:
        self.state = HALF_OPEN
        self._reset_counts()
        log.info("circuit breaker: cluster '%s' half-open; letting %d probe request(s) through (this worker)",
                 self.name, self.config.half_open_probes)

    def _close(self) -> None:
        self.state = CLOSED
        self._reset_counts()
        log.info("circuit breaker: cluster '%s' closed; the probes succeeded (this worker)", self.name)

    def _refusal(self, seconds: float) -> ProxyError:
        retry_after = max(1, math.ceil(seconds))
        return ProxyError(503, "circuit_open",
                          f"cluster '{self.name}' is failing and its circuit breaker is open; "
                          f"retry in {retry_after}s",
                          headers=b"Retry-After: %d\r\n" % retry_after)
