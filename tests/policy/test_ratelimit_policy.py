"""RouteLimiter (fastgw/policy/ratelimit.py) and client_ip (fastgw/policy/client_ip.py)."""
from __future__ import annotations

import ipaddress

import pytest

from fastgw._native.ratelimit import LimitTable
from fastgw.config.model import RateLimit, Route, RouteMatch
from fastgw.policy.client_ip import client_ip
from fastgw.policy.ratelimit import RouteLimiter

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))


@pytest.mark.parametrize("peer, xff, expected", [
    (b"1.2.3.4", [b"9.9.9.9"], b"1.2.3.4"),                      # untrusted peer: header ignored
    (b"10.0.0.1", [b"9.9.9.9"], b"9.9.9.9"),
    (b"10.0.0.1", [b"6.6.6.6, 9.9.9.9, 10.1.1.1"], b"9.9.9.9"),  # skip trusted hops, stop at first untrusted
    (b"10.0.0.1", [b"6.6.6.6", b"9.9.9.9 , 127.0.0.1"], b"9.9.9.9"),  # several header lines, in order
    (b"10.0.0.1", [b"9.9.9.9, garbage, 10.1.1.1"], b"10.1.1.1"),  # malformed stops the walk
    (b"10.0.0.1", [b"1.2.3.4:80"], b"10.0.0.1"),
    (b"10.0.0.1", [b"10.2.2.2, 10.3.3.3"], b"10.2.2.2"),          # all trusted: the leftmost
    (b"10.0.0.1", [], b"10.0.0.1"),
    (b"10.0.0.1", [b"2001:DB8::1"], b"2001:db8::1"),             # normalised
])
def test_client_ip(peer, xff, expected):
    assert client_ip(peer, xff, TRUSTED) == expected


def test_client_ip_without_trusted_proxies_is_the_peer():
    assert client_ip(b"10.0.0.1", [b"9.9.9.9"], ()) == b"10.0.0.1"


def _route(*limits: RateLimit, index: int = 0) -> Route:
    return Route(name="api", index=index, match=RouteMatch(prefix="/"), cluster="c", rate_limits=limits)


@pytest.fixture
def table():
    return LimitTable(1024)


def test_single_limit_headers_and_denial(table):
    limiter = RouteLimiter(_route(RateLimit(key=("client_ip",), requests=1, per=1.0, burst=2)), table)
    first = limiter.check(b"1.1.1.1", [])
    assert (first.allowed, first.status, first.message) == (True, 0, "")
    assert first.headers == (b"RateLimit-Limit: 2\r\nRateLimit-Remaining: 1\r\nRateLimit-Reset: 1\r\n"
                             b"X-RateLimit-Limit: 2\r\nX-RateLimit-Remaining: 1\r\nX-RateLimit-Reset: 1\r\n")
    assert limiter.check(b"1.1.1.1", []).allowed
    denied = limiter.check(b"1.1.1.1", [])
    assert (denied.allowed, denied.status) == (False, 429)
    assert denied.headers == (b"RateLimit-Limit: 2\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: 2\r\n"
                              b"X-RateLimit-Limit: 2\r\nX-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: 2\r\n"
                              b"Retry-After: 1\r\n")
    assert denied.message == "rate limit exceeded: 1 requests per second per client_ip; retry in 1 s"
    assert limiter.check(b"2.2.2.2", []).allowed  # another client has its own bucket


def test_header_keys_are_case_insensitive_and_absent_is_one_key(table):
    limiter = RouteLimiter(_route(RateLimit(key=("header:x-api-key",), requests=1, per=60.0, burst=1)), table)
    assert limiter.check(b"1.1.1.1", [(b"X-API-KEY", b"a")]).allowed
    assert not limiter.check(b"2.2.2.2", [(b"x-api-key", b"a")]).allowed
    assert limiter.check(b"1.1.1.1", [(b"X-Api-Key", b"b")]).allowed
    assert limiter.check(b"1.1.1.1", []).allowed
    assert not limiter.check(b"3.3.3.3", []).allowed  # absent header: one shared bucket


def test_combined_key_and_trusted_proxy(table):
    limiter = RouteLimiter(_route(RateLimit(key=("client_ip", "header:x-tenant"), requests=1, per=60.0, burst=1)),
                           table, TRUSTED)
    assert limiter.check(b"10.0.0.1", [(b"X-Forwarded-For", b"9.9.9.9"), (b"X-Tenant", b"t")]).allowed
    assert not limiter.check(b"10.0.0.2", [(b"X-Forwarded-For", b"9.9.9.9"), (b"X-Tenant", b"t")]).allowed
    assert limiter.check(b"10.0.0.1", [(b"X-Forwarded-For", b"8.8.8.8"), (b"X-Tenant", b"t")]).allowed
    assert limiter.check(b"10.0.0.1", [(b"X-Forwarded-For", b"9.9.9.9"), (b"X-Tenant", b"u")]).allowed


