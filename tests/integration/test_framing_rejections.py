"""Item 1: requests with broken or dangerous framing are rejected at the edge.

Each case is sent as exact bytes on a raw socket. The gateway must answer
with its JSON error, `Connection: close`, close the connection, never pass
the request to the upstream, and keep serving other clients.
"""
from __future__ import annotations

import pytest

from support import Proxy, RawClient, assert_gateway_error, http_request, simple_config

LIMITS = {
    "max_header_bytes": 4096,
    "max_header_count": 20,
    "max_uri_bytes": 512,
    "max_body_bytes": 1024,
}


@pytest.fixture
def strict_proxy(upstream, gateway_factory) -> Proxy:
    return Proxy(gateway_factory(simple_config(upstream.url, limits=LIMITS)), upstream)


def head(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# (id, bytes, status, code, keywords one of which the message should mention,
#  "head" when the request is refused before any of it may reach the upstream,
#  "body" when the problem only shows in the body)
CASES = [
    ("cl-and-te",
     head(["POST /echo HTTP/1.1", "Host: t", "Content-Length: 5", "Transfer-Encoding: chunked"]) + b"0\r\n\r\n",
     400, "bad_request", ["content-length", "transfer-encoding"], "head"),
    # The classic smuggling shape: whatever the gateway believes the body is,
    # the request that follows it must never reach the upstream.
    ("cl-and-te-smuggle",
     head(["POST /echo HTTP/1.1", "Host: t", "Content-Length: 6", "Transfer-Encoding: chunked"])
     + b"0\r\n\r\n" + head(["GET /smuggled HTTP/1.1", "Host: t"]),
     400, "bad_request", ["content-length", "transfer-encoding"], "head"),
    ("two-cl-same",
     head(["POST /echo HTTP/1.1", "Host: t", "Content-Length: 5", "Content-Length: 5"]) + b"hello",
     400, "bad_request", ["content-length"], "head"),
    ("two-cl-different",
     head(["POST /echo HTTP/1.1", "Host: t", "Content-Length: 5", "Content-Length: 6"]) + b"hello!",
     400, "bad_request", ["content-length"], "head"),
    ("cl-non-numeric",
     head(["POST /echo HTTP/1.1", "Host: t", "Content-Length: abc"]) + b"abc",
     400, "bad_request", ["content-length"], "head"),
    ("cl-negative",
     head(["POST /echo HTTP/1.1", "Host: t", "Content-Length: -1"]),
     400, "bad_request", ["content-length"], "head"),
    ("te-gzip-chunked",
     head(["POST /echo HTTP/1.1", "Host: t", "Transfer-Encoding: gzip, chunked"]) + b"0\r\n\r\n",
     501, "unsupported_transfer_coding", ["transfer-encoding", "transfer coding", "gzip"], "head"),
    ("te-identity",
     head(["POST /echo HTTP/1.1", "Host: t", "Transfer-Encoding: identity"]) + b"hello",
     501, "unsupported_transfer_coding", ["transfer-encoding", "transfer coding", "identity"], "head"),
    # chunked applied twice: not "exactly chunked" (501 by the gateway's rule),
    # and also invalid per RFC 9112 6.1 (400): either refusal is right.
    ("te-chunked-twice",
     head(["POST /echo HTTP/1.1", "Host: t", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"])
     + b"0\r\n\r\n",
     (501, 400), ("unsupported_transfer_coding", "bad_request"), ["transfer-encoding", "transfer coding", "chunked"],
     "head"),
    ("malformed-request-line",
     head(["HELLO THERE", "Host: t"]),
     400, "bad_request", [], "head"),
    ("header-without-colon",
     head(["GET /echo HTTP/1.1", "Host: t", "X-No-Colon"]),
     400, "bad_request", [], "head"),
    ("space-before-colon",
     head(["GET /echo HTTP/1.1", "Host: t", "X-Spaced : v"]),
     400, "bad_request", [], "head"),
    ("obs-fold",
     head(["GET /echo HTTP/1.1", "Host: t", "X-Folded: first", " second"]),
     400, "bad_request", ["fold", "header", "whitespace", "continuation"], "head"),
    ("bad-chunk-size",
     head(["POST /echo HTTP/1.1", "Host: t", "Transfer-Encoding: chunked"]) + b"zz\r\nhello\r\n0\r\n\r\n",
     400, "bad_request", ["chunk"], "body"),
    ("control-char-in-value",
     head(["GET /echo HTTP/1.1", "Host: t", "X-Bad: a\x01b"]),
     400, "bad_request", ["header", "character", "control", "invalid"], "head"),
    ("http11-without-host",
     head(["GET /echo HTTP/1.1", "X-Other: 1"]),
     400, "bad_request", ["host"], "head"),
    ("two-hosts",
     head(["GET /echo HTTP/1.1", "Host: a.example", "Host: b.example"]),
     400, "bad_request", ["host"], "head"),
    ("uri-too-long",
     head(["GET /echo/" + "a" * 600 + " HTTP/1.1", "Host: t"]),
     414, "uri_too_long", [], "head"),
    ("too-many-headers",
     head(["GET /echo HTTP/1.1", "Host: t"] + [f"X-H{i}: {i}" for i in range(40)]),
     431, "headers_too_large", [], "head"),
    ("too-many-header-bytes",
     head(["GET /echo HTTP/1.1", "Host: t", "X-Big: " + "b" * 6000]),
     431, "headers_too_large", [], "head"),
    # The body is not sent at all: the 413 must come from the head alone.
    ("content-length-over-limit",
     head(["POST /echo HTTP/1.1", "Host: t", "Content-Length: 2048"]),
     413, "body_too_large", [], "head"),
    ("chunked-over-limit",
     head(["POST /echo HTTP/1.1", "Host: t", "Transfer-Encoding: chunked"])
     + b"320\r\n" + b"a" * 800 + b"\r\n" + b"320\r\n" + b"b" * 800 + b"\r\n0\r\n\r\n",
     413, "body_too_large", [], "body"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("data,status,code,keywords,phase",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_framing_rejected(strict_proxy: Proxy, data, status, code, keywords, phase):
    with RawClient(strict_proxy.port) as client:
        client.send(data)
        method = data.split(b" ", 1)[0].decode()
        resp = client.read_response(method)
        if isinstance(status, tuple):  # alternatives: (501, 400) with (code501, code400)
            assert resp.status in status, resp.describe()
            status, code = resp.status, code[status.index(resp.status)]
        err = assert_gateway_error(resp, status, code)
        if keywords:
            message = err["message"].lower()
            assert any(k in message for k in keywords), \
                f"message {err['message']!r} should say what is wrong (one of {keywords})"
        assert "close" in resp.header_tokens("connection"), \
            f"framing error without Connection: close: {resp.headers!r}"
        client.assert_closed(timeout=5)

    up = strict_proxy.up
    if phase == "head":
        assert up.heads == [], f"a rejected request reached the upstream: {[r.target for r in up.heads]}"
    else:
        # The head may have been streamed on before the body showed the
        # problem, but the upstream must never get a complete request.
        assert up.requests == [], "a rejected request reached the upstream complete"

    # The gateway keeps serving other clients.
    ok = http_request(strict_proxy.port, "GET", "/echo/after")
    assert ok.status == 200, ok.describe()
    assert ok.json()["target"] == "/echo/after"


@pytest.mark.timeout(30)
def test_limits_are_not_hit_by_requests_just_under_them(strict_proxy: Proxy):
    """The other side of each limit: a request at the edge is accepted."""
    headers = [(f"X-H{i}", str(i)) for i in range(10)]
    resp = http_request(strict_proxy.port, "POST", "/echo/" + "u" * 300, headers, b"x" * 1024)
    assert resp.status == 200, resp.describe()
    assert resp.json()["body"] == "x" * 1024
