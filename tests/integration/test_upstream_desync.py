"""Issue 17, findings 1 and 2: nothing one client sends may change what the
upstream reads as another client's request.

Each case is sent as exact bytes through the real binary (1 worker, default
pool: connections are reused), then a second client sends an ordinary
request; the upstream (h11, strict) must receive that request exactly as
sent, on a connection whose earlier bytes h11 framed without leftovers.
"""
from __future__ import annotations

import pytest

from support import Proxy, RawClient, assert_gateway_error, simple_config


@pytest.fixture
def pooled(upstream, gateway_factory) -> Proxy:
    return Proxy(gateway_factory(simple_config(upstream.url)), upstream)


def _warm_pool(proxy: Proxy) -> int:
    """One ordinary exchange, so an idle pooled connection exists; its id."""
    with RawClient(proxy.port) as client:
        client.request("GET", "/warm")
        assert client.read_response().status == 200
    return proxy.up.requests[-1].conn_id


def _assert_next_client_is_served_intact(proxy: Proxy, already: int) -> None:
    """Client B's request reaches the upstream as B sent it, and B gets B's answer."""
    with RawClient(proxy.port) as client:
        client.request("POST", "/echo/b", [("Content-Type", "text/plain")], b"client-b-body")
        resp = client.read_response("POST")
    assert resp.status == 200, resp.describe()
    echoed = resp.json()
    assert echoed["target"] == "/echo/b" and echoed["body"] == "client-b-body", echoed
    got = proxy.up.requests[already:]
    assert [(r.method, r.target, r.body) for r in got] == [("POST", "/echo/b", b"client-b-body")], \
        [(r.method, r.target, r.body) for r in got]


UPGRADE_WITH_BODY = [
    ("post-websocket-content-length",
     b"POST /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Content-Length: 10\r\n\r\n0123456789"),
    ("get-websocket-content-length",
     b"GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
     b"Content-Length: 10\r\n\r\n0123456789"),
    ("post-websocket-chunked",
     b"POST /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Transfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n"),
    ("post-h2c-content-length",
     b"POST /a HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
     b"HTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 10\r\n\r\n0123456789"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("raw", [c[1] for c in UPGRADE_WITH_BODY], ids=[c[0] for c in UPGRADE_WITH_BODY])
def test_upgrade_request_with_body_is_refused_and_poisons_nothing(pooled, raw):
    _warm_pool(pooled)
    with RawClient(pooled.port) as client:
        client.send(raw)
        resp = client.read_response("POST", timeout=10)
        assert_gateway_error(resp, 400, "bad_request")
        assert "upgrade" in resp.json()["error"]["message"].lower()
        assert "close" in resp.header_tokens("connection")
        client.assert_closed()
    assert [r.target for r in pooled.up.requests] == ["/warm"], "the refused request went upstream"
    _assert_next_client_is_served_intact(pooled, 1)


@pytest.mark.timeout(30)
def test_refused_websocket_handshake_does_not_reuse_its_upstream_connection(pooled):
    """A WebSocket handshake the upstream answers without 101 (here 200): the
    upstream connection is closed, not pooled, whatever the upstream thought
    of the Upgrade."""
    first = _warm_pool(pooled)
    with RawClient(pooled.port) as client:
        client.send(b"GET /echo/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        resp = client.read_response(timeout=10)
        assert resp.status == 200, resp.describe()
    ws_conn = pooled.up.requests[-1].conn_id
    assert ws_conn == first  # it went out on the pooled connection...
    assert pooled.up.wait_for(lambda: pooled.up.connection(ws_conn).closed_at is not None, 5), \
        "the upstream connection that carried an Upgrade request was kept"
    _assert_next_client_is_served_intact(pooled, 2)
    assert pooled.up.requests[-1].conn_id != ws_conn  # ...and never again


NO_VERSION = [
    ("http09-get", b"GET /x\r\n\r\n", 400),
    ("http09-with-headers-and-body", b"POST /x\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("http2-version", b"GET /x HTTP/2.0\r\nHost: x\r\n\r\n", 505),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("raw,status", [c[1:] for c in NO_VERSION], ids=[c[0] for c in NO_VERSION])
def test_request_line_without_http_1x_version_is_refused(pooled, raw, status):
    with RawClient(pooled.port) as client:
        client.send(raw)
        resp = client.read_response(timeout=10)
        assert_gateway_error(resp, status, "bad_request" if status == 400 else "http_version_not_supported")
        client.assert_closed()
    assert pooled.up.requests == []
    _assert_next_client_is_served_intact(pooled, 0)


@pytest.mark.timeout(30)
def test_versionless_request_line_mid_connection_is_refused(pooled):
    """The issue's shape: after a valid request, a request line whose version
    got lost (`GET /e3GHTTP/1.1`, parsed by llhttp as HTTP/0.9 with target
    `/e3GHTTP/1.1`) must not go upstream as a second request."""
    with RawClient(pooled.port) as client:
        client.send(b"POST /echo/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                    b"GET /e3GHTTP/1.1\r\nHost: x\r\n\r\n")
        first = client.read_response("POST", timeout=10)
        assert first.status == 200 and first.json()["body"] == "abc", first.describe()
        second = client.read_response(timeout=10)
        assert_gateway_error(second, 400, "bad_request")
        client.assert_closed()
    assert [r.target for r in pooled.up.requests] == ["/echo/1"]
    _assert_next_client_is_served_intact(pooled, 1)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["partial", "whole"])
def test_upstream_bytes_after_a_response_never_reach_the_next_client(pooled, kind):
    """An upstream that writes more than the response (a second, unasked
    response, whole or cut) is out of step: its connection must be closed,
    never handed to the next client."""
    with RawClient(pooled.port) as client:
        client.request("GET", f"/excess?kind={kind}")
        resp = client.read_response(timeout=10)
        assert resp.status == 200 and resp.json()["target"].startswith("/excess"), resp.describe()
    excess_conn = pooled.up.requests[-1].conn_id
    assert pooled.up.wait_for(lambda: pooled.up.connection(excess_conn).peer_closed_at is not None, 5), \
        "the gateway kept an upstream connection that sent bytes nobody asked for"
    _assert_next_client_is_served_intact(pooled, 1)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("target", ["/e/x", "example.com:443"])
def test_connect_is_refused_and_a_pipelined_request_never_hangs(pooled, target):
    """The fuzzer's find: CONNECT (which llhttp treats as the end of HTTP on
    the connection) then a pipelined GET waited for the keep-alive timeout."""
    with RawClient(pooled.port) as client:
        client.send(f"CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\nGET /echo/y HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        resp = client.read_response(timeout=10)
        assert_gateway_error(resp, 501, "not_implemented")
        client.assert_closed(timeout=5)
    assert pooled.up.requests == []


@pytest.mark.timeout(30)
def test_a_non_websocket_upgrade_is_answered_then_the_connection_closes(pooled):
    """llhttp parses nothing after an Upgrade head: the request is served as a
    plain one and the connection closes after it, instead of waiting."""
    with RawClient(pooled.port) as client:
        client.send(b"GET /echo/u HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
                    b"GET /echo/next HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = client.read_response(timeout=10)
        assert resp.status == 200 and resp.json()["target"] == "/echo/u", resp.describe()
        assert "close" in resp.header_tokens("connection")
        client.assert_closed(timeout=5)
    assert [r.target for r in pooled.up.requests] == ["/echo/u"]
