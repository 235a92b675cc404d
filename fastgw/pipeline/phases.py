"""The phases of a request, in order: the one table the code and
docs/architecture.md follow (tests/pipeline/test_phases.py keeps the doc's
table equal to this one).

Each phase names the RoutePlan slot its hooks go into. The exchange
(fastgw/_native/proxy.pyx) runs a slot only when the route's plan has
something in it: a route without a policy in a phase pays one pointer test.

- `stages` holds, in phase order, what may keep or refuse a request before
  it goes upstream (request_head, access, admission): objects with
  `admit(exchange) -> None | ProxyError | Answer | WAIT`, or a native
  `LocalLimit` the exchange runs itself.
- `native` slots are compiled programs the C code runs directly (header
  rewrites, path rewrite, retries); their policies are configured per route
  but have no Python hook.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Phase(IntEnum):
    REQUEST_HEAD = 1      # head parsed, framing checked, route known
    ROUTE = 2
    ACCESS = 3
    ADMISSION = 4
    REQUEST_BODY = 5
    UPSTREAM_SELECT = 6
    UPSTREAM_REQUEST = 7
    RESPONSE_HEAD = 8
    RESPONSE_BODY = 9
    FAILURE = 10          # a try failed before the response head: retry or answer
    LOG = 11


@dataclass(frozen=True)
class PhaseInfo:
    phase: Phase
    slot: str             # where its hooks live in the RoutePlan
    work: str             # what happens there
    may_answer: str       # what it may answer instead of the upstream


PHASES = (
    PhaseInfo(Phase.REQUEST_HEAD, "stages", "limits and framing checks (native), plugins' on_request_head",
              "400, 413, 414, 431, 505; a plugin's answer"),
    PhaseInfo(Phase.ROUTE, "native", "host + method + path in the compiled table, path parameters",
              "404, 405"),
    PhaseInfo(Phase.ACCESS, "stages", "IP allow/deny, CORS preflights, authentication (JWT, API keys) and "
              "scopes, forward auth, plugins' on_access", "a plugin's answer, a preflight's, 401, 403, 503, 504"),
    PhaseInfo(Phase.ADMISSION, "stages", "local rate limits (native), consumer-keyed limits, Redis rate limits, "
              "concurrency slots", "429, 503"),
    PhaseInfo(Phase.REQUEST_BODY, "native", "body streamed with backpressure, size limit", "413"),
    PhaseInfo(Phase.UPSTREAM_SELECT, "native", "load balancer over healthy endpoints, circuit breaker",
              "503"),
    PhaseInfo(Phase.UPSTREAM_REQUEST, "native",
              "path rewrite, request header rules, X-Forwarded-*, X-Request-ID, traceparent; "
              "pool checkout or dial", "502, 504"),
    PhaseInfo(Phase.RESPONSE_HEAD, "response_hooks",
              "1xx relayed; response header rules (native); plugins' on_response_head", "502, 500"),
    PhaseInfo(Phase.RESPONSE_BODY, "native", "chunks passed through as read", "- (abort)"),
    PhaseInfo(Phase.FAILURE, "native", "one retry decision (Exchange._retry_after), outcome to the "
              "circuit breaker and outlier detection", "502, 503, 504"),
    PhaseInfo(Phase.LOG, "log_hooks", "plugins' on_log, metrics, access log, span export", "-"),
)

assert tuple(p.phase for p in PHASES) == tuple(Phase), "PHASES lists every phase once, in order"
