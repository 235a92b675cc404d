"""Effect tests for documented config keys that had none (found by
tests/config/test_documented_keys.py): each sets the key and shows what the
gateway does differently because of it."""
from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from support import RawClient, cluster, http_request, route, simple_config, wait_until


@pytest.mark.timeout(30)
def test_server_timeouts_client_header_answers_408(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.url, server={"timeouts": {"client_header": "500ms"}}))
    with RawClient(gw.port, timeout=10) as client:
        client.send(b"GET /fixed HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        started = time.monotonic()
        resp = client.read_response("GET")
    assert resp.status == 408, resp.describe()
    assert time.monotonic() - started < 5, "the default client_header (10s) was used"
    assert upstream.requests == []


@pytest.mark.timeout(30)
def test_pool_idle_timeout_closes_idle_upstream_connections(upstream, gateway_factory):
    config = simple_config(upstream.url)
    config["clusters"]["main"]["pool"] = {"idle_timeout": "1s"}
    gw = gateway_factory(config)
    with RawClient(gw.port) as client:
        client.request("GET", "/fixed")
        assert client.read_response("GET").status == 200
        client.request("GET", "/fixed")  # at once: the pooled connection is reused
        assert client.read_response("GET").status == 200
        time.sleep(2.5)  # past idle_timeout, and past the 1s sweep
        client.request("GET", "/fixed")
        assert client.read_response("GET").status == 200
    first, second, third = (r.conn_id for r in upstream.requests)
    assert first == second, "a connection idle for less than idle_timeout is reused"
    assert third != first, "a connection idle for longer than idle_timeout was reused"


@pytest.mark.timeout(30)
def test_websocket_idle_closes_a_quiet_tunnel(ws_upstream, gateway_factory):
    gw = gateway_factory({
        "clusters": {"ws": cluster(f"http://127.0.0.1:{ws_upstream.port}", timeouts={"websocket_idle": "1s"})},
        "routes": [route("ws", "ws", prefix="/ws")],
    })
    with connect(f"ws://127.0.0.1:{gw.port}/ws/quiet", proxy=None, open_timeout=5, close_timeout=2,
                 compression=None, ping_interval=None) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=15)
        closed_after = time.monotonic() - started
    assert 0.8 < closed_after < 10, f"the quiet tunnel was closed after {closed_after:.1f}s"


@pytest.mark.timeout(30)
def test_trusted_proxies_make_forwarded_for_the_client_ip(upstream, gateway_factory):
    config = simple_config(upstream.url, server={"trusted_proxies": ["127.0.0.1"]},
                           route_extra={"rate_limits": [{"key": "client_ip", "rate": "1/m", "burst": 1}]})
    gw = gateway_factory(config)

    def status(client_ip: str) -> int:
        return http_request(gw.port, "GET", "/fixed", [("X-Forwarded-For", client_ip)]).status

    # Each forwarded address has its own allowance: the peer (127.0.0.1) is not the key.
    assert [status("203.0.113.1"), status("203.0.113.1"), status("203.0.113.2")] == [200, 429, 200]


@pytest.mark.timeout(30)
def test_access_log_redact_headers_replaces_the_listed_ones(upstream, gateway_factory, tmp_path):
    path = tmp_path / "access.log"
    config = simple_config(upstream.url)
    config["access_log"] = {"path": str(path), "flush_interval": "100ms", "headers": ["x-tenant", "authorization"],
                            "redact_headers": ["x-tenant"]}
    gw = gateway_factory(config)
    resp = http_request(gw.port, "GET", "/fixed", [("X-Tenant", "acme"), ("Authorization", "Bearer t")])
    assert resp.status == 200
    assert wait_until(lambda: path.exists() and path.read_text().endswith("\n"), 5)
    (line,) = [json.loads(text) for text in path.read_text().splitlines()]
    # The list replaces the default one: authorization is logged as sent.
    assert line["headers"] == {"x-tenant": "REDACTED", "authorization": "Bearer t"}


@pytest.mark.timeout(30)
def test_admin_token_env_protects_the_admin_api(upstream, gateway_factory, monkeypatch):
    token = "env-token-0123456789abcdef"
    monkeypatch.setenv("FASTGW_TEST_ADMIN_TOKEN", token)  # the gateway inherits the environment
    config = simple_config(upstream.url)
    config["admin"] = {"token_env": "FASTGW_TEST_ADMIN_TOKEN"}
    gw = gateway_factory(config)
    assert http_request(gw.admin_port, "GET", "/config").status == 401
    allowed = http_request(gw.admin_port, "GET", "/config", [("Authorization", f"Bearer {token}")])
    assert allowed.status == 200, allowed.describe()
    assert token not in allowed.body.decode()
