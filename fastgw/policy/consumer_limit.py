"""Rate limits keyed by the authenticated identity (`key: consumer`: a JWT's
`sub` or an API key's consumer; `key: api_key`: the API key's id), as a stage
of phase admission after authentication set the identity.

They count in the same shared table as the native local limits (so they
hold for the host across workers) with the same limit ids, route.index << 16
| position in the route's rate_limits. A route's native limits run first;
then these, in order. Every one is checked; one that denies refunds those of
this stage that allowed (as the native limiter does) and answers 429 saying
which limit it was in X-RateLimit-Type (`consumer` or `api_key`), with
Retry-After and X-RateLimit-Limit/-Remaining. A request with no identity of
the kind (a JWT request under an `api_key` limit) is not counted by it; JWTs
without `sub` under a `consumer` limit share one counter.
"""
from __future__ import annotations

import math

from fastgw._native.errors import ProxyError
from fastgw._native.ratelimit import Limit
from fastgw.pipeline.phases import Phase
from fastgw.policy.auth import API_KEY_FIELD, CONSUMER_FIELD
from fastgw.policy.ratelimit import describe, limit_id

IDENTITY_PARTS = {"consumer": CONSUMER_FIELD, "api_key": API_KEY_FIELD}
ABSENT = b"\x01"   # the key of a JWT without `sub` (no identity text can be this byte)


def is_identity_limit(limit) -> bool:
    return any(part in IDENTITY_PARTS for part in limit.key)


class ConsumerLimitStage:
    def __init__(self, route, table):
        self.route = route.name
        self.limits = []
        for position, limit in enumerate(route.rate_limits):
            if not is_identity_limit(limit):
                continue
            (part,) = limit.key  # the config allows an identity part alone only
            native = Limit(table, limit_id(route, position), limit.algorithm, limit.rate_per_second,
                           limit.burst, limit.per)
            self.limits.append((native, IDENTITY_PARTS[part], part, describe(limit)))
        self.denied = 0

    def __repr__(self):
        return f"ConsumerLimitStage({self.route!r})"

    def admit(self, ex):
        fields = ex.log_fields or {}
        taken = []
        for native, field, kind, text in self.limits:
            ident = fields.get(field)
            if ident is not None:
                key = ident.encode("utf-8")
            elif kind == "consumer" and fields.get("auth") == "jwt":
                key = ABSENT  # a token without sub: all such requests share one counter, none escapes
            else:
                continue  # an api_key limit and a JWT request: not this limit's kind
            allowed, limit, remaining, _reset, retry_after = native.take(key)
            if allowed:
                taken.append((native, key))
                continue
            for other, other_key in taken:
                other.refund(other_key)
            self.denied += 1
            ex.rate_limit = 2
            headers = (b"Retry-After: %d\r\nX-RateLimit-Limit: %d\r\nX-RateLimit-Remaining: 0\r\n"
                       b"X-RateLimit-Type: %s\r\n" % (max(1, math.ceil(retry_after)), limit, kind.encode()))
            return ProxyError(429, "rate_limited", f"rate limit exceeded: {text}", headers)
        return None


class ConsumerLimitPolicy:
    name = "rate_limit_consumer"
    phases = (Phase.ADMISSION,)

    def prepare(self, gateway) -> None:
        pass

    def install(self, builder, route) -> None:
        if any(is_identity_limit(limit) for limit in route.rate_limits):
            builder.add_stage(Phase.ADMISSION, ConsumerLimitStage(route, builder.gateway.limit_table))


POLICY = ConsumerLimitPolicy()
