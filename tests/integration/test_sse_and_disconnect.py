"""Item 7: server-sent events are relayed at once, not buffered.
Item 10: a client that goes away mid-stream releases the upstream promptly."""
from __future__ import annotations

import time

import pytest

from support import RawClient, http_request


def read_first_event(client: RawClient) -> bytes:
    data = b""
    while b"\n\n" not in data:
        chunk = client.read_chunk(timeout=5)
        assert chunk is not None, f"stream ended before the first event: {data!r}"
        data += chunk
    return data


@pytest.mark.timeout(30)
def test_sse_first_event_arrives_immediately(proxy):
    up = proxy.up
    with RawClient(proxy.port) as client:
        client.request("GET", "/sse?hold=5", [("Accept", "text/event-stream")])
        resp = client.read_head(timeout=5)
        assert resp.status == 200, resp.describe()
        assert (resp.header("content-type") or "").startswith("text/event-stream")
        data = read_first_event(client)
        received_at = time.monotonic()
        sent = up.wait_mark("sse-first-sent", timeout=1)
        assert b"data: first" in data
        delay = received_at - sent.at
        assert delay < 0.5, f"first SSE event took {delay:.3f}s to get through the gateway"
        # The upstream is still holding the stream open.
        assert not up.marks_named("sse-done")
        assert up.connection(sent.conn_id).closed_at is None


@pytest.mark.timeout(30)
def test_client_disconnect_mid_sse_closes_upstream(proxy):
    up = proxy.up
    client = RawClient(proxy.port)
    client.request("GET", "/sse?hold=20")
    assert client.read_head(timeout=5).status == 200
    read_first_event(client)
    sent = up.wait_mark("sse-first-sent", timeout=1)
    client.close()
    closed_at = time.monotonic()
    conn = up.connection(sent.conn_id)
    assert up.wait_for(lambda: conn.peer_closed_at is not None, timeout=3), \
        "upstream connection still open 3s after the client went away"
    assert conn.peer_closed_at - closed_at < 2.0
    # The gateway is fine afterwards.
    assert http_request(proxy.port, "GET", "/fixed").status == 200


@pytest.mark.timeout(60)
def test_client_disconnect_mid_big_body_closes_upstream(proxy):
    up = proxy.up
    client = RawClient(proxy.port, timeout=10)
    client.request("GET", "/big?mib=100&mode=length")
    resp = client.read_head()
    assert resp.status == 200, resp.describe()
    got = 0
    while got < 1024 * 1024:
        chunk = client.read_chunk()
        assert chunk is not None
        got += len(chunk)
    req = up.heads[-1]
    assert req.path == "/big"
    conn = up.connection(req.conn_id)
    client.close()
    closed_at = time.monotonic()
    assert up.wait_for(lambda: conn.peer_closed_at is not None or conn.closed_at is not None, timeout=3), \
        "upstream still streaming 3s after the client went away"
    ended = min(t for t in (conn.peer_closed_at, conn.closed_at) if t is not None)
    assert ended - closed_at < 2.0
    assert not up.marks_named("big-done"), "the whole 100 MiB was pulled from the upstream anyway"
    assert http_request(proxy.port, "GET", "/fixed").status == 200
