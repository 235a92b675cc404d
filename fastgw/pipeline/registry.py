"""The built-in policies, in the order they install into a route's plan.
Within one phase, stages run in this order (a local rate limit before a
Redis one before a concurrency slot). Adding a policy: a module with a
`POLICY` object (`name`, `phases`, `prepare(gateway)`, `install(builder,
route)`), its config section, and one line here. docs/architecture.md has
the walk-through."""
from __future__ import annotations

from fastgw.plugins import policy as plugins
from fastgw.policy import (
    auth, concurrency, consumer_limit, cors, forward_auth, forwarded_headers, header_rewrite, ip_filter, ratelimit,
    redis_rate_limit, request_id, retry, security_headers, trace_context, upstream_target,
)

POLICIES = (
    upstream_target.POLICY,     # cluster, timeouts, path rewrite (native)
    header_rewrite.POLICY,      # request_headers / response_headers (native)
    forwarded_headers.POLICY,   # X-Forwarded-* (native)
    request_id.POLICY,          # X-Request-ID upstream and back (native)
    trace_context.POLICY,       # traceparent (native), when tracing.propagate
    security_headers.POLICY,    # response_head: preset headers (into the native response program)
    ip_filter.POLICY,           # access: allow/deny lists, before anything costs more
    cors.POLICY,                # access: preflights answered here (they carry no credentials)
    auth.POLICY,                # access: JWT / API keys, scopes; identity upstream (plugins see it)
    forward_auth.POLICY,        # access: an HTTP service decides (after auth: it may see the identity)
    plugins.POLICY,             # request_head, access, response_head, log
    ratelimit.POLICY,           # admission: local limits (native stage)
    consumer_limit.POLICY,      # admission: limits keyed by the identity auth found
    redis_rate_limit.POLICY,    # admission: Redis limits
    concurrency.POLICY,         # admission: concurrency slots
    retry.POLICY,               # failure: retries (native)
)
