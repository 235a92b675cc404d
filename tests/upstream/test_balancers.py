"""Balancers over fake pools: distribution, load awareness, consistent hashing.

A fake pool has what balancers read: `.endpoint` (address, weight) and
`.active` (requests in flight). A fake exchange has `request_headers` and
`client.peer_ip`, as the native Exchange does.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import ip_network

import pytest

from fastgw.config.model import Endpoint
from fastgw.upstream.balancer import (LeastRequest, PowerOfTwo, RingHash, RoundRobin, make_balancer,
                                      stable_hash)


@dataclass(eq=False)
class FakePool:
    endpoint: Endpoint
    active: int = 0

    def __repr__(self) -> str:
        return f"<pool {self.endpoint.address} w{self.endpoint.weight} active {self.active}>"


@dataclass
class FakeClient:
    peer_ip: bytes = b"127.0.0.1"


@dataclass
class FakeExchange:
    request_headers: list = field(default_factory=list)
    client: FakeClient = field(default_factory=FakeClient)


def pools(*weights: int, base_port: int = 9001) -> list[FakePool]:
    return [FakePool(Endpoint("10.0.0.1", base_port + i, weight=w)) for i, w in enumerate(weights)]


def user(name: str, header: bytes = b"X-User") -> FakeExchange:
    return FakeExchange([(b"Host", b"h"), (header, name.encode())])


def ports(picks) -> Counter:
    return Counter(p.endpoint.port for p in picks)


# --- round robin, least request ------------------------------------------------

def test_round_robin_is_smooth_and_weighted():
    ps = pools(5, 1, 1)
    rr = RoundRobin(ps)
    order = [rr.pick(None).endpoint.port for _ in range(7)]
    assert order == [9001, 9001, 9002, 9001, 9003, 9001, 9001]
    counts = ports(rr.pick(None) for _ in range(7000))
    assert counts == {9001: 5000, 9002: 1000, 9003: 1000}


def test_balancers_handle_empty_and_single_clusters():
    for kind, extra in (("round_robin", {}), ("least_request", {}), ("p2c", {}),
                        ("ring_hash", {"hash_on": "header:x-user"})):
        assert make_balancer(kind, [], **extra).pick(user("a")) is None
        (only,) = pools(1)
        assert make_balancer(kind, [only], **extra).pick(user("a")) is only


def test_least_request_prefers_fewest_in_flight_per_weight():
    a, b, c = ps = pools(1, 1, 2)
    a.active, b.active, c.active = 3, 1, 4   # loads 3, 1, 2
    lr = LeastRequest(ps)
    assert {lr.pick(None).endpoint.port for _ in range(6)} == {9002}
    b.active = 5                             # loads 3, 5, 2
    assert lr.pick(None) is c
    a.active = b.active = c.active = 0       # idle: ties go round robin
    assert ports(lr.pick(None) for _ in range(30)) == {9001: 10, 9002: 10, 9003: 10}


# --- p2c ---------------------------------------------------------------------------

def test_p2c_prefers_the_less_loaded():
    a, b, c, d = ps = pools(1, 1, 1, 1)
    a.active, b.active, c.active, d.active = 10, 0, 5, 5
    p2c = PowerOfTwo(ps, random.Random(1))
    counts = ports(p2c.pick(None) for _ in range(6000))
    # a is never chosen (any other candidate beats it); b wins whenever drawn (half the draws).
    assert counts[9001] == 0
    assert 0.45 < counts[9002] / 6000 < 0.55
    assert counts[9003] + counts[9004] == 6000 - counts[9002]


def test_p2c_spreads_an_idle_cluster_by_weight():
    ps = pools(3, 1, 1, 1)
    p2c = PowerOfTwo(ps, random.Random(2))
    n = 12000
    counts = ports(p2c.pick(None) for _ in range(n))
    for port, weight in zip((9001, 9002, 9003, 9004), (3, 1, 1, 1)):
        assert abs(counts[port] / n - weight / 6) < 0.03, counts


def test_p2c_compares_load_per_weight():
    heavy, light = ps = pools(4, 1)
    heavy.active, light.active = 3, 1   # 0.75 vs 1 per unit of weight
    p2c = PowerOfTwo(ps, random.Random(3))
    assert {p2c.pick(None) for _ in range(200)} == {heavy}
    heavy.active = 8                     # 2 vs 1
    assert {p2c.pick(None) for _ in range(200)} == {light}


def test_p2c_under_simulated_load_respects_weights_roughly():
    # Requests arrive and each finishes after a fixed number of further
    # arrivals: in-flight counts build up, and traffic follows the weights.
    ps = pools(2, 1, 1)
    p2c = PowerOfTwo(ps, random.Random(4))
    in_flight: list[FakePool] = []
    counts: Counter = Counter()
    for _ in range(20000):
        pool = p2c.pick(None)
        pool.active += 1
        in_flight.append(pool)
        counts[pool.endpoint.port] += 1
        if len(in_flight) > 40:
            in_flight.pop(0).active -= 1
    assert abs(counts[9001] / 20000 - 0.5) < 0.05, counts
    assert abs(counts[9002] / 20000 - 0.25) < 0.05, counts


def test_p2c_workers_draw_independently():
    a = PowerOfTwo(pools(1, 1, 1, 1))
    b = PowerOfTwo(pools(1, 1, 1, 1))
    seq_a = [a.pick(None).endpoint.port for _ in range(50)]
    seq_b = [b.pick(None).endpoint.port for _ in range(50)]
    assert seq_a != seq_b


# --- ring hash -----------------------------------------------------------------------

def test_ring_hash_sticks_each_key_to_one_endpoint():
    ring = RingHash(pools(1, 1, 1, 1), "header:x-user")
    users = [f"user-{i}" for i in range(200)]
    first = {u: ring.pick(user(u)) for u in users}
    for _ in range(3):
        for u in users:
            assert ring.pick(user(u)) is first[u]
    # Header names compare case-insensitively, whatever the client sent.
    assert ring.pick(user("user-7", header=b"x-USER")) is first["user-7"]
    assert len(set(first.values())) == 4


def test_ring_hash_is_deterministic_across_independent_rings():
    # Two workers (or two runs) build their rings separately from the same config.
    one = RingHash(pools(1, 2, 1), "header:x-user")
    two = RingHash(pools(1, 2, 1), "header:x-user")
    assert one.points == two.points
    for i in range(2000):
        key = f"k{i}".encode()
        assert one.owner(key).endpoint == two.owner(key).endpoint
    # No per-process seed: a fixed key has a fixed hash (blake2b, 64 bits).
    assert stable_hash(b"user-1") == int.from_bytes(
        __import__("hashlib").blake2b(b"user-1", digest_size=8).digest(), "big")


def test_ring_hash_shares_follow_weights():
    ring = RingHash(pools(1, 1, 2), "header:x-user")
    counts = ports(ring.owner(f"key-{i}".encode()) for i in range(20000))
    for port, share in ((9001, 0.25), (9002, 0.25), (9003, 0.5)):
        assert abs(counts[port] / 20000 - share) < 0.06, counts


def test_adding_a_fifth_endpoint_moves_about_a_fifth_of_keys():
    four = pools(1, 1, 1, 1)
    five = four + pools(1, base_port=9005)
    before = RingHash(four, "header:x-user")
    after = RingHash(five, "header:x-user")
    keys = [f"user-{i}".encode() for i in range(10000)]
    moved = 0
    for key in keys:
        old, new = before.owner(key), after.owner(key)
        if old is not new:
            moved += 1
            # Keys only move to the new endpoint, never between the old ones.
            assert new.endpoint.port == 9005
    assert 0.15 <= moved / len(keys) <= 0.25, moved


def test_ring_hash_without_the_key_falls_back_to_round_robin():
    ps = pools(2, 1, 1)
    ring = RingHash(ps, "header:x-user")
    no_key = FakeExchange([(b"Host", b"h")])
    empty = FakeExchange([(b"X-User", b"")])
    order = [ring.pick(ex).endpoint.port for ex in [no_key, empty] * 2]
    assert order == [9001, 9002, 9003, 9001]  # smooth weighted round robin over 2:1:1


def test_ring_hash_on_a_cookie():
    ring = RingHash(pools(1, 1, 1), "cookie:session")
    def ex(cookie: bytes) -> FakeExchange:
        return FakeExchange([(b"Host", b"h"), (b"Cookie", cookie)])
    target = ring.owner(b"abc")
    assert ring.pick(ex(b"theme=dark; session=abc; lang=en")) is target
    assert ring.pick(FakeExchange([(b"cookie", b"theme=dark"), (b"COOKIE", b"session=abc")])) is target
    # Cookie names are case-sensitive; a lookalike name is not the key: round robin.
    fallback = [ring.pick(ex(b"Session=abc; xsession=abc")).endpoint.port for _ in range(3)]
    assert sorted(fallback) == [9001, 9002, 9003]


def test_ring_hash_on_client_ip():
    ring = RingHash(pools(1, 1, 1), "client_ip")
    def ex(peer: bytes, xff: bytes | None = None) -> FakeExchange:
        headers = [(b"X-Forwarded-For", xff)] if xff else []
        return FakeExchange(headers, FakeClient(peer))
    assert ring.pick(ex(b"192.0.2.7")) is ring.owner(b"192.0.2.7")
    # Without trusted proxies X-Forwarded-For is not believed.
    assert ring.pick(ex(b"192.0.2.7", b"198.51.100.1")) is ring.owner(b"192.0.2.7")
    trusting = RingHash(pools(1, 1, 1), "client_ip", (ip_network("10.0.0.0/8"),))
    assert trusting.pick(ex(b"10.1.1.1", b"198.51.100.1")) is trusting.owner(b"198.51.100.1")
    assert trusting.pick(ex(b"192.0.2.7", b"198.51.100.1")) is trusting.owner(b"192.0.2.7")


def test_make_balancer_requires_hash_on_for_ring_hash():
    with pytest.raises(ValueError):
        make_balancer("ring_hash", pools(1, 1))
    assert isinstance(make_balancer("p2c", pools(1, 1)), PowerOfTwo)
