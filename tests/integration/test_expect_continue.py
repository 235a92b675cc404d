"""Item 5: `Expect: 100-continue`."""
from __future__ import annotations

import pytest

from support import Proxy, RawClient, assert_gateway_error, http_request, simple_config


@pytest.fixture
def limited_proxy(upstream, gateway_factory) -> Proxy:
    return Proxy(gateway_factory(simple_config(upstream.url, limits={"max_body_bytes": 1024})), upstream)


@pytest.mark.timeout(30)
def test_expect_100_continue_then_body(limited_proxy):
    body = b"hello world"
    with RawClient(limited_proxy.port) as client:
        client.request("POST", "/echo/expect", [("Expect", "100-continue"), ("Content-Length", str(len(body)))])
        interim = client.read_head("POST", informational=True, timeout=5)
        assert interim.status == 100, f"expected 100 Continue before sending the body, got {interim.describe()}"
        client.send(body)
        resp = client.read_response("POST")
        assert resp.status == 200, resp.describe()
        assert resp.json()["body"] == "hello world"
        # The connection stays usable.
        client.request("GET", "/fixed")
        assert client.read_response().status == 200
    [req, _] = limited_proxy.up.requests
    assert req.body == body


@pytest.mark.timeout(30)
def test_expect_100_continue_over_limit_gets_413_without_100(limited_proxy):
    with RawClient(limited_proxy.port) as client:
        client.request("POST", "/echo/expect", [("Expect", "100-continue"), ("Content-Length", "4096")])
        resp = client.read_response("POST", timeout=5)
        assert resp.informational == [], f"100 Continue sent for a body that is too large: {resp.informational}"
        assert_gateway_error(resp, 413, "body_too_large")
        assert "close" in resp.header_tokens("connection")
        client.assert_closed()
    assert limited_proxy.up.heads == []
    assert http_request(limited_proxy.port, "GET", "/fixed").status == 200
