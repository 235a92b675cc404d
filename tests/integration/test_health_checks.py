"""clusters.NAME.health_check, outlier_detection and panic_threshold end to
end: the real gateway in front of several real upstreams that fail, die and
come back. Intervals are short so every test ends within seconds.

Routes have `retries: off` where a test counts what reached a dead endpoint:
a retry on another endpoint would hide the 502 the test looks for."""
from __future__ import annotations

import time
from collections import Counter

import pytest

from support import UpstreamServer, assert_gateway_error, cluster, http_request, route, wait_until

CHECK_PATH = "/healthz"


def served(up: UpstreamServer) -> list:
    """Requests the upstream answered for clients (not health checks)."""
    return [r for r in up.requests if r.path != CHECK_PATH]


def spread(gw, count: int, path: str = "/x") -> Counter:
    """Statuses of `count` requests, one connection each."""
    return Counter(http_request(gw.port, "GET", path).status for _ in range(count))


def restart(up: UpstreamServer) -> UpstreamServer:
    """A new upstream on the same address (the old one was stopped)."""
    return UpstreamServer(up.name, port=up.port).start()


def health_config(*ups, lb: str = "round_robin", **extra) -> dict:
    check = {"path": CHECK_PATH, "interval": "100ms", "timeout": "300ms",
             "healthy_threshold": 2, "unhealthy_threshold": 2}
    return {
        "clusters": {"c": cluster(*(u.url for u in ups), lb=lb, health_check=check, **extra)},
        "routes": [route("all", "c", prefix="/", retries="off")],
    }


# --- outlier detection ----------------------------------------------------------

@pytest.mark.timeout(40)
def test_failing_endpoint_is_ejected_then_returns_after_its_time(upstream_factory, gateway_factory):
    a, b, c = (upstream_factory(n) for n in "abc")
    gw = gateway_factory({
        "clusters": {"c": cluster(a.url, b.url, c.url, outlier_detection={
            "consecutive_5xx": 3, "base_ejection": "2s", "max_ejection": "10s"})},
        "routes": [route("all", "c", prefix="/")],
    })
    b.status_override = 500
    statuses = spread(gw, 12)             # round robin: b answers 4, the 3rd ejects it
    ejected_by = time.monotonic()
    assert len(served(b)) == 3, [r.target for r in served(b)]
    assert statuses == {200: 9, 500: 3}, statuses
    assert "endpoint 127.0.0.1:%d ejected for 2s (3 consecutive 5xx responses; ejection 1" % b.port in gw.stderr()

    assert spread(gw, 10) == {200: 10}    # all go to a and c while b is out
    assert len(served(b)) == 3
    assert time.monotonic() - ejected_by < 2, "too slow to check the ejection (machine overloaded?)"

    back = "endpoint 127.0.0.1:%d back in service" % b.port
    assert wait_until(lambda: back in gw.stderr(), 5), gw.stderr()
    assert time.monotonic() - ejected_by > 1.5, "back before its ejection time"
    statuses = spread(gw, 12)             # b is back, still failing: ejected again, for 4s now
    assert len(served(b)) == 6 and statuses[500] == 3, statuses
    assert "ejected for 4s (3 consecutive 5xx responses; ejection 2" in gw.stderr()

    b.status_override = None              # b recovers; after its 4s it serves again
    assert spread(gw, 6) == {200: 6} and len(served(b)) == 6, "b served while ejected"
    assert wait_until(lambda: gw.stderr().count(back) == 2, 6), gw.stderr()
    assert spread(gw, 9) == {200: 9}
    assert len(served(b)) == 9, "b did not return after its ejection time"


