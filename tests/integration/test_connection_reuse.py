"""Item 4: keep-alive, pipelining, HTTP/1.0, bodiless responses and chunked
bodies on persistent connections."""
from __future__ import annotations

import pytest

from support import RawClient, build_request, chunked


@pytest.mark.timeout(30)
def test_keepalive_and_upstream_pooling(proxy):
    n = 20
    with RawClient(proxy.port) as client:
        for i in range(n):
            client.request("GET", f"/echo/ka?i={i}")
            resp = client.read_response()
            assert resp.status == 200, resp.describe()
            assert resp.json()["target"] == f"/echo/ka?i={i}"
            assert "close" not in resp.header_tokens("connection")
        assert client.is_open(), "gateway closed a keep-alive connection"
    assert len(proxy.up.requests) == n
    # One client connection, one request at a time: one pooled upstream
    # connection carries them all (a second one means a connection was dropped).
    conns = {r.conn_id for r in proxy.up.requests}
    assert len(conns) == 1, f"{len(conns)} upstream connections for {n} sequential keep-alive requests"
    assert [r.index_on_conn for r in proxy.up.requests] == list(range(1, n + 1))


@pytest.mark.timeout(30)
def test_pipelined_requests_answered_in_order(proxy):
    with RawClient(proxy.port) as client:
        client.send(
            build_request("GET", "/slow/1?delay=0.5")
            + build_request("GET", "/echo/2")
            + build_request("POST", "/echo/3", body=b"third")
        )
        first = client.read_response()
        second = client.read_response()
        third = client.read_response("POST")
    assert (first.status, second.status, third.status) == (200, 200, 200)
    assert first.json()["target"] == "/slow/1?delay=0.5"
    assert second.json()["target"] == "/echo/2"
    assert third.json()["target"] == "/echo/3"
    assert third.json()["body"] == "third"


@pytest.mark.timeout(30)
def test_http10_closes_unless_keepalive_requested(proxy):
    with RawClient(proxy.port) as client:
        client.request("GET", "/echo/old", version="1.0", host=None)
        resp = client.read_response(version="1.0")
        assert resp.status == 200, resp.describe()
        assert resp.json()["target"] == "/echo/old"
        client.assert_closed(timeout=5)

    with RawClient(proxy.port) as client:
        for i in range(3):
            client.request("GET", f"/echo/old-ka{i}", [("Connection", "keep-alive")], version="1.0")
            resp = client.read_response(version="1.0")
            assert resp.status == 200, resp.describe()
            assert resp.json()["target"] == f"/echo/old-ka{i}"
            assert resp.header("transfer-encoding") is None, "chunked sent to an HTTP/1.0 client"
            assert "keep-alive" in resp.header_tokens("connection"), resp.headers
        assert client.is_open(), "HTTP/1.0 keep-alive connection was closed"


@pytest.mark.timeout(30)
def test_http10_client_gets_no_chunked_body(proxy):
    with RawClient(proxy.port) as client:
        client.request("GET", "/chunked?parts=4", version="1.0", host=None)
        resp = client.read_response(version="1.0")
        assert resp.status == 200
        assert resp.header("transfer-encoding") is None, "chunked sent to an HTTP/1.0 client"
        assert resp.body == b"part-0\npart-1\npart-2\npart-3\n"
        client.assert_closed(timeout=5)


@pytest.mark.timeout(30)
def test_bodiless_responses_keep_the_connection_in_sync(proxy):
    with RawClient(proxy.port) as client:
        client.request("HEAD", "/fixed")
        resp = client.read_response("HEAD")
        assert resp.status == 200 and resp.body == b""
        assert resp.header("content-length") == "20"
        client.request("GET", "/status/204")
        resp = client.read_response()
        assert resp.status == 204 and resp.body == b""
        client.request("GET", "/status/304", [("If-None-Match", '"v1"')])
        resp = client.read_response()
        assert resp.status == 304 and resp.body == b""
        client.request("HEAD", "/big?kib=64&mode=chunked")
        resp = client.read_response("HEAD")
        assert resp.status == 200 and resp.body == b""
        client.request("GET", "/fixed")
        resp = client.read_response()
        assert resp.status == 200 and resp.body == b"hello from upstream\n"
        assert client.is_open()


@pytest.mark.timeout(30)
def test_chunked_request_body_forwarded_intact(proxy):
    parts = [b"a" * 1, b"hello ", b"x" * 5000, b"\r\n0\r\n", bytes(range(256)), b"z" * 26]
    body = chunked(parts)
    # Also an upper-case hex size and a chunk extension, both legal.
    body = body.replace(b"1388\r\n", b"1388;name=value\r\n").replace(b"1a\r\n", b"1A\r\n")
    assert b"1A\r\n" in body and b";name=value" in body
    with RawClient(proxy.port) as client:
        client.request("POST", "/echo/chunked-in", [("Transfer-Encoding", "chunked")], body)
        resp = client.read_response("POST")
        assert resp.status == 200, resp.describe()
        assert resp.json()["body"].encode("latin-1") == b"".join(parts)
        # Same connection, next request still parsed correctly.
        client.request("POST", "/echo/after", body=b"next")
        assert client.read_response("POST").json()["body"] == "next"
    [req, _] = proxy.up.requests
    assert req.body == b"".join(parts)


@pytest.mark.timeout(30)
def test_chunked_response_relayed(proxy):
    with RawClient(proxy.port) as client:
        client.request("GET", "/chunked?parts=6")
        resp = client.read_response()
        assert resp.status == 200, resp.describe()
        assert resp.body == b"".join(f"part-{i}\n".encode() for i in range(6))
        client.request("GET", "/fixed")
        assert client.read_response().status == 200
