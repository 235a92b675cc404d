"""A route's rate limits, compiled once: `RouteLimiter.check(peer_ip, headers)`.

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

import math

from fastgw._native.ratelimit import Limit, LimitTable
from fastgw.config.model import Config, RateLimit, Route
from fastgw.policy.client_ip import client_ip

SEPARATOR = b"\x00"
ABSENT = b"\x01"  # a key part for a missing header
DENIED_STATUS = 429

_XFF = b"x-forwarded-for"
_PART_IP, _PART_CONST, _PART_HEADER = 0, 1, 2
_EPSILON = 1e-9  # so that 2.0000000001 s (float noise) rounds up to 2, not 3

_HEADER_TEMPLATE = (b"RateLimit-Limit: %d\r\nRateLimit-Remaining: %d\r\nRateLimit-Reset: %d\r\n"
                    b"X-RateLimit-Limit: %d\r\nX-RateLimit-Remaining: %d\r\nX-RateLimit-Reset: %d\r\n")


class Decision:
    """allowed; status (429 when denied, 0 when allowed); headers (CRLF-terminated
    lines); message (for the JSON error body; "" when allowed)."""
    __slots__ = ("allowed", "status", "headers", "message")

    def __init__(self, allowed: bool, status: int, headers: bytes, message: str):
        self.allowed = allowed
        self.status = status
        self.headers = headers
        self.message = message

    def __repr__(self) -> str:
        return f"Decision(allowed={self.allowed}, status={self.status}, headers={self.headers!r})"


def limit_id(route: Route, position: int) -> int:
    """The same in every worker and the master: derived from the config."""
    return route.index << 16 | position


def describe(limit: RateLimit) -> str:
    unit = {1.0: "second", 60.0: "minute", 3600.0: "hour"}.get(limit.per, f"{limit.per:g} s")
    return f"{limit.requests:g} requests per {unit} per {limit.key_text}"


def _ceil_seconds(seconds: float) -> int:
    return math.ceil(seconds - _EPSILON) if seconds > 0 else 0


class _Compiled:
    __slots__ = ("take", "refund", "parts", "single_ip", "message")

    def __init__(self, native: Limit, parts: tuple, message: str):
        self.take = native.take
        self.refund = native.refund
        self.parts = parts
        self.single_ip = parts == ((_PART_IP, None),)
        self.message = message


class RouteLimiter:
    def __init__(self, route: Route, table: LimitTable, trusted_proxies: tuple = ()):
        if not route.rate_limits:
            raise ValueError(f"route {route.name!r} has no rate limits")
        self.route = route
        self.trusted = tuple(trusted_proxies)
        headers: set[bytes] = set()
        uses_ip = False
        compiled = []
        for position, limit in enumerate(route.rate_limits):
            if limit.scope != "local":
                raise ValueError(f"rate limit scope {limit.scope!r} is not implemented")
            parts = []
            for part in limit.key:
                if part == "client_ip":
                    parts.append((_PART_IP, None))
                    uses_ip = True
                elif part == "route":
                    parts.append((_PART_CONST, route.name.encode()))
                else:
                    name = part.removeprefix("header:").encode("ascii")
                    parts.append((_PART_HEADER, name))
                    headers.add(name)
            native = Limit(table, limit_id(route, position), limit.algorithm,
                           limit.rate_per_second, limit.burst, limit.per)
            compiled.append(_Compiled(native, tuple(parts), f"rate limit exceeded: {describe(limit)}"))
        self._limits = tuple(compiled)
        self._single = compiled[0] if len(compiled) == 1 else None
        if uses_ip and self.trusted:
            headers.add(_XFF)
        self._uses_ip = uses_ip
        self._wanted = frozenset(headers)
        self._wanted_lengths = frozenset(len(name) for name in headers)

    # -- per request ------------------------------------------------------------
    def check(self, peer_ip: bytes, headers: list[tuple[bytes, bytes]]) -> Decision:
        values = self._header_values(headers) if self._wanted else None
        ip = peer_ip
        if self._uses_ip and self.trusted:
            ip = client_ip(peer_ip, values.get(_XFF, ()), self.trusted)
        single = self._single
        if single is not None:
            key = ip if single.single_ip else self._key(single.parts, ip, values)
            return self._decision(single, single.take(key))
        answers = []
        for limit in self._limits:
            key = ip if limit.single_ip else self._key(limit.parts, ip, values)
            answers.append((limit, key, limit.take(key)))
        worst = None
        if any(not answer[0] for _, _, answer in answers):
            for limit, key, answer in answers:
                if answer[0]:
                    limit.refund(key)
                elif worst is None or answer[4] > worst[1][4]:
                    worst = (limit, answer)
        else:
            for limit, _, answer in answers:
                if worst is None or answer[2] < worst[1][2]:
                    worst = (limit, answer)
        return self._decision(*worst)

    def _header_values(self, headers: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
        wanted, lengths = self._wanted, self._wanted_lengths
        values: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            if len(name) in lengths:
                name = name.lower()
                if name in wanted:
                    found = values.get(name)
                    if found is None:
                        values[name] = [value]
                    else:
                        found.append(value)
        return values

    @staticmethod
    def _key(parts: tuple, ip: bytes, values: dict[bytes, list[bytes]] | None) -> bytes:
        pieces = []
        for kind, data in parts:
            if kind == _PART_IP:
                pieces.append(ip)
            elif kind == _PART_CONST:
                pieces.append(data)
            else:
                found = values.get(data) if values is not None else None
                pieces.append(b", ".join(found) if found else ABSENT)
        return SEPARATOR.join(pieces)

    @staticmethod
    def _decision(limit: _Compiled, answer: tuple) -> Decision:
        allowed, most, remaining, reset, retry_after = answer
        reset_s = _ceil_seconds(reset)
        lines = _HEADER_TEMPLATE % (most, remaining, reset_s, most, remaining, reset_s)
        if allowed:
            return Decision(True, 0, lines, "")
        retry_s = max(1, _ceil_seconds(retry_after))
        return Decision(False, DENIED_STATUS, lines + b"Retry-After: %d\r\n" % retry_s,
                        f"{limit.message}; retry in {retry_s} s")


def create_table(config: Config) -> LimitTable | None:
    """The shared table, or None when no route has a limit. Call in the master
    before forking the workers: they must all use the same mapping."""
    if not any(route.rate_limits for route in config.routes):
        return None
    return LimitTable(config.server.rate_limit_slots)


def build_limiters(config: Config, table: LimitTable | None) -> dict[int, RouteLimiter]:
    """route.index -> RouteLimiter, for the routes that have limits."""
    limiters = {}
    for route in config.routes:
        if route.rate_limits:
            if table is None:
                raise ValueError("routes have rate limits but no LimitTable was created")
            limiters[route.index] = RouteLimiter(route, table, config.server.trusted_proxies)
    return limiters
