"""A route's rate limits, compiled once: `RouteLimiter.check(peer_ip, headers)`.

This module turns the configuration into native `Limit`s and key parts; the
per-request work (header scan, keys, takes, refunds, answer headers) is the
native base class in fastgw/_native/limiter.pyx.

Keys
    A limit counts per key: `client_ip` (see client_ip.py), `route` (one
    counter for the whole route), `header:NAME` (the header's values joined
    with ", " as HTTP combines them), or several joined with `+`. The key
    bytes are the parts joined with NUL, which cannot occur in a header value
    (the request parser refuses control characters). A request without the
    header is counted under one shared "absent" key for that limit (a byte
    that cannot occur either), so omitting an API key header does not escape
    the limit. The limit's id (route index << 16 | position) seeds the table
    hash, so equal key bytes under two limits are two counters.

Several limits on one route
    Every limit is checked. A request is allowed only if all allow it. A
    denial by one limit does not use up the others: limits that allowed are
    refunded (the table's `refund`), so a client throttled by a per-minute
    limit does not also drain its per-second bucket. Between the take and the
    refund (a few hundred ns) another worker may see one token fewer: that can
    only deny, never over-admit. The answer's headers come from the most
    restrictive limit: a denying one beats an allowing one; among denials the
    longest retry_after; among allows the lowest remaining.

Response headers (ready to append to the response head)
    RateLimit-Limit / RateLimit-Remaining / RateLimit-Reset (draft
    ietf-httpapi-ratelimit-headers: limit, remaining requests, seconds until
    the allowance is whole again, rounded up), the same three as X-RateLimit-*
    (Reset in delta seconds, not a timestamp), and Retry-After (whole seconds,
    rounded up, at least 1) on a 429.
"""
from __future__ import annotations

from fastgw._native import limiter as _native
from fastgw._native.limiter import Decision  # noqa: F401  (re-exported: what `check` answers)
from fastgw._native.proxy import LocalLimit
from fastgw._native.ratelimit import Limit, LimitTable
from fastgw.config.model import Config, RateLimit, Route
from fastgw.pipeline.phases import Phase
from fastgw.policy.client_ip import client_ip

SEPARATOR = _native.SEPARATOR
ABSENT = _native.ABSENT  # a key part for a missing header
DENIED_STATUS = _native.DENIED_STATUS


def limit_id(route: Route, position: int) -> int:
    """The same in every worker and the master: derived from the config."""
    return route.index << 16 | position


def describe(limit: RateLimit) -> str:
    unit = {1.0: "second", 60.0: "minute", 3600.0: "hour"}.get(limit.per, f"{limit.per:g} s")
    return f"{limit.requests:g} requests per {unit} per {limit.key_text}"


def key_parts(route: Route, limit: RateLimit) -> tuple:
    """A limit's key as the native parts: (PART_IP, None), (PART_CONST, bytes)
    or (PART_HEADER, lower-case name)."""
    parts = []
    for part in limit.key:
        if part == "client_ip":
            parts.append((_native.PART_IP, None))
        elif part == "route":
            parts.append((_native.PART_CONST, route.name.encode()))
        else:
            parts.append((_native.PART_HEADER, part.removeprefix("header:").lower().encode("ascii")))
    return tuple(parts)


class RouteLimiter(_native.RouteLimiter):
    """A route's limits over `table`. `check(peer_ip, headers) -> Decision`
    runs natively (fastgw/_native/limiter.pyx); X-Forwarded-For is only read
    (by client_ip) when `trusted_proxies` is not empty."""
    __slots__ = ("route",)

    def __init__(self, route: Route, table: LimitTable, trusted_proxies: tuple = ()):
        if not route.rate_limits:
            raise ValueError(f"route {route.name!r} has no rate limits")
        compiled = []
        for position, limit in enumerate(route.rate_limits):
            if _identity(limit):
                continue  # counted by policy/consumer_limit.py once auth has run
            if limit.scope != "local":
                raise ValueError(f"rate limit scope {limit.scope!r} is not implemented")
            native = Limit(table, limit_id(route, position), limit.algorithm,
                           limit.rate_per_second, limit.burst, limit.per)
            compiled.append((native, key_parts(route, limit), f"rate limit exceeded: {describe(limit)}"))
        super().__init__(compiled, tuple(trusted_proxies), client_ip)
        self.route = route


def _identity(limit: RateLimit) -> bool:
    return "consumer" in limit.key or "api_key" in limit.key


def has_local_limits(route: Route) -> bool:
    """Redis-scoped limits are an admission stage instead (fastgw/policy/redis_limit.py)."""
    return any(limit.scope == "local" for limit in route.rate_limits)


def has_native_limits(route: Route) -> bool:
    """Local limits the native RouteLimiter counts (identity-keyed ones are
    a Python stage: fastgw/policy/consumer_limit.py)."""
    return any(limit.scope == "local" and not _identity(limit) for limit in route.rate_limits)


def create_table(config: Config) -> LimitTable | None:
    """The shared table, or None when no route has a local limit. Call in the
    master before forking the workers: they must all use the same mapping."""
    if not any(has_local_limits(route) for route in config.routes):
        return None
    return LimitTable(config.server.rate_limit_slots)


def build_limiters(config: Config, table: LimitTable | None) -> dict[int, RouteLimiter]:
    """route.index -> RouteLimiter, for the routes that have local limits."""
    limiters = {}
    for route in config.routes:
        if has_native_limits(route):
            if table is None:
                raise ValueError("routes have rate limits but no LimitTable was created")
            limiters[route.index] = RouteLimiter(route, table, config.server.trusted_proxies)
    return limiters


class LocalRateLimitPolicy:
    """`scope: local` limits as a stage of phase admission: the native
    LocalLimit, which the exchange checks without a Python call."""
    name = "rate_limit_local"
    phases = (Phase.ADMISSION,)

    def prepare(self, gateway) -> None:
        gateway.limiters = build_limiters(gateway.config, gateway.limit_table)

    def install(self, builder, route) -> None:
        limiter = builder.gateway.limiters.get(route.index)
        if limiter is not None:
            builder.add_stage(Phase.ADMISSION, LocalLimit(limiter))


POLICY = LocalRateLimitPolicy()