@pytest.mark.timeout(30)
def test_refused_connections_eject_and_the_share_is_capped(upstream_factory, gateway_factory):
    """Two of three endpoints die; with max_ejected_percent 50 only one (of
    three: 1.5, rounded down) may be out, so the other dead one keeps getting
    its share of traffic (502s) instead of the whole cluster being ejected."""
    a, b, c = (upstream_factory(n) for n in "abc")
    gw = gateway_factory({
        "clusters": {"c": cluster(a.url, b.url, c.url, outlier_detection={
            "consecutive_connect_failures": 2, "base_ejection": "30s", "max_ejected_percent": 50})},
        "routes": [route("all", "c", prefix="/", retries="off")],
    })
    b.stop()
    c.stop()
    statuses = spread(gw, 12)
    log = gw.stderr()
    ejected = [up for up in (b, c) if f"endpoint 127.0.0.1:{up.port} ejected for 30s" in log]
    assert len(ejected) == 1, log
    still_in = c if ejected == [b] else b
    statuses = spread(gw, 10)
    assert statuses == {200: 5, 502: 5}, statuses   # a and the one dead endpoint left, alternately
    assert f"endpoint 127.0.0.1:{still_in.port} ejected" not in gw.stderr()


# --- active health checks -------------------------------------------------------

@pytest.mark.timeout(40)
def test_killed_upstream_is_marked_unhealthy_and_returns_when_restarted(upstream_factory, gateway_factory):
    a, b, c = (upstream_factory(n) for n in "abc")
    gw = gateway_factory(health_config(a, b, c))
    assert wait_until(lambda: all(any(r.path == CHECK_PATH for r in up.requests) for up in (a, b, c)), 5), \
        "the health checks did not reach every endpoint"
    check = next(r for r in b.requests if r.path == CHECK_PATH)
    assert check.method == "GET" and check.header("host") == f"127.0.0.1:{b.port}"
    assert spread(gw, 6) == {200: 6}

    b.stop()
    assert wait_until(lambda: f"endpoint 127.0.0.1:{b.port} is unhealthy" in gw.stderr(), 5), gw.stderr()
    assert "2 failed checks; last: connect failed" in gw.stderr()
    assert spread(gw, 12) == {200: 12}, "a request went to the dead endpoint"

    b2 = restart(b)
    try:
        assert wait_until(lambda: f"endpoint 127.0.0.1:{b.port} is healthy again" in gw.stderr(), 5), gw.stderr()
        assert spread(gw, 9) == {200: 9}
        assert len(served(b2)) == 3, "the restarted endpoint got no traffic back"
    finally:
        b2.stop()


@pytest.mark.timeout(30)
def test_failing_status_and_expected_statuses(upstream_factory, gateway_factory):
    """A check that answers outside expected_statuses fails; a custom Host is sent."""
    a, b = upstream_factory("a"), upstream_factory("b")
    config = health_config(a, b)
    config["clusters"]["c"]["health_check"].update(expected_statuses=[200], host="health.internal")
    gw = gateway_factory(config)
    b.status_override = 204                # 2xx, but not 200: fails this check
    assert wait_until(lambda: f"endpoint 127.0.0.1:{b.port} is unhealthy" in gw.stderr(), 5), gw.stderr()
    assert "last: status 204" in gw.stderr()
    assert all(r.header("host") == "health.internal" for r in b.requests if r.path == CHECK_PATH)
    assert spread(gw, 6) == {200: 6} and not served(b)


@pytest.mark.timeout(30)
def test_no_healthy_endpoint_answers_503_and_recovers(upstream_factory, gateway_factory):
    a, b = upstream_factory("a"), upstream_factory("b")
    gw = gateway_factory(health_config(a, b))
    a.stop()
    b.stop()
    assert wait_until(lambda: gw.stderr().count("is unhealthy") == 2, 5), gw.stderr()
    resp = http_request(gw.port, "GET", "/x")
    err = assert_gateway_error(resp, 503, "no_healthy_endpoint")
    assert "'c'" in err["message"]
    # POST is refused the same way, and the gateway keeps serving.
    assert_gateway_error(http_request(gw.port, "POST", "/x", body=b"hi"), 503, "no_healthy_endpoint")

    a2 = restart(a)
    try:
        assert wait_until(lambda: "is healthy again" in gw.stderr(), 5), gw.stderr()
        assert spread(gw, 4) == {200: 4}
    finally:
        a2.stop()