def test_a_denial_by_one_limit_does_not_consume_the_others(table):
    per_second = RateLimit(key=("client_ip",), requests=10, per=1.0, burst=10)
    per_minute = RateLimit(key=("client_ip",), requests=2, per=60.0, burst=2)
    limiter = RouteLimiter(_route(per_second, per_minute), table)
    answers = [limiter.check(b"1.1.1.1", []) for _ in range(5)]
    assert [a.allowed for a in answers] == [True, True, False, False, False]
    # allowed: the lowest remaining answers (the per-minute one)
    assert b"RateLimit-Limit: 2\r\nRateLimit-Remaining: 1\r\n" in answers[0].headers
    # denied by the per-minute limit: Retry-After is its 30 s
    assert b"Retry-After: 30\r\n" in answers[2].headers
    # the per-second bucket was refunded for each denial: 8 of its 10 are left
    alone = RouteLimiter(_route(per_second), table)
    assert b"RateLimit-Remaining: 7\r\n" in alone.check(b"1.1.1.1", []).headers


def test_route_key_counts_everyone_together(table):
    limiter = RouteLimiter(_route(RateLimit(key=("route",), requests=1, per=60.0, burst=2), index=3), table)
    assert [limiter.check(ip, []).allowed for ip in (b"1.1.1.1", b"2.2.2.2", b"3.3.3.3")] == [True, True, False]


def test_repeated_header_lines_are_one_combined_value(table):
    limiter = RouteLimiter(_route(RateLimit(key=("header:x-key",), requests=1, per=60.0, burst=1)), table)
    assert limiter.check(b"1.1.1.1", [(b"X-Key", b"a"), (b"Host", b"h"), (b"x-key", b"b")]).allowed
    assert not limiter.check(b"1.1.1.1", [(b"x-key", b"a, b")]).allowed
    assert limiter.check(b"1.1.1.1", [(b"x-key", b"")]).allowed  # empty is a value, not absent
    assert limiter.check(b"1.1.1.1", []).allowed


def test_only_letters_fold_in_header_names(table):
    # '^' | 0x20 is '~': a bitwise fold would take X-A~B for X-A^B.
    limiter = RouteLimiter(_route(RateLimit(key=("header:x-a^b",), requests=1, per=60.0, burst=1)), table)
    assert limiter.check(b"1.1.1.1", [(b"X-A~B", b"v")]).allowed   # counted as absent
    assert not limiter.check(b"1.1.1.1", []).allowed
    assert limiter.check(b"1.1.1.1", [(b"X-A^B", b"v")]).allowed
    assert not limiter.check(b"1.1.1.1", [(b"x-a^b", b"v")]).allowed


def test_forwarded_for_is_ignored_without_trusted_proxies(table):
    limiter = RouteLimiter(_route(RateLimit(key=("client_ip",), requests=1, per=60.0, burst=1)), table)
    assert limiter.check(b"10.0.0.1", [(b"X-Forwarded-For", b"9.9.9.9")]).allowed
    assert not limiter.check(b"10.0.0.1", [(b"X-Forwarded-For", b"8.8.8.8")]).allowed
    assert limiter.check(b"9.9.9.9", []).allowed


def test_route_and_header_key_with_a_sliding_window(table):
    limiter = RouteLimiter(_route(RateLimit(key=("route", "header:x-tenant"), requests=2, per=3600.0, burst=2,
                                            algorithm="sliding_window")), table)
    first = limiter.check(b"1.1.1.1", [(b"X-Tenant", b"t")])
    assert b"RateLimit-Limit: 2\r\nRateLimit-Remaining: 1\r\n" in first.headers
    assert limiter.check(b"2.2.2.2", [(b"X-Tenant", b"t")]).allowed
    denied = limiter.check(b"3.3.3.3", [(b"X-Tenant", b"t")])
    assert (denied.allowed, denied.status) == (False, 429)
    retry = int(denied.headers.split(b"Retry-After: ")[1].split(b"\r\n")[0])
    assert 1800 <= retry <= 5400  # once this window is the previous one, half of it must pass
    assert denied.message.endswith(f"; retry in {retry} s")
    assert limiter.check(b"3.3.3.3", [(b"X-Tenant", b"u")]).allowed


def test_large_numbers_and_decision_repr(table):
    limiter = RouteLimiter(_route(RateLimit(key=("client_ip",), requests=1_000_000, per=1.0, burst=1_000_000)),
                           table)
    decision = limiter.check(b"1.1.1.1", [])
    assert decision.headers == (b"RateLimit-Limit: 1000000\r\nRateLimit-Remaining: 999999\r\nRateLimit-Reset: 1\r\n"
                                b"X-RateLimit-Limit: 1000000\r\nX-RateLimit-Remaining: 999999\r\n"
                                b"X-RateLimit-Reset: 1\r\n")
    assert repr(decision).startswith("Decision(allowed=True, status=0, headers=b'RateLimit-Limit: 1000000")
    assert limiter.route.name == "api"
