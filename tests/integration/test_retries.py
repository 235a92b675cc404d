"""Retries (routes[].retries, clusters.NAME.retry_budget) end to end: a real
gateway in front of real upstreams that fail in known ways, counting what
actually reaches each upstream."""
from __future__ import annotations

import concurrent.futures

import pytest

from support import RawClient, assert_gateway_error, cluster, free_port, http_request, route

FAST_BACKOFF = {"base": "5ms", "max": "10ms"}


def retrying(name, cluster_name, **retries):
    retries.setdefault("backoff", FAST_BACKOFF)
    return route(name, cluster_name, prefix="/", retries=retries)


def seen(up, key):
    return [r for r in up.requests if f"key={key}" in r.query]


def test_connect_failure_goes_to_another_endpoint_for_every_method(upstream, gateway_factory):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    gw = gateway_factory({
        "clusters": {"mixed": cluster(dead, upstream.url)},
        "routes": [retrying("all", "mixed")],
    })
    for i in range(6):
        assert http_request(gw.port, "GET", f"/get-{i}").status == 200
    # POST too: a refused connection proves the request never reached an upstream.
    for i in range(4):
        resp = http_request(gw.port, "POST", f"/post-{i}", body=b"payload")
        assert resp.status == 200, resp.describe()
        assert resp.json()["body"] == "payload"
    assert len(upstream.requests) == 10  # each request reached the live upstream once


def test_a_503_is_retried_and_the_retry_answers(upstream, gateway_factory):
    gw = gateway_factory({"clusters": {"one": cluster(upstream.url)},
                          "routes": [retrying("all", "one")]})
    resp = http_request(gw.port, "GET", "/flaky?key=a&fail=1")
    assert resp.status == 200, resp.describe()
    assert len(seen(upstream, "a")) == 2
    # A PUT is idempotent: retried the same way, body included.
    resp = http_request(gw.port, "PUT", "/flaky?key=b&fail=2", body=b"x" * 1000)
    assert resp.status == 200, resp.describe()
    assert [r.body_length for r in seen(upstream, "b")] == [1000, 1000, 1000]


def test_attempts_run_out_and_the_last_response_goes_to_the_client(upstream, gateway_factory):
    gw = gateway_factory({"clusters": {"one": cluster(upstream.url)},
                          "routes": [retrying("all", "one", attempts=2)]})
    resp = http_request(gw.port, "GET", "/flaky?key=c&fail=10&status=502")
    assert resp.status == 502 and resp.body == b"flaky\n", resp.describe()  # the upstream's own answer
    assert len(seen(upstream, "c")) == 3


def test_post_that_reached_the_upstream_is_not_retried(upstream, gateway_factory):
    gw = gateway_factory({"clusters": {"one": cluster(upstream.url)},
                          "routes": [retrying("all", "one")]})
    resp = http_request(gw.port, "POST", "/flaky?key=p&fail=1", body=b"order")
    assert resp.status == 503, resp.describe()
    resp = http_request(gw.port, "POST", "/flaky?key=q&fail=1&action=reset", body=b"order")
    assert_gateway_error(resp, 502, "upstream_reset")
    assert len(seen(upstream, "p")) == 1 and len(seen(upstream, "q")) == 1


def test_reset_is_retried_for_get(upstream, gateway_factory):
    gw = gateway_factory({"clusters": {"one": cluster(upstream.url)},
                          "routes": [retrying("all", "one")]})
    assert http_request(gw.port, "GET", "/flaky?key=r&fail=1&action=reset").status == 200
    assert len(seen(upstream, "r")) == 2


def test_statuses_not_configured_are_passed_on(upstream, gateway_factory):
    gw = gateway_factory({"clusters": {"one": cluster(upstream.url)},
                          "routes": [retrying("all", "one", retry_on=["connect_failure", 503])]})
    assert http_request(gw.port, "GET", "/flaky?key=s&fail=1&status=502").status == 502
    assert len(seen(upstream, "s")) == 1