@pytest.mark.timeout(30)
def test_panic_mode_balances_over_all_endpoints_below_the_threshold(upstream_factory, gateway_factory):
    """Two of three endpoints fail their checks: 1/3 healthy is below a 50%
    panic_threshold, so traffic goes to all three (the dead ones answer 502);
    the same cluster without panic mode sends everything to the healthy one."""
    a, b, c = (upstream_factory(n) for n in "abc")
    config = health_config(a, b, c, panic_threshold="50%")
    config["clusters"]["strict"] = {**config["clusters"]["c"], "panic_threshold": 0}
    config["routes"].insert(0, route("strict", "strict", prefix="/strict", retries="off"))
    gw = gateway_factory(config)
    b.stop()
    c.stop()
    assert wait_until(lambda: "below panic_threshold 50%" in gw.stderr(), 5), gw.stderr()
    assert wait_until(lambda: gw.stderr().count("is unhealthy") == 4, 5), gw.stderr()
    assert spread(gw, 9) == {200: 3, 502: 6}
    assert spread(gw, 6, "/strict/x") == {200: 6}

    b2 = restart(b)  # 2 of 3 healthy: out of panic, the dead one gets nothing
    try:
        assert wait_until(lambda: "out of panic mode" in gw.stderr(), 5), gw.stderr()
        assert spread(gw, 8) == {200: 8}
    finally:
        b2.stop()


@pytest.mark.timeout(30)
def test_ring_hash_moves_only_the_unhealthy_endpoints_keys(upstream_factory, gateway_factory):
    ups = [upstream_factory(n) for n in "abc"]
    gw = gateway_factory(health_config(*ups, lb="ring_hash", hash_on="header:X-User"))
    users = [f"user-{i}" for i in range(30)]

    def owners() -> dict:
        out = {}
        for user in users:
            before = {up.name: len(served(up)) for up in ups}
            resp = http_request(gw.port, "GET", "/x", headers=[("X-User", user)])
            assert resp.status == 200, resp.describe()
            out[user] = next(up.name for up in ups if len(served(up)) > before[up.name])
        return out

    first = owners()
    assert set(first.values()) == {"a", "b", "c"}
    ups[1].stop()
    assert wait_until(lambda: "is unhealthy" in gw.stderr(), 5), gw.stderr()
    second = owners()
    for user in users:
        if first[user] != "b":
            assert second[user] == first[user], f"{user} moved from {first[user]} to {second[user]}"
        else:
            assert second[user] in ("a", "c")


@pytest.mark.timeout(30)
def test_each_worker_checks_for_itself(upstream_factory, gateway_factory):
    """Checks run in every worker (no shared state): with two workers, each
    logs the dead endpoint as unhealthy and neither sends it a request."""
    a, b = upstream_factory("a"), upstream_factory("b")
    gw = gateway_factory(health_config(a, b), workers=2)
    b.stop()
    marker = f"endpoint 127.0.0.1:{b.port} is unhealthy"
    assert wait_until(lambda: gw.stderr().count(marker) == 2, 5), gw.stderr()
    pids = {line.split("fastgw[")[1].split("]")[0] for line in gw.stderr().splitlines() if marker in line}
    assert len(pids) == 2, "the two lines came from one worker"
    assert spread(gw, 20) == {200: 20}


@pytest.mark.timeout(30)
def test_with_retries_clients_never_see_the_dead_endpoint(upstream_factory, gateway_factory):
    """Default retries plus outlier detection: the failed tries go to the
    other endpoint, and after two refused connections the dead one is
    ejected, so later requests are not even tried there."""
    a, b = upstream_factory("a"), upstream_factory("b")
    gw = gateway_factory({
        "clusters": {"c": cluster(a.url, b.url, outlier_detection={
            "consecutive_connect_failures": 2, "base_ejection": "30s", "max_ejected_percent": 50})},
        "routes": [route("all", "c", prefix="/")],
    })
    b.stop()
    assert spread(gw, 20) == {200: 20}
    assert f"endpoint 127.0.0.1:{b.port} ejected for 30s (2 consecutive connect failures" in gw.stderr()
    assert len(served(a)) == 20
