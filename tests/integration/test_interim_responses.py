"""Issue 17, finding 4: interim (1xx) answers from upstreams.

RFC 9110 15.2: a proxy forwards 1xx answers to HTTP/1.1 clients, drops them
for HTTP/1.0 clients, then relays the final answer. An upstream that closes
after a 1xx is a 502; one that never sends the final answer is a 504 at the
response_header timeout (interim answers don't extend it). Each wait in
these tests has a bound, so a hang fails instead of stalling.
"""
from __future__ import annotations

import time

import pytest

from support import Proxy, RawClient, assert_gateway_error, simple_config


@pytest.fixture
def proxy_1xx(upstream, gateway_factory) -> Proxy:
    config = simple_config(upstream.url, route_extra={"retries": "off"})
    config["clusters"]["main"]["timeouts"] = {"response_header": "2s"}
    return Proxy(gateway_factory(config), upstream)


@pytest.mark.timeout(30)
def test_early_hints_and_processing_reach_an_http11_client_then_the_final_answer(proxy_1xx):
    with RawClient(proxy_1xx.port) as client:
        client.request("GET", "/interim?codes=103,102")
        resp = client.read_response(timeout=10)
        assert resp.status == 200, resp.describe()
        assert resp.json()["target"] == "/interim?codes=103,102"
        assert [r.status for r in resp.informational] == [103, 102]
        assert resp.informational[0].header("link") == "</style.css>; rel=preload; as=style"
        # Interim heads carry no framing: they have no body.
        assert not {"content-length", "transfer-encoding"} & resp.informational[0].header_names()
        # The client connection and the upstream connection both stay usable.
        client.request("GET", "/interim?codes=103")
        again = client.read_response(timeout=10)
        assert again.status == 200 and [r.status for r in again.informational] == [103]
    conns = {r.conn_id for r in proxy_1xx.up.requests}
    assert len(conns) == 1, f"the upstream connection was not reused after a 1xx: {conns}"


@pytest.mark.timeout(30)
def test_interim_answers_are_dropped_for_an_http10_client(proxy_1xx):
    with RawClient(proxy_1xx.port) as client:
        client.send(b"GET /interim?codes=103,102 HTTP/1.0\r\nHost: x\r\n\r\n")
        resp = client.read_response(version="1.0", timeout=10)
        assert resp.status == 200, resp.describe()
        assert resp.informational == []


@pytest.mark.timeout(30)
def test_unsolicited_100_continue_is_not_relayed(proxy_1xx):
    """The gateway sends its own 100 when a client asks (Expect); an upstream's
    100 to a request that didn't ask means nothing to the client."""
    with RawClient(proxy_1xx.port) as client:
        client.request("GET", "/interim?codes=100")
        resp = client.read_response(timeout=10)
        assert resp.status == 200, resp.describe()
        assert resp.informational == []


@pytest.mark.timeout(30)
def test_upstream_closing_after_an_interim_answer_is_a_502(proxy_1xx):
    with RawClient(proxy_1xx.port) as client:
        client.request("GET", "/interim?codes=103&then=close")
        resp = client.read_response(timeout=10)
        assert_gateway_error(resp, 502, "upstream_reset")
        assert [r.status for r in resp.informational] == [103]
        # The gateway still serves this client.
        client.request("GET", "/fixed")
        assert client.read_response(timeout=10).status == 200


@pytest.mark.timeout(30)
def test_interim_answers_do_not_extend_the_response_header_timeout(proxy_1xx):
    started = time.monotonic()
    with RawClient(proxy_1xx.port) as client:
        client.request("GET", "/interim?codes=103&then=hang")
        resp = client.read_response(timeout=15)
    assert_gateway_error(resp, 504, "upstream_timeout")
    # 2 s configured; the bound is generous for a busy machine, far below "hangs".
    assert time.monotonic() - started < 12


@pytest.mark.timeout(30)
def test_an_endless_run_of_interim_answers_is_a_502(proxy_1xx):
    codes = ",".join(["102"] * 40)
    with RawClient(proxy_1xx.port) as client:
        client.request("GET", f"/interim?codes={codes}")
        resp = client.read_response(timeout=10)
        assert_gateway_error(resp, 502, "upstream_bad_response")
        assert 0 < len(resp.informational) <= 16
