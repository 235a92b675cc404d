"""Item 8: a WebSocket echo through the gateway's upgrade tunnel."""
from __future__ import annotations

import os

import pytest
from websockets.sync.client import connect

from support import cluster, http_request, route


@pytest.fixture
def ws_gateway(upstream, ws_upstream, gateway_factory):
    config = {
        "clusters": {"ws": cluster(f"http://127.0.0.1:{ws_upstream.port}"), "main": cluster(upstream.url)},
        "routes": [route("ws", "ws", prefix="/ws"), route("all", "main", prefix="/")],
    }
    return gateway_factory(config)


@pytest.mark.timeout(30)
def test_websocket_echo_through_tunnel(ws_gateway, ws_upstream):
    messages = ["hello", b"\x00\x01\x02binary\xff", "ünïcödé ✓", os.urandom(70000), "x" * 20000, b""]
    with connect(f"ws://127.0.0.1:{ws_gateway.port}/ws/chat?room=1", proxy=None,
                 open_timeout=5, close_timeout=5, compression=None) as ws:
        for message in messages:
            ws.send(message)
            echoed = ws.recv(timeout=5)
            assert echoed == message, f"echo mismatch for a {type(message).__name__} of {len(message)}"
        ws.close()
        assert ws.close_code == 1000
    assert ws_upstream.paths == ["/ws/chat?room=1"]
    assert ws_upstream.wait_for(lambda: ws_upstream.closed, timeout=5), "upstream never saw the close"
    assert ws_upstream.closed == [1000]
    # Normal HTTP keeps working next to the tunnel.
    assert http_request(ws_gateway.port, "GET", "/fixed").status == 200
