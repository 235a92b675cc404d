"""ClusterRuntime over real EndpointPools (no traffic): balancers skip
ejected or unhealthy endpoints, are rebuilt on state changes only, ring_hash
moves only the missing endpoint's keys, panic mode, discovery's set changes,
and the health checker's threshold logic."""
from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, replace

import pytest

from fastgw._native.codes import OK, STATUS_5XX
from fastgw.config.health_model import HealthCheck, OutlierDetection
from fastgw.config.model import Cluster, Endpoint
from fastgw.proxy.errors import ProxyError
from fastgw.upstream.health import HealthChecker, check_request
from fastgw.upstream.pool import ClusterRuntime

ENDPOINTS = tuple(Endpoint("127.0.0.1", 9001 + i) for i in range(3))


@dataclass
class FakeClient:
    peer_ip: bytes = b"127.0.0.1"


@dataclass
class FakeExchange:
    request_headers: list
    client: FakeClient


def user(name: str) -> FakeExchange:
    return FakeExchange([(b"x-user", name.encode())], FakeClient())


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def runtime(loop, lb="round_robin", endpoints=ENDPOINTS, **extra) -> ClusterRuntime:
    od = OutlierDetection(consecutive_5xx=1, base_ejection=30.0, max_ejected_percent=100)
    cluster = Cluster(name="users", endpoints=endpoints, lb=lb,
                      hash_on="header:x-user" if lb == "ring_hash" else None,
                      outlier_detection=od, **extra)
    return ClusterRuntime(loop, cluster)


def eject(rt: ClusterRuntime, index: int):
    pool = rt.pools[index]
    rt.report(pool, STATUS_5XX)
    assert rt.state_of(pool) == "ejected"
    return pool


def port(pool) -> int:
    return pool.endpoint.port


@pytest.mark.parametrize("lb", ["round_robin", "least_request", "p2c", "ring_hash"])
def test_balancers_skip_an_ejected_endpoint(loop, lb):
    rt = runtime(loop, lb)
    out = eject(rt, 1)
    balancer = rt.balancer
    picks = Counter(port(rt.pick(user(f"u{i}"))) for i in range(300))
    assert port(out) not in picks and set(picks) == {9001, 9003}, picks
    assert rt.balancer is balancer, "the balancer was rebuilt per request"
    rt.report(rt.pools[0], OK)  # an OK outcome changes no state: no rebuild
    assert rt.balancer is balancer
    assert [state for _, state in rt.endpoint_states()] == ["healthy", "ejected", "healthy"]


def test_a_plain_cluster_keeps_one_balancer_and_watches_nothing(loop):
    rt = ClusterRuntime(loop, Cluster(name="plain", endpoints=ENDPOINTS))
    assert rt.watches_outcomes is False and rt.checker is None and rt.outliers is None
    assert [state for _, state in rt.endpoint_states()] == ["healthy"] * 3


def test_returned_endpoint_gets_traffic_again(loop):
    rt = runtime(loop)
    out = eject(rt, 2)
    assert rt._return_timer is not None and rt._return_timer.when() == pytest.approx(loop.time() + 30, abs=1)
    rt.outliers.records[out].ejected_until = loop.time()  # as if 30 s had passed
    rt._returns_due()
    assert rt.state_of(out) == "healthy"
    assert {port(rt.pick(None)) for _ in range(6)} == {9001, 9002, 9003}


def test_no_healthy_endpoint_refuses_with_503(loop):
    rt = runtime(loop)
    for i in range(3):
        eject(rt, i)
    with pytest.raises(ProxyError) as caught:
        rt.pick(None)
    assert (caught.value.status, caught.value.code) == (503, "no_healthy_endpoint")
    assert "'users'" in caught.value.message


def test_panic_mode_uses_every_endpoint_below_the_threshold(loop):
    rt = runtime(loop, panic_threshold=50.0)
    eject(rt, 0)                             # 2 of 3 healthy: 67% >= 50%
    assert {port(rt.pick(None)) for _ in range(9)} == {9002, 9003}
    eject(rt, 1)                             # 1 of 3: 33% < 50%: all of them
    assert rt.panic
    assert Counter(port(rt.pick(None)) for _ in range(9)) == {9001: 3, 9002: 3, 9003: 3}
    eject(rt, 2)                             # none healthy: still all of them, no 503
    assert rt.pick(None) is not None


