"""Load-balancing policies end to end: a real gateway, three recording upstreams.

Every upstream answers with its own name (`server` in the JSON body), and
records each request it got, so the counts are checked on both sides.
"""
from __future__ import annotations

import json
import socket
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from support import RawClient, build_request, http_request

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


@pytest.mark.timeout(60)
def test_least_request_takes_the_fewest_in_flight_per_weight(three, gateway_factory):
    gw = gateway_factory(lb_config(three, weights=(2, 1, 1), lb="least_request"))
    held = []
    try:
        # Three requests held open at the upstreams: each goes to an endpoint
        # with none in flight, so one lands on each.
        for i in range(3):
            client = RawClient(gw.port)
            client.request("GET", f"/hang/{i}")
            held.append(client)
            assert _wait_any(three, f"/hang/{i}"), f"/hang/{i} never reached an upstream"
        assert {name: sum(r.path.startswith("/hang/") for r in up.heads) for name, up in three.items()} == \
            {"a": 1, "b": 1, "c": 1}
        # Now one in flight each: a (weight 2) has 1/2 per unit of weight, b
        # and c 1/1, so every further request goes to a.
        seen = Counter(served_by(gw, f"/lr/{i}") for i in range(30))
        assert seen == {"a": 30}, seen
    finally:
        for client in held:
            client.close()
    # Once the held requests are gone, the counts fall back: a free endpoint is
    # chosen again (round robin would have given b and c ten each above).
    assert all(up.wait_for(lambda up=up: up.active == 0) for up in three.values())
    after = Counter(served_by(gw, f"/lr-after/{i}") for i in range(30))
    assert set(after) == set(NAMES), after


def _wait_any(ups, path: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(any(r.path == path for r in up.heads) for up in ups.values()):
            return True
        time.sleep(0.01)
    return False


@pytest.mark.timeout(120)
def test_ring_hash_on_a_cookie(three, gateway_factory):
    gw = gateway_factory(lb_config(three, lb="ring_hash", hash_on="cookie:session"))
    users = [f"s{i}" for i in range(20)]
    where: dict[str, set[str]] = defaultdict(set)
    for round_ in range(5):
        for u in users:
            # Other cookies around it change nothing: the key is the named one.
            cookie = f"theme=t{round_}; session={u}; lang=x{round_}"
            where[u].add(served_by(gw, f"/c/{u}", [("Cookie", cookie)]))
    assert all(len(servers) == 1 for servers in where.values()), dict(where)
    assert {s for servers in where.values() for s in servers} == set(NAMES)
    # Cookie names are case-sensitive: `Session` is not the key, so round robin.
    seen = Counter(served_by(gw, "/c/other", [("Cookie", "Session=s1")]) for _ in range(30))
    assert seen == {"a": 10, "b": 10, "c": 10}, seen


def _served_from(gw, source_ip: str, headers=()) -> str:
    """One request from a chosen loopback source address (127.0.0.0/8 is all
    local on Linux), so the gateway sees that peer IP."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5, source_address=(source_ip, 0)) as sock:
        sock.sendall(build_request("GET", "/ip", [*headers, ("Connection", "close")]))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)["server"]


@pytest.mark.timeout(120)
def test_ring_hash_on_client_ip(three, gateway_factory):
    gw = gateway_factory(lb_config(three, lb="ring_hash", hash_on="client_ip"))
    sources = [f"127.0.0.{i}" for i in range(2, 22)]
    where = {ip: {_served_from(gw, ip) for _ in range(4)} for ip in sources}
    assert all(len(servers) == 1 for servers in where.values()), where
    assert {s for servers in where.values() for s in servers} == set(NAMES)
    # X-Forwarded-For from a peer not in server.trusted_proxies is not believed:
    # the key stays the peer's address.
    peer = sources[0]
    forged = {_served_from(gw, peer, [("X-Forwarded-For", f"10.9.{i}.1")]) for i in range(12)}
    assert forged == where[peer]


@pytest.mark.timeout(120)
def test_ring_hash_on_client_ip_behind_a_trusted_proxy(three, gateway_factory):
    config = lb_config(three, lb="ring_hash", hash_on="client_ip")
    config["server"] = {"trusted_proxies": ["127.0.0.1"]}
    gw = gateway_factory(config)
    clients = [f"10.0.{i}.7" for i in range(20)]
    where: dict[str, set[str]] = defaultdict(set)
    for _ in range(4):
        for ip in clients:
            where[ip].add(served_by(gw, "/xff", [("X-Forwarded-For", f"{ip}, 127.0.0.1")]))
    assert all(len(servers) == 1 for servers in where.values()), dict(where)
    assert {s for servers in where.values() for s in servers} == set(NAMES)