def test_retries_off(upstream, gateway_factory):
    gw = gateway_factory({"clusters": {"one": cluster(upstream.url)},
                          "routes": [route("all", "one", prefix="/", retries="off")]})
    assert http_request(gw.port, "GET", "/flaky?key=o&fail=1").status == 503
    assert len(seen(upstream, "o")) == 1


def test_a_long_retry_after_is_passed_to_the_client(upstream, gateway_factory):
    gw = gateway_factory({"clusters": {"one": cluster(upstream.url)},
                          "routes": [retrying("all", "one", max_retry_after="1s")]})
    resp = http_request(gw.port, "GET", "/flaky?key=l&fail=1&retry_after=30")
    assert resp.status == 503 and resp.header("retry-after") == "30", resp.describe()
    assert len(seen(upstream, "l")) == 1


def test_a_short_retry_after_is_waited_for(upstream, gateway_factory):
    gw = gateway_factory({"clusters": {"one": cluster(upstream.url)},
                          "routes": [retrying("all", "one", max_retry_after="2s")]})
    resp = http_request(gw.port, "GET", "/flaky?key=w&fail=1&retry_after=1")
    assert resp.status == 200, resp.describe()
    first, second = seen(upstream, "w")
    assert second.received_at - first.received_at >= 0.95


def test_per_try_timeout_abandons_a_hanging_try(upstream, gateway_factory):
    gw = gateway_factory({"clusters": {"one": cluster(upstream.url)},
                          "routes": [retrying("all", "one", per_try_timeout="300ms")]})
    resp = http_request(gw.port, "GET", "/flaky?key=h&fail=1&action=hang", timeout=10)
    assert resp.status == 200, resp.describe()
    assert len(seen(upstream, "h")) == 2


def test_no_retry_once_the_response_started(upstream, gateway_factory):
    gw = gateway_factory({"clusters": {"one": cluster(upstream.url)},
                          "routes": [retrying("all", "one", retry_on=["connect_failure", "reset", 503])]})
    with RawClient(gw.port) as client:
        client.request("GET", "/die")  # a head, 10 of 1000 body bytes, then the upstream closes
        resp = client.read_response(allow_incomplete=True)
        assert resp.status == 200 and not resp.complete, resp.describe()
        client.assert_closed(timeout=5)
    assert len([r for r in upstream.requests if r.path == "/die"]) == 1


@pytest.mark.timeout(30)
def test_the_retry_budget_stops_a_retry_storm(upstream, gateway_factory):
    gw = gateway_factory({
        "clusters": {"one": cluster(upstream.url, retry_budget={"ratio": 0.01, "min_concurrent": 2})},
        "routes": [retrying("all", "one", attempts=1)],
    })

    def call(i):
        return http_request(gw.port, "GET", f"/flaky?key=storm{i}&fail=1&delay=0.5", timeout=10).status

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        statuses = sorted(pool.map(call, range(10)))
    # All ten first tries fail at about the same time; only two may retry at once.
    assert statuses.count(200) == 2 and statuses.count(503) == 8, statuses
    assert len([r for r in upstream.requests if r.path == "/flaky"]) == 12
    # The budget is given back when those exchanges end.
    assert http_request(gw.port, "GET", "/flaky?key=after&fail=1").status == 200


def test_each_retry_goes_to_an_endpoint_not_tried_yet(upstream_factory, gateway_factory):
    ups = [upstream_factory(f"u{i}") for i in range(3)]
    gw = gateway_factory({"clusters": {"three": cluster(*(u.url for u in ups))},
                          "routes": [retrying("all", "three", attempts=2)]})
    # Every upstream fails its first request with this key: had a retry gone
    # back to an endpoint already tried, it would have succeeded there.
    resp = http_request(gw.port, "GET", "/flaky?key=spread&fail=1")
    assert resp.status == 503, resp.describe()
    assert [len(seen(u, "spread")) for u in ups] == [1, 1, 1]
