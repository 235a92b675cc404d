"""Item 3: hop-by-hop removal both ways, forwarding headers, request ids and
the route's header operations."""
from __future__ import annotations

import pytest

from support import RawClient, cluster, http_request, route

HOP_BY_HOP = {"keep-alive", "te", "trailer", "upgrade", "proxy-connection", "transfer-encoding"}


def assert_connection_clean(values: list[str], where: str) -> None:
    tokens = {t.strip().lower() for v in values for t in v.split(",") if t.strip()}
    assert tokens <= {"keep-alive", "close"}, f"{where}: Connection carries {tokens!r}"


@pytest.mark.timeout(30)
def test_hop_by_hop_request_headers_are_removed(proxy):
    resp = http_request(proxy.port, "GET", "/echo/hop", [
        ("Connection", "close, X-Secret"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("Proxy-Connection", "keep-alive"),
        ("X-Secret", "must-not-pass"),
        ("X-Kept", "yes"),
    ])
    assert resp.status == 200, resp.describe()
    [req] = proxy.up.requests
    names = req.header_names()
    leaked = names & (HOP_BY_HOP | {"x-secret"})
    assert not leaked, f"hop-by-hop headers reached the upstream: {leaked}; all: {req.headers!r}"
    assert_connection_clean(req.header_all("connection"), "upstream request")
    assert req.header("x-kept") == "yes"


@pytest.mark.timeout(30)
def test_non_websocket_upgrade_is_not_forwarded(proxy):
    resp = http_request(proxy.port, "GET", "/echo/h2c", [
        ("Connection", "Upgrade, HTTP2-Settings"),
        ("Upgrade", "h2c"),
        ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
    ])
    assert resp.status == 200, resp.describe()
    [req] = proxy.up.requests
    names = req.header_names()
    assert not names & {"upgrade", "http2-settings"}, req.headers
    assert_connection_clean(req.header_all("connection"), "upstream request")


@pytest.mark.timeout(30)
def test_hop_by_hop_response_headers_are_removed(proxy):
    with RawClient(proxy.port) as client:
        client.request("GET", "/hop-headers")
        resp = client.read_response()
        assert resp.status == 200, resp.describe()
        assert resp.body == b"hop\n"
        names = resp.header_names()
        leaked = names & ({"keep-alive", "te", "trailer", "upgrade", "proxy-connection", "x-up-secret"})
        assert not leaked, f"hop-by-hop headers reached the client: {leaked}; all: {resp.headers!r}"
        assert_connection_clean(resp.header_all("connection"), "client response")
        assert resp.header("x-up-normal") == "forward-me"
        # And the connection is still usable afterwards.
        client.request("GET", "/fixed")
        assert client.read_response().status == 200


@pytest.mark.timeout(30)
def test_forwarding_headers_and_host(proxy):
    resp = http_request(proxy.port, "GET", "/echo/fwd", [("X-Forwarded-For", "1.2.3.4")],
                        host="shop.example.net:8443")
    assert resp.status == 200, resp.describe()
    [req] = proxy.up.requests
    xff = ", ".join(req.header_all("x-forwarded-for"))
    assert [p.strip() for p in xff.split(",")] == ["1.2.3.4", "127.0.0.1"], xff
    assert req.header("x-forwarded-proto") == "http"
    assert req.header("x-forwarded-host") == "shop.example.net:8443"
    assert req.header("host") == "shop.example.net:8443"

    # Without an incoming X-Forwarded-For the gateway starts the list.
    http_request(proxy.port, "GET", "/echo/fwd2", host="plain.example")
    req = proxy.up.requests[-1]
    assert [p.strip() for p in ", ".join(req.header_all("x-forwarded-for")).split(",")] == ["127.0.0.1"]
    assert req.header("host") == "plain.example"
    assert req.header("x-forwarded-host") == "plain.example"


@pytest.mark.timeout(30)
def test_request_id_generated_or_kept(proxy):
    resp = http_request(proxy.port, "GET", "/echo/rid")
    assert resp.status == 200
    generated = resp.header("x-request-id")
    assert generated, f"no X-Request-ID in the response: {resp.headers!r}"
    assert proxy.up.requests[-1].header("x-request-id") == generated

    resp2 = http_request(proxy.port, "GET", "/echo/rid")
    assert resp2.header("x-request-id") and resp2.header("x-request-id") != generated, \
        "request ids must be unique per request"

    resp = http_request(proxy.port, "GET", "/echo/rid", [("X-Request-ID", "client-chosen-123")])
    assert resp.header("x-request-id") == "client-chosen-123"
    assert proxy.up.requests[-1].header_all("x-request-id") == ["client-chosen-123"]


@pytest.mark.timeout(30)
def test_route_header_operations(upstream, gateway_factory):
    config = {
        "clusters": {"main": cluster(upstream.url)},
        "routes": [route("ops", "main", prefix="/", request_headers={
            "add": {"X-Add": "added"},
            "set": {"X-Set": "new"},
            "remove": ["X-Remove"],
        }, response_headers={
            "add": {"X-Resp-Add": "gw"},
            "set": {"X-Resp-Set": "gw"},
            "remove": ["X-Resp-Remove"],
        })],
    }
    gw = gateway_factory(config)
    target = "/echo/ops?h=X-Resp-Add:up&h=X-Resp-Set:up&h=X-Resp-Remove:up&h=X-Resp-Other:up"
    resp = http_request(gw.port, "GET", target, [
        ("X-Add", "orig"), ("X-Set", "old"), ("X-Remove", "gone"), ("X-Other", "same"),
    ])
    assert resp.status == 200, resp.describe()
    [req] = upstream.requests
    add_values = [v.strip() for value in req.header_all("x-add") for v in value.split(",")]
    assert sorted(add_values) == ["added", "orig"], req.headers
    assert req.header_all("x-set") == ["new"]
    assert req.header_all("x-remove") == []
    assert req.header("x-other") == "same"

    resp_add = [v.strip() for value in resp.header_all("x-resp-add") for v in value.split(",")]
    assert sorted(resp_add) == ["gw", "up"], resp.headers
    assert resp.header_all("x-resp-set") == ["gw"]
    assert resp.header_all("x-resp-remove") == []
    assert resp.header("x-resp-other") == "up"
