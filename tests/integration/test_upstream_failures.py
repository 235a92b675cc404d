"""Item 9: what the client gets when the upstream misbehaves, and that the
gateway keeps serving afterwards."""
from __future__ import annotations

import time

import pytest

from support import RawClient, assert_gateway_error, cluster, free_port, http_request, route


@pytest.fixture
def failing(upstream, gateway_factory):
    dead_port = free_port()  # nothing listens here
    config = {
        "clusters": {
            "main": cluster(upstream.url),
            "dead": cluster(f"http://127.0.0.1:{dead_port}", timeouts={"connect": "2s"}),
        },
        "routes": [
            route("dead", "dead", prefix="/dead"),
            route("hang", "main", prefix="/hang", timeouts={"response_header": "0.5s"}),
            route("all", "main", prefix="/"),
        ],
    }
    return gateway_factory(config), upstream


def still_serving(gw) -> None:
    resp = http_request(gw.port, "GET", "/fixed")
    assert resp.status == 200, f"gateway stopped serving: {resp.describe()}"
    assert resp.body == b"hello from upstream\n"


@pytest.mark.timeout(30)
def test_upstream_refused_gives_502_connect_failed(failing):
    gw, up = failing
    resp = http_request(gw.port, "GET", "/dead/x")
    assert_gateway_error(resp, 502, "upstream_connect_failed")
    # A client's own request id is the one its error carries.
    resp = http_request(gw.port, "GET", "/dead/y", [("X-Request-ID", "rid-for-502")])
    err = assert_gateway_error(resp, 502, "upstream_connect_failed")
    assert err["request_id"] == "rid-for-502"
    still_serving(gw)


@pytest.mark.timeout(30)
def test_upstream_never_answers_gives_504(failing):
    gw, up = failing
    started = time.monotonic()
    resp = http_request(gw.port, "GET", "/hang", timeout=10)
    elapsed = time.monotonic() - started
    assert_gateway_error(resp, 504, "upstream_timeout")
    assert 0.4 <= elapsed < 3.0, f"504 after {elapsed:.2f}s with a 0.5s response_header timeout"
    # The timed-out upstream connection is abandoned, not left open or reused.
    up.wait_mark("hang-peer-closed", timeout=3)
    still_serving(gw)


@pytest.mark.timeout(30)
def test_upstream_dies_mid_body(failing):
    gw, up = failing
    with RawClient(gw.port, timeout=5) as client:
        client.request("GET", "/die")
        resp = client.read_response(allow_incomplete=True)
        assert resp.status == 200, resp.describe()
        assert not resp.complete and len(resp.body) < 1000, \
            f"a truncated upstream body was passed off as complete ({len(resp.body)} bytes)"
        assert resp.body == b"0123456789"[: len(resp.body)]
        client.assert_closed(timeout=5)
    still_serving(gw)


@pytest.mark.timeout(30)
def test_upstream_garbage_gives_502_bad_response(failing):
    gw, up = failing
    resp = http_request(gw.port, "GET", "/garbage")
    assert_gateway_error(resp, 502, "upstream_bad_response")
    still_serving(gw)


@pytest.mark.timeout(30)
def test_upstream_ambiguous_framing_gives_502_bad_response(failing):
    gw, up = failing
    resp = http_request(gw.port, "GET", "/ambiguous")
    assert_gateway_error(resp, 502, "upstream_bad_response")
    still_serving(gw)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", ["/reset", "/partial-head"])
def test_upstream_closes_before_full_head_gives_502_reset(failing, path):
    gw, up = failing
    resp = http_request(gw.port, "GET", path)
    assert_gateway_error(resp, 502, "upstream_reset")
    still_serving(gw)


@pytest.mark.timeout(30)
def test_silently_closed_pooled_connection_is_not_used(failing):
    """The upstream closes each keep-alive connection right after answering,
    without `Connection: close`: the gateway must not fail the next request
    on the dead pooled connection."""
    gw, up = failing
    with RawClient(gw.port) as client:
        for i in range(4):
            client.request("GET", f"/close-after?i={i}")
            resp = client.read_response()
            assert resp.status == 200, f"request {i}: {resp.describe()}"
            conn = up.connection(up.requests[-1].conn_id)
            assert up.wait_for(lambda: conn.closed_at is not None, timeout=5)
    assert len(up.requests) == 4


@pytest.mark.timeout(30)
def test_pooled_connection_closed_as_request_arrives_is_retried(failing):
    """The race a pool cannot see coming: the upstream closes the idle
    connection just as the gateway reuses it (no response byte). An
    idempotent GET must be retried on a fresh connection, not answered 502."""
    gw, up = failing
    with RawClient(gw.port) as client:
        for i in range(4):
            client.request("GET", f"/stale?i={i}")
            resp = client.read_response()
            assert resp.status == 200, f"request {i}: {resp.describe()}"
    answered = [r for r in up.heads if r.index_on_conn == 1]
    assert len(answered) == 4
    assert up.marks_named("stale-dropped"), \
        "the gateway never reused a pooled connection, so the stale case was not exercised"