def test_ring_hash_moves_only_the_ejected_endpoints_keys(loop):
    rt = runtime(loop, "ring_hash")
    users = [f"user-{i}" for i in range(600)]
    before = {u: port(rt.pick(user(u))) for u in users}
    out = eject(rt, 0)
    after = {u: port(rt.pick(user(u))) for u in users}
    moved = [u for u in users if before[u] != after[u]]
    assert moved and all(before[u] == port(out) for u in moved)
    assert all(after[u] != port(out) for u in users)
    # Its keys spread over both others (the next point on the ring), not onto one.
    assert set(after[u] for u in moved) == {9002, 9003}


def test_breaker_admission_is_released_when_no_endpoint_is_healthy(loop):
    from fastgw.config.model import CircuitBreaker
    from fastgw.policy.circuit import HALF_OPEN
    rt = runtime(loop, circuit_breaker=CircuitBreaker(failures=100, half_open_probes=1))
    for i in range(3):
        eject(rt, i)
    rt.breaker.state = HALF_OPEN
    for _ in range(3):  # without the release, the second would be circuit_open
        with pytest.raises(ProxyError) as caught:
            rt.pick(None)
        assert caught.value.code == "no_healthy_endpoint"


def test_set_endpoints_adds_keeps_and_drains(loop):
    rt = runtime(loop, "ring_hash")
    kept, removed = rt.pools[0], rt.pools[2]
    eject(rt, 0)
    new = (Endpoint("127.0.0.1", 9001), Endpoint("127.0.0.1", 9002, weight=3), Endpoint("127.0.0.1", 9009))
    rt.set_endpoints(new)
    assert [p.endpoint for p in rt.pools] == list(new)
    assert rt.pools[0] is kept and rt.state_of(kept) == "ejected"   # state survives the change
    assert removed.max_idle == 0                                   # drained: no connection goes back idle
    assert removed not in rt.outliers.records
    picks = {port(rt.pick(user(f"u{i}"))) for i in range(200)}
    assert picks == {9002, 9009}
    balancer = rt.balancer
    rt.set_endpoints(new)                                          # the same set: nothing rebuilt
    assert rt.balancer is balancer


# --- the health checker's thresholds -----------------------------------------------

@dataclass(eq=False)
class FakePool:
    endpoint: Endpoint


def checker(**config) -> tuple[HealthChecker, list]:
    changes = []
    hc = HealthChecker(None, HealthCheck(path="/healthz", **config), "users", lambda: changes.append(1))
    return hc, changes


def test_first_check_decides_alone_then_thresholds_apply():
    hc, changes = checker(healthy_threshold=2, unhealthy_threshold=3)
    pool = FakePool(ENDPOINTS[0])
    hc.states[pool] = [True, False, 0, 0]          # as add() starts it: healthy, unchecked
    hc.result(pool, False, "connect failed")       # the first check fails: out at once
    assert not hc.is_healthy(pool) and changes == [1]
    hc.result(pool, True, "status 200")
    assert not hc.is_healthy(pool)                 # one pass of two
    hc.result(pool, True, "status 200")
    assert hc.is_healthy(pool) and changes == [1, 1]
    for _ in range(2):
        hc.result(pool, False, "status 500")
    hc.result(pool, True, "status 200")            # a pass resets the failure count
    for _ in range(2):
        hc.result(pool, False, "status 500")
    assert hc.is_healthy(pool)
    hc.result(pool, False, "status 500")           # the third in a row
    assert not hc.is_healthy(pool) and changes == [1, 1, 1]


def test_first_check_passing_keeps_it_healthy():
    hc, changes = checker()
    pool = FakePool(ENDPOINTS[0])
    hc.states[pool] = [True, False, 0, 0]
    hc.result(pool, True, "status 204")
    hc.result(pool, False, "timeout")
    assert hc.is_healthy(pool) and not changes


def test_check_request_bytes():
    check = HealthCheck(path="/healthz?full=1")
    assert check_request(check, "::1", 8080) == (
        b"GET /healthz?full=1 HTTP/1.1\r\nHost: [::1]:8080\r\nUser-Agent: fastgw-health-check\r\n"
        b"Accept: */*\r\nConnection: close\r\n\r\n")
    assert b"Host: api.internal\r\n" in check_request(replace(check, host="api.internal"), "10.0.0.1", 80)
    assert HealthCheck(path="/", expected_statuses=((200, 299), (404, 404))).expects(404)
    assert not HealthCheck(path="/").expects(500)
