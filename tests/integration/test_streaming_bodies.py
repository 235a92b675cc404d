"""Item 6: 20 MiB bodies streamed each way, checked byte for byte (sha256)."""
from __future__ import annotations

import hashlib

import pytest

from support import MiB, Proxy, RawClient, payload_chunks, payload_sha256, simple_config

SIZE = 20 * MiB


@pytest.fixture
def big_proxy(upstream, gateway_factory) -> Proxy:
    return Proxy(gateway_factory(simple_config(upstream.url, limits={"max_body_bytes": 32 * MiB})), upstream)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_upload_20mib(big_proxy, framing):
    seed = 11
    with RawClient(big_proxy.port, timeout=20) as client:
        if framing == "content-length":
            client.request("POST", "/digest", [("Content-Length", str(SIZE))])
            for piece in payload_chunks(SIZE, seed, block=256 * 1024):
                client.send(piece)
        else:
            client.request("POST", "/digest", [("Transfer-Encoding", "chunked")])
            for piece in payload_chunks(SIZE, seed, block=256 * 1024):
                client.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            client.send(b"0\r\n\r\n")
        resp = client.read_response("POST", timeout=20)
    assert resp.status == 200, resp.describe()
    doc = resp.json()
    assert doc["length"] == SIZE
    assert doc["sha256"] == payload_sha256(SIZE, seed), "request body corrupted on the way upstream"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_download_20mib(big_proxy, mode):
    seed = 23
    digest = hashlib.sha256()
    received = 0

    def sink(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)
        digest.update(chunk)

    with RawClient(big_proxy.port, timeout=20) as client:
        client.request("GET", f"/big?mib=20&mode={mode}&seed={seed}")
        resp = client.read_response(sink=sink, timeout=20)
        assert resp.status == 200, resp.describe()
        if mode == "length":
            assert resp.header("content-length") == str(SIZE)
        assert received == SIZE
        assert digest.hexdigest() == payload_sha256(SIZE, seed), "response body corrupted on the way down"
        # The connection is still in sync after 20 MiB.
        client.request("GET", "/fixed")
        assert client.read_response().body == b"hello from upstream\n"
