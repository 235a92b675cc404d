"""Load-balancing policies end to end: a real gateway, three recording upstreams.

Every upstream answers with its own name (`server` in the JSON body), and
records each request it got, so the counts are checked on both sides.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from support import http_request

NAMES = ("a", "b", "c")


@pytest.fixture
def three(upstream_factory):
    return {name: upstream_factory(name) for name in NAMES}


def lb_config(ups, weights=(1, 1, 1), **cluster_keys) -> dict:
    endpoints = [{"url": ups[n].url, "weight": w} for n, w in zip(NAMES, weights)]
    return {
        "clusters": {"svc": {"endpoints": endpoints, **cluster_keys}},
        "routes": [{"name": "all", "match": {"prefix": "/"}, "cluster": "svc"}],
    }


def served_by(gw, target="/", headers=()) -> str:
    resp = http_request(gw.port, "GET", target, headers)
    assert resp.status == 200, resp.describe()
    return resp.json()["server"]


def recorded(ups) -> dict[str, int]:
    return {name: len(up.requests) for name, up in ups.items()}


@pytest.mark.timeout(120)
def test_weighted_round_robin_2_1_1(three, gateway_factory):
    gw = gateway_factory(lb_config(three, weights=(2, 1, 1)))
    n = 400
    seen = Counter(served_by(gw, f"/rr/{i}") for i in range(n))
    for name, share in (("a", 0.5), ("b", 0.25), ("c", 0.25)):
        assert abs(seen[name] / n - share) <= 0.05, seen
    assert recorded(three) == dict(seen)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", [1, 2])
def test_ring_hash_sends_each_user_to_one_upstream(three, gateway_factory, workers):
    config = lb_config(three, lb="ring_hash", hash_on="header:X-User")
    gw = gateway_factory(config, workers=workers)
    if workers > 1:
        assert len(gw.wait_children(workers)) == workers
    users = [f"user-{i}" for i in range(20)]
    where: dict[str, set[str]] = defaultdict(set)
    for round_ in range(10):
        for u in users:
            # Each request on a fresh connection, so with 2 workers both serve each user.
            where[u].add(served_by(gw, f"/u/{u}/{round_}", [("X-User", u)]))
    assert all(len(servers) == 1 for servers in where.values()), dict(where)
    # The upstreams agree: every request of a user reached the same one.
    for name, up in three.items():
        for req in up.requests:
            assert where[req.header("x-user")] == {name}
    assert sum(recorded(three).values()) == 200
    # 20 users over 3 equal endpoints: all of them get some.
    assert {s for servers in where.values() for s in servers} == set(NAMES)

    # A second gateway (another process, its own rings) maps every user the same.
    gw2 = gateway_factory(config, workers=1)
    for u in users:
        assert {served_by(gw2, "/again", [("x-user", u)])} == where[u]


@pytest.mark.timeout(120)
def test_ring_hash_without_the_header_uses_round_robin(three, gateway_factory):
    gw = gateway_factory(lb_config(three, lb="ring_hash", hash_on="header:X-User"))
    seen = Counter(served_by(gw, f"/anon/{i}") for i in range(30))
    assert seen == {"a": 10, "b": 10, "c": 10}


@pytest.mark.timeout(120)
def test_p2c_spreads_load_over_all(three, gateway_factory):
    gw = gateway_factory(lb_config(three, lb="p2c"))
    n = 300
    sequential = Counter(served_by(gw, f"/p2c/{i}") for i in range(n))
    # Idle between requests, so the draws decide: about a third each.
    for name in NAMES:
        assert sequential[name] >= n / 3 * 0.6, sequential
    with ThreadPoolExecutor(max_workers=12) as pool:
        concurrent = Counter(pool.map(lambda i: served_by(gw, f"/p2c-c/{i}"), range(n)))
    for name in NAMES:
        assert concurrent[name] >= n / 3 * 0.5, concurrent
    assert sum(recorded(three).values()) == 2 * n
