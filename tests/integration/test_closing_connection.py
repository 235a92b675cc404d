"""Once the gateway has decided to close a connection (an error that ends it),
nothing else already buffered on that connection is parsed or forwarded: a
request pipelined behind a rejected one must never reach the upstream."""
from __future__ import annotations

import pytest

from support import Proxy, RawClient, assert_gateway_error, build_request, simple_config


@pytest.fixture
def small_body_proxy(upstream, gateway_factory) -> Proxy:
    return Proxy(gateway_factory(simple_config(upstream.url, limits={"max_body_bytes": 1024})),
                 upstream)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_behind_a_too_large_body_is_not_forwarded(small_body_proxy, framing):
    body = b"x" * 4000
    if framing == "content-length":
        first = build_request("POST", "/echo/big", body=body)
    else:
        first = (build_request("POST", "/echo/big", [("Transfer-Encoding", "chunked")])
                 + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    with RawClient(small_body_proxy.port) as client:
        client.send(first + build_request("GET", "/echo/smuggled"))
        assert_gateway_error(client.read_response("POST"), 413, "body_too_large")
        client.assert_closed(timeout=5)
    # The gateway still serves others, and the pipelined GET never went upstream.
    with RawClient(small_body_proxy.port) as client:
        client.request("GET", "/echo/next")
        assert client.read_response().status == 200
    targets = [r.target for r in small_body_proxy.up.requests]
    assert "/echo/smuggled" not in targets
    assert targets[-1] == "/echo/next"
