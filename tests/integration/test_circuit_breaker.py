"""clusters.NAME.circuit_breaker end to end: a real gateway in front of an
upstream that fails, counting what actually reaches the upstream."""
from __future__ import annotations

import time

import pytest

from support import assert_gateway_error, cluster, free_port, http_request, route

OPEN_FOR = 0.5


@pytest.fixture
def breaker_gateway(upstream, gateway_factory):
    # Retries off: each request is exactly one try for the breaker to count.
    config = {
        "clusters": {
            "main": cluster(upstream.url, circuit_breaker={"failures": 3, "open_for": f"{OPEN_FOR}s"}),
            "plain": cluster(upstream.url),
        },
        "routes": [
            route("plain", "plain", prefix="/plain", retries="off"),
            route("all", "main", prefix="/", retries="off"),
        ],
    }
    return gateway_factory(config), upstream


def trip(gw, up) -> None:
    for _ in range(3):
        resp = http_request(gw.port, "GET", "/status/500")
        assert resp.status == 500, resp.describe()  # the upstream's own 500, passed through


_barriers = 0


def assert_refused(gw, up, path: str = "/fixed") -> None:
    global _barriers
    before = len(up.heads)
    resp = http_request(gw.port, "GET", path)
    err = assert_gateway_error(resp, 503, "circuit_open")
    assert "main" in err["message"]
    assert resp.header("retry-after") == "1"  # ceil of at most 0.5 s
    # A positive barrier instead of a sleep: a later request to the same
    # upstream through the breaker-less cluster. Once the upstream has its
    # head, a refused request the gateway had forwarded (before answering)
    # would have arrived too; the barrier is the only new head.
    _barriers += 1
    barrier = f"/plain/barrier-{_barriers}"
    assert http_request(gw.port, "GET", barrier).status == 200
    assert up.wait_for(lambda: any(r.target == barrier for r in up.heads))
    assert [r.target for r in up.heads[before:]] == [barrier], \
        "a request went to the upstream while the circuit was open"


@pytest.mark.timeout(30)
def test_opens_after_failures_then_a_successful_probe_closes(breaker_gateway):
    gw, up = breaker_gateway
    trip(gw, up)
    assert len(up.requests) == 3
    assert_refused(gw, up)
    assert_refused(gw, up, "/status/500")
    # Another cluster on the same upstream has no breaker: unaffected.
    assert http_request(gw.port, "GET", "/plain/fixed").status == 200
    count = len(up.requests)

    time.sleep(OPEN_FOR + 0.1)
    resp = http_request(gw.port, "GET", "/fixed")  # the half-open probe
    assert resp.status == 200, resp.describe()
    assert len(up.requests) == count + 1
    # Closed again, with fresh counts: two failures don't reopen it.
    for _ in range(2):
        assert http_request(gw.port, "GET", "/status/500").status == 500
    assert http_request(gw.port, "GET", "/fixed").status == 200
    assert len(up.requests) == count + 4
    assert "'main' opened" in gw.stderr() and "'main' closed" in gw.stderr()


@pytest.mark.timeout(30)
def test_a_failing_probe_reopens(breaker_gateway):
    gw, up = breaker_gateway
    trip(gw, up)
    assert_refused(gw, up)
    time.sleep(OPEN_FOR + 0.1)
    resp = http_request(gw.port, "GET", "/status/503")  # the probe fails
    assert resp.status == 503 and resp.header("retry-after") is None, resp.describe()
    assert len(up.requests) == 5  # 3 failures, 1 barrier, the probe
    assert_refused(gw, up)
    time.sleep(OPEN_FOR + 0.1)
    assert http_request(gw.port, "GET", "/fixed").status == 200
    assert len(up.requests) == 7  # + a barrier, the probe


@pytest.mark.timeout(30)
def test_refused_port_opens_the_circuit(gateway_factory):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    gw = gateway_factory({
        "clusters": {"dead": cluster(dead, circuit_breaker={"failures": 2, "open_for": "10s"})},
        "routes": [route("all", "dead", prefix="/", retries="off")],  # each request one try
    })
    for _ in range(2):
        assert_gateway_error(http_request(gw.port, "GET", "/x"), 502, "upstream_connect_failed")
    resp = http_request(gw.port, "GET", "/x")
    assert_gateway_error(resp, 503, "circuit_open")
    assert resp.header("retry-after") in {"9", "10"}
    # A request with a body is refused the same way.
    resp = http_request(gw.port, "POST", "/x", body=b"hello")
    assert_gateway_error(resp, 503, "circuit_open")


def _ratio_gateway(gateway_factory, upstream, **breaker):
    return gateway_factory({
        "clusters": {"main": cluster(upstream.url, circuit_breaker={"open_for": "30s", **breaker})},
        "routes": [route("all", "main", prefix="/", retries="off")],   # each request one try
    })


@pytest.mark.timeout(30)
def test_failure_ratio_opens_on_the_share_of_the_last_window(upstream, gateway_factory):
    gw = _ratio_gateway(gateway_factory, upstream, failure_ratio=0.6, window=10, min_requests=10)
    # Alternating: 5 of the last 10 failed, below 0.6, and never two in a row.
    for i in range(10):
        status = http_request(gw.port, "GET", "/fixed" if i % 2 == 0 else "/status/500").status
        assert status == (200 if i % 2 == 0 else 500)
    # One more failure pushes the oldest success out: 6 of the last 10 -> open.
    assert http_request(gw.port, "GET", "/status/500").status == 500
    assert len(upstream.requests) == 11
    resp = http_request(gw.port, "GET", "/fixed")
    assert_gateway_error(resp, 503, "circuit_open")
    assert resp.header("retry-after") in {"29", "30"}
    assert len(upstream.requests) == 11, "the open circuit let a request through"
    assert "'main' opened (6 of the last 10 requests failed)" in gw.stderr()


@pytest.mark.timeout(30)
def test_failure_ratio_waits_for_min_requests(upstream, gateway_factory):
    gw = _ratio_gateway(gateway_factory, upstream, failure_ratio=0.5, window=20, min_requests=10)
    for _ in range(9):          # all fail, but fewer than min_requests are counted
        assert http_request(gw.port, "GET", "/status/503").status == 503
    assert http_request(gw.port, "GET", "/status/503").status == 503    # the 10th opens it
    assert_gateway_error(http_request(gw.port, "GET", "/fixed"), 503, "circuit_open")
    assert len(upstream.requests) == 10
    assert "'main' opened (10 of the last 10 requests failed)" in gw.stderr()
