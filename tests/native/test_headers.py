"""fastgw/_native/headers.pyx called directly: scans, head builders, rewrites, ids.

The head builders are compared with a pure-Python reference written from the
module docstring and the builders' docstrings (see `ref_request_head` and
`ref_response_head`) on fixed examples and on seeded random header lists, and
every head they produce is parsed by h11 to prove it is valid HTTP/1.1.

The tests at the end of this file pin down rewrite rules on headers the
gateway writes itself (they were found as bugs by this suite and fixed).
"""
from __future__ import annotations

import random
import re

import h11
import pytest

from fastgw._native.headers import (FORWARDED, REQUEST_ID, TRACE, FRAMING_CHUNKED, FRAMING_CLOSE, FRAMING_LENGTH, FRAMING_NONE,
                                    NO_REWRITE, HeaderRewrite, RequestIds, build_request_head,
                                    build_response_head, http_version, scan_request, scan_response,
                                    status_line)

# --- the reference --------------------------------------------------------------

# Hop-by-hop: never forwarded as received, in either direction.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"upgrade", b"transfer-encoding"})
# Written by the gateway on the upstream request (client values are not forwarded).
GATEWAY_WRITTEN = frozenset({b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id", b"expect"})
# Framing and connection-level headers: a route's rewrite never touches them
# (mirrors GATEWAY_OWNED_HEADERS in fastgw/config/schema.py).
GATEWAY_OWNED = HOP_BY_HOP | {b"content-length"}
# A Connection header naming these does not remove them: they address and frame
# the request itself (dropping Content-Length would unframe the body).
NEVER_CONNECTION_DROPPED = frozenset({b"host", b"content-length"})
PLAIN_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade"})

REASONS = {101: b"Switching Protocols", 200: b"OK", 201: b"Created", 204: b"No Content",
           304: b"Not Modified", 404: b"Not Found", 500: b"Internal Server Error",
           502: b"Bad Gateway"}


def values_of(headers, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name]


def connection_tokens(headers) -> set[bytes] | None:
    """Every token of every Connection header, lower-case; None without one."""
    conn = values_of(headers, b"connection")
    if not conn:
        return None
    return {t.strip().lower() for v in conn for t in v.split(b",") if t.strip()}


def ref_scan(headers, http11: bool) -> dict:
    """What scan_request must report for a valid request."""
    tokens = connection_tokens(headers)
    if tokens is None:
        keep_alive = http11
    elif b"close" in tokens:
        keep_alive = False
    else:
        keep_alive = http11 or b"keep-alive" in tokens
    upgrade = tokens is not None and b"upgrade" in tokens
    upgrades = values_of(headers, b"upgrade")
    hosts = values_of(headers, b"host")
    lengths = values_of(headers, b"content-length")
    ids = [v for v in values_of(headers, b"x-request-id") if 1 <= len(v) <= 200]
    return dict(
        error_status=0,
        host=hosts[-1].strip() if hosts else None,
        content_length=int(lengths[-1]) if lengths else -1,
        chunked=bool(values_of(headers, b"transfer-encoding")),
        keep_alive=keep_alive,
        expect_continue=bool(values_of(headers, b"expect")),
        upgrade=upgrade,
        websocket=bool(upgrade and upgrades and upgrades[-1].strip().lower() == b"websocket"),
        request_id=ids[-1] if ids else None,
        connection_tokens=None if tokens is None or tokens <= PLAIN_TOKENS else frozenset(tokens),
    )


def info_dict(info) -> dict:
    return {k: getattr(info, k) for k in ref_scan([], True)}


def canonical(lower_name: bytes) -> bytes:
    return b"-".join(p[:1].upper() + p[1:] for p in lower_name.split(b"-"))


class Rewrite:
    """A route's rewrite as plain data, for the reference and for HeaderRewrite."""

    def __init__(self, add=(), set=(), remove=()):
        self.add, self.set, self.remove = tuple(add), tuple(set), tuple(remove)

    def native(self) -> HeaderRewrite:
        return HeaderRewrite(add=self.add, set=self.set, remove=self.remove)

    def apply(self, fields):
        """remove, then set (replace), then add (append); connection-level headers are immune."""
        drop = {n.lower() for n in self.remove} | {n.lower() for n, _ in self.set}
        kept = [(n, v) for n, v in fields if n.lower() not in drop or n.lower() in GATEWAY_OWNED]
        return (kept + [(canonical(n.lower()), v) for n, v in self.set]
                + [(canonical(n.lower()), v) for n, v in self.add])


def serialise(start: bytes, fields) -> bytes:
    return start + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"\r\n"


def ref_request_head(method, target, headers, http11, rewrite, client_ip, request_id, default_host):
    scan = ref_scan(headers, http11)
    tokens = connection_tokens(headers) or set()
    fields, xff = [], []
    for name, value in headers:
        lower = name.lower()
        if lower == b"x-forwarded-for":
            xff.append(value)
        elif lower in HOP_BY_HOP or lower in GATEWAY_WRITTEN:
            continue
        elif lower in tokens and lower not in NEVER_CONNECTION_DROPPED:
            continue
        else:
            fields.append((name, value))
    if scan["host"] is None:
        fields.append((b"Host", default_host))
    if scan["chunked"]:
        fields.append((b"Transfer-Encoding", b"chunked"))
    if scan["websocket"]:
        fields += [(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")]
    fields.append((b"X-Forwarded-For", b", ".join(xff + [client_ip])))
    fields.append((b"X-Forwarded-Proto", b"http"))
    if scan["host"] is not None:
        fields.append((b"X-Forwarded-Host", scan["host"]))
    fields.append((b"X-Request-ID", request_id))
    fields = rewrite.apply(fields)
    return serialise(method + b" " + target + b" HTTP/1.1", fields)


def ref_response_head(status, reason, headers, rewrite, request_id, framing, keep_alive,
                      http10_client=False):
    tokens = connection_tokens(headers) or set()
    fields, has_id = [], False
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            continue
        if lower == b"content-length":
            if framing == FRAMING_LENGTH:
                fields.append((name, value))
        elif lower == b"x-request-id":
            has_id = True
            fields.append((name, value))
        elif lower not in tokens:
            fields.append((name, value))
    if framing == FRAMING_CHUNKED:
        fields.append((b"Transfer-Encoding", b"chunked"))
    if not has_id:
        fields.append((b"X-Request-ID", request_id))
    fields = rewrite.apply(fields)
    if status == 101:
        fields += [(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")]
    elif not keep_alive:
        fields.append((b"Connection", b"close"))
    elif http10_client:
        fields.append((b"Connection", b"keep-alive"))
    return serialise(b"HTTP/1.1 %d %s" % (status, reason or REASONS[status]), fields)


# --- parsing what the builders produce ----------------------------------------------

def split_head(head: bytes):
    """(start line, [(name, value)]) of a serialised head; strict about CRLF."""
    assert head.endswith(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    fields = []
    for line in lines[1:]:
        assert b"\r" not in line and b"\n" not in line, line
        name, sep, value = line.partition(b": ")
        assert sep and name, line
        fields.append((name, value))
    return lines[0], fields


def h11_server_events(head: bytes, body: bytes = b""):
    """Parse an upstream request head (+ body) as an HTTP/1.1 server would."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head + body)
    events = []
    while True:
        event = conn.next_event()
        if event in (h11.NEED_DATA, h11.PAUSED):
            return events
        events.append(event)


def h11_client_events(head: bytes, body: bytes = b"", *, method=b"GET", request_headers=(),
                      eof=False):
    """Parse a client response head (+ body) after sending a matching request."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target=b"/", headers=[(b"Host", b"gw")] + list(request_headers)))
    conn.send(h11.EndOfMessage())
    conn.receive_data(head + body)
    if eof:
        conn.receive_data(b"")
    events = []
    while True:
        event = conn.next_event()
        if event in (h11.NEED_DATA, h11.PAUSED):
            return conn, events
        events.append(event)
        if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)) or (
                isinstance(event, h11.InformationalResponse) and event.status_code == 101):
            return conn, events


def lower_fields(fields):
    return [(n.lower(), v) for n, v in fields]


# --- scan_request ---------------------------------------------------------------

H = (b"Host", b"example.com")


def test_scan_request_plain_get():
    info = scan_request([H, (b"Accept", b"*/*")], True)
    assert info_dict(info) == dict(error_status=0, host=b"example.com", content_length=-1,
                                   chunked=False, keep_alive=True, expect_continue=False,
                                   upgrade=False, websocket=False, request_id=None,
                                   connection_tokens=None)
    assert info.error_code is None and info.error_message is None


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b"CHUNKED", b"cHuNkEd", b" chunked ",
                                   b"\tchunked"])
def test_scan_request_transfer_encoding_chunked(value):
    info = scan_request([H, (b"tRaNsFeR-eNcOdInG", value)], True)
    assert (info.error_status, info.chunked) == (0, True)


@pytest.mark.parametrize("value", [b"gzip", b"gzip, chunked", b"chunked, gzip", b"chunked,chunked",
                                   b"identity", b"chunked;x=1", b"chunkedx", b"xchunked", b"",
                                   b"chun ked"])
def test_scan_request_other_transfer_codings_are_501(value):
    info = scan_request([H, (b"Transfer-Encoding", value)], True)
    assert (info.error_status, info.error_code, info.error_message) == (
        501, "unsupported_transfer_coding", "only 'Transfer-Encoding: chunked' is supported")
    assert info.chunked is False


def test_scan_request_duplicate_host_is_400():
    for http11 in (True, False):
        info = scan_request([(b"Host", b"a"), (b"X-A", b"1"), (b"HOST", b"a")], http11)
        assert (info.error_status, info.error_code, info.error_message) == (
            400, "bad_request", "more than one Host header")


def test_scan_request_missing_host():
    info = scan_request([(b"Accept", b"*/*")], True)
    assert (info.error_status, info.error_code, info.error_message) == (
        400, "bad_request", "HTTP/1.1 request without a Host header")
    info = scan_request([(b"Accept", b"*/*")], False)
    assert (info.error_status, info.host, info.keep_alive) == (0, None, False)


def test_scan_request_host_is_stripped_and_name_case_insensitive():
    assert scan_request([(b"hOsT", b" api.example.com:8080 ")], True).host == b"api.example.com:8080"


def test_scan_request_near_miss_names_are_ordinary():
    """Same length as a special name, one byte off: must not be classified."""
    near = [(b"Hosx", b"a"), (b"Tf", b"gzip"), (b"Expecx", b"nope"), (b"Upgradx", b"websocket"),
            (b"Connectiox", b"close"), (b"X-Request-Ix", b"id"), (b"Content-Lengtx", b"zz"),
            (b"Transfer-Encodinx", b"gzip")]
    info = scan_request([H] + near, True)
    assert info_dict(info) == dict(ref_scan([H], True))
    # without a real Host, a near-miss Host does not count
    assert scan_request(near, True).error_status == 400


@pytest.mark.parametrize("value,expected", [(b"0", 0), (b"7", 7), (b"12345", 12345),
                                            (b"000042", 42), (b"123456789012345678", 123456789012345678)])
def test_scan_request_content_length(value, expected):
    info = scan_request([H, (b"content-LENGTH", value)], True)
    assert (info.error_status, info.content_length) == (0, expected)


@pytest.mark.parametrize("value", [b"", b"abc", b"-1", b"1.5", b"0x10", b"1000000000000000000000"])
def test_scan_request_bad_content_length_is_400(value):
    info = scan_request([H, (b"Content-Length", value)], True)
    assert (info.error_status, info.error_code, info.error_message, info.content_length) == (
        400, "bad_request", "invalid Content-Length", -1)


@pytest.mark.parametrize("http11,connection,keep_alive", [
    (True, None, True),
    (True, [b"close"], False),
    (True, [b"Close"], False),
    (True, [b"keep-alive"], True),
    (True, [b"keep-alive, close"], False),
    (True, [b"keep-alive", b"CLOSE"], False),
    (True, [b"x-foo"], True),
    (False, None, False),
    (False, [b"keep-alive"], True),
    (False, [b"Keep-Alive, x-foo"], True),
    (False, [b"x-foo", b"KEEP-ALIVE"], True),
    (False, [b"keep-alive, close"], False),
    (False, [b"x-foo"], False),
    (False, [b"upgrade"], False),
])
def test_scan_request_keep_alive(http11, connection, keep_alive):
    headers = [H] + [(b"Connection", v) for v in connection or ()]
    assert scan_request(headers, http11).keep_alive is keep_alive


@pytest.mark.parametrize("connection,tokens", [
    (None, None),
    ([b"close"], None),
    ([b"keep-alive"], None),
    ([b"Upgrade"], None),
    ([b"close, Keep-Alive , UPGRADE", b""], None),
    ([b"close, X-Foo"], frozenset({b"close", b"x-foo"})),
    ([b"x-a,,  ,X-B", b"x-c"], frozenset({b"x-a", b"x-b", b"x-c"})),
    ([b"keep-alive", b"TE"], frozenset({b"keep-alive", b"te"})),
])
def test_scan_request_connection_tokens(connection, tokens):
    headers = [H] + [(b"Connection", v) for v in connection or ()]
    assert scan_request(headers, True).connection_tokens == tokens


@pytest.mark.parametrize("value", [b"100-continue", b"100-Continue", b"100-CONTINUE", b" 100-continue "])
def test_scan_request_expect_continue(value):
    info = scan_request([H, (b"EXPECT", value)], True)
    assert (info.error_status, info.expect_continue) == (0, True)


@pytest.mark.parametrize("value", [b"something", b"100-continue, x", b"", b"200-ok", b"100-continuex"])
def test_scan_request_other_expectations_are_417(value):
    info = scan_request([H, (b"Expect", value)], True)
    assert (info.error_status, info.error_code, info.error_message, info.expect_continue) == (
        417, "expectation_failed", "only 'Expect: 100-continue' is supported", False)


@pytest.mark.parametrize("headers,upgrade,websocket", [
    ([(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")], True, True),
    ([(b"upgrade", b"WebSocket"), (b"connection", b"keep-alive, upgrade")], True, True),
    ([(b"Connection", b"upgrade"), (b"Upgrade", b" websocket ")], True, True),
    ([(b"Upgrade", b"websocket")], False, False),
    ([(b"Upgrade", b"websocket"), (b"Connection", b"keep-alive")], False, False),
    ([(b"Connection", b"upgrade")], True, False),
    ([(b"Upgrade", b"h2c"), (b"Connection", b"Upgrade, HTTP2-Settings")], True, False),
    ([(b"Upgrade", b"websocket, h2c"), (b"Connection", b"upgrade")], True, False),
])
def test_scan_request_websocket(headers, upgrade, websocket):
    info = scan_request([H] + headers, True)
    assert (info.error_status, info.upgrade, info.websocket) == (0, upgrade, websocket)


@pytest.mark.parametrize("values,kept", [
    ([b"a"], b"a"),
    ([b"r" * 200], b"r" * 200),
    ([b"r" * 201], None),
    ([b""], None),
    ([b"first", b"second"], b"second"),
    ([b"first", b""], b"first"),
    ([b"first", b"x" * 201], b"first"),
])
def test_scan_request_request_id(values, kept):
    info = scan_request([H] + [(b"x-REQUEST-id", v) for v in values], True)
    assert (info.error_status, info.request_id) == (0, kept)


def test_scan_request_first_error_wins():
    info = scan_request([H, (b"Transfer-Encoding", b"gzip"), (b"Expect", b"nope"), H], True)
    assert (info.error_status, info.error_code) == (501, "unsupported_transfer_coding")
    info = scan_request([(b"Expect", b"nope"), (b"Transfer-Encoding", b"gzip")], True)
    assert (info.error_status, info.error_code) == (417, "expectation_failed")
    # Host checks run after the header loop
    info = scan_request([(b"Content-Length", b"x")], True)
    assert (info.error_status, info.error_message) == (400, "invalid Content-Length")


# --- scan_response ---------------------------------------------------------------

def test_scan_response_plain():
    info = scan_response([(b"Content-Type", b"text/plain"), (b"Content-Length", b"12")], True)
    assert (info.error_status, info.content_length, info.chunked, info.keep_alive,
            info.connection_tokens, info.host, info.request_id) == (0, 12, False, True, None, None, None)


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b" CHUNKED"])
def test_scan_response_chunked(value):
    info = scan_response([(b"Transfer-Encoding", value)], True)
    assert (info.error_status, info.chunked, info.content_length) == (0, True, -1)


@pytest.mark.parametrize("value", [b"gzip", b"gzip, chunked", b"chunked, identity", b"identity", b""])
def test_scan_response_other_transfer_codings_are_502(value):
    info = scan_response([(b"transfer-encoding", value)], True)
    assert (info.error_status, info.error_code, info.error_message) == (
        502, "upstream_bad_response", "unsupported Transfer-Encoding from upstream")


def test_scan_response_bad_content_length_is_502():
    info = scan_response([(b"Content-Length", b"ten")], True)
    assert (info.error_status, info.error_code, info.error_message) == (
        502, "upstream_bad_response", "invalid Content-Length from upstream")


def test_scan_response_ignores_request_only_rules():
    """No Host needed, Expect and X-Request-ID are ordinary in a response."""
    info = scan_response([(b"Expect", b"nope"), (b"Host", b"a"), (b"Host", b"b"),
                          (b"X-Request-ID", b"up")], True)
    assert (info.error_status, info.host, info.request_id, info.expect_continue) == (0, None, None, False)


@pytest.mark.parametrize("http11,connection,keep_alive,tokens", [
    (True, None, True, None),
    (True, [b"close"], False, None),
    (True, [b"Keep-Alive"], True, None),
    (True, [b"close, X-Secret"], False, frozenset({b"close", b"x-secret"})),
    (False, None, False, None),
    (False, [b"keep-alive"], True, None),
    (False, [b"keep-alive", b"close"], False, None),
    (False, [b"X-A"], False, frozenset({b"x-a"})),
])
def test_scan_response_keep_alive(http11, connection, keep_alive, tokens):
    info = scan_response([(b"Connection", v) for v in connection or ()], http11)
    assert (info.error_status, info.keep_alive, info.connection_tokens) == (0, keep_alive, tokens)


def test_scan_response_upgrade():
    info = scan_response([(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")], True)
    assert (info.upgrade, info.websocket) == (True, False)  # websocket is a request-side notion


# --- status_line ------------------------------------------------------------------

@pytest.mark.parametrize("status,reason,line", [
    (200, None, b"HTTP/1.1 200 OK\r\n"),
    (200, b"", b"HTTP/1.1 200 OK\r\n"),
    (404, None, b"HTTP/1.1 404 Not Found\r\n"),
    (413, None, b"HTTP/1.1 413 Content Too Large\r\n"),
    (504, None, b"HTTP/1.1 504 Gateway Timeout\r\n"),
    (101, None, b"HTTP/1.1 101 Switching Protocols\r\n"),
    (299, None, b"HTTP/1.1 299 Unknown\r\n"),
    (200, b"Fine Thanks", b"HTTP/1.1 200 Fine Thanks\r\n"),
    (418, b"I'm a teapot", b"HTTP/1.1 418 I'm a teapot\r\n"),
])
def test_status_line(status, reason, line):
    assert status_line(status, reason) == line
    assert status_line(status, reason) == line  # second call: from the cache


def test_status_line_many_reasons_beyond_the_cache():
    for i in range(600):
        assert status_line(200 + i % 3, b"R%d" % i) == b"HTTP/1.1 %d R%d\r\n" % (200 + i % 3, i)
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"


# --- HeaderRewrite -------------------------------------------------------------------

def test_header_rewrite_fields():
    rw = HeaderRewrite(add=[(b"X-Served-By", b"gw")], set=[(b"x-api-version", b"2")],
                       remove=[b"X-Debug", b"server"])
    assert rw.drop == frozenset({b"x-debug", b"server", b"x-api-version"})
    assert rw.set_pairs == ((b"x-api-version", b"2"),)
    assert rw.add_pairs == ((b"x-served-by", b"gw"),)
    assert rw.appended == b"X-Api-Version: 2\r\nX-Served-By: gw\r\n"
    assert rw.lengths == frozenset({7, 6, 13})
    assert rw.empty is False


def test_header_rewrite_empty_and_add_only():
    for rw in (NO_REWRITE, HeaderRewrite()):
        assert (rw.drop, rw.appended, rw.lengths, rw.empty) == (frozenset(), b"", frozenset(), True)
    rw = HeaderRewrite(add=[(b"www-authenticate", b"Basic")])
    assert (rw.drop, rw.lengths, rw.appended, rw.empty) == (
        frozenset(), frozenset(), b"Www-Authenticate: Basic\r\n", False)
    rw = HeaderRewrite(remove=[b"x-a"])
    assert (rw.appended, rw.empty) == (b"", False)


def test_header_rewrite_canonical_names_split_on_dashes_only():
    rw = HeaderRewrite(set=[(b"X_UNDER.dot", b"1")], add=[(b"x-b3traceid", b"2"), (b"etag", b"3")])
    assert rw.appended == b"X_under.dot: 1\r\nX-B3traceid: 2\r\nEtag: 3\r\n"


# --- build_request_head: fixed examples -------------------------------------------------

def native_request(headers, *, http11=True, rewrite=Rewrite(), client_ip=b"10.0.0.9",
                   request_id=b"rid-1", default_host=b"backend:9001", method=b"GET", target=b"/x"):
    info = scan_request(headers, http11)
    assert info.error_status == 0, info.error_message
    return build_request_head(method, target, headers, info, rewrite.native(), client_ip,
                              request_id, default_host)


def reference_request(headers, *, http11=True, rewrite=Rewrite(), client_ip=b"10.0.0.9",
                      request_id=b"rid-1", default_host=b"backend:9001", method=b"GET", target=b"/x"):
    return ref_request_head(method, target, headers, http11, rewrite, client_ip, request_id, default_host)


def test_request_head_minimal_exact_bytes():
    assert native_request([(b"Host", b"api.example.com"), (b"Accept", b"*/*")]) == (
        b"GET /x HTTP/1.1\r\n"
        b"Host: api.example.com\r\n"
        b"Accept: */*\r\n"
        b"X-Forwarded-For: 10.0.0.9\r\n"
        b"X-Forwarded-Proto: http\r\n"
        b"X-Forwarded-Host: api.example.com\r\n"
        b"X-Request-ID: rid-1\r\n"
        b"\r\n")


def test_request_head_hop_by_hop_and_connection_named_headers_removed():
    headers = [(b"Host", b"h"), (b"Connection", b"keep-alive, X-Secret, x-other"),
               (b"Keep-Alive", b"timeout=5"), (b"Proxy-Connection", b"keep-alive"),
               (b"TE", b"trailers"), (b"Trailer", b"X-Sum"), (b"x-SECRET", b"s"),
               (b"X-Other", b"o"), (b"X-Others", b"kept"), (b"Upgrade", b"h2c")]
    head = native_request(headers)
    assert head == reference_request(headers)
    assert split_head(head)[1] == [
        (b"Host", b"h"), (b"X-Others", b"kept"), (b"X-Forwarded-For", b"10.0.0.9"),
        (b"X-Forwarded-Proto", b"http"), (b"X-Forwarded-Host", b"h"), (b"X-Request-ID", b"rid-1")]


def test_request_head_forwarding_headers():
    headers = [(b"Host", b"h"), (b"X-Forwarded-For", b"1.1.1.1"), (b"x-forwarded-proto", b"https"),
               (b"X-Forwarded-Host", b"evil"), (b"X-FORWARDED-FOR", b"2.2.2.2, 3.3.3.3"),
               (b"X-Request-ID", b"client-id"), (b"Expect", b"100-continue")]
    head = native_request(headers, request_id=b"client-id")
    assert head == reference_request(headers, request_id=b"client-id")
    assert split_head(head)[1] == [
        (b"Host", b"h"), (b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9"),
        (b"X-Forwarded-Proto", b"http"), (b"X-Forwarded-Host", b"h"), (b"X-Request-ID", b"client-id")]


def test_request_head_http10_without_host_gets_default_host():
    headers = [(b"Accept", b"*/*")]
    head = native_request(headers, http11=False)
    assert head == reference_request(headers, http11=False)
    assert split_head(head)[1] == [
        (b"Accept", b"*/*"), (b"Host", b"backend:9001"), (b"X-Forwarded-For", b"10.0.0.9"),
        (b"X-Forwarded-Proto", b"http"), (b"X-Request-ID", b"rid-1")]
    assert isinstance(h11_server_events(head)[0], h11.Request)


def test_request_head_chunked_is_redeclared_once():
    headers = [(b"Host", b"h"), (b"Transfer-Encoding", b" Chunked")]
    head = native_request(headers, method=b"POST")
    assert head == reference_request(headers, method=b"POST")
    assert values_of(split_head(head)[1], b"transfer-encoding") == [b"chunked"]
    events = h11_server_events(head, b"5\r\nhello\r\n0\r\n\r\n")
    assert [type(e) for e in events] == [h11.Request, h11.Data, h11.EndOfMessage]
    assert events[1].data == b"hello"


def test_request_head_content_length_kept():
    headers = [(b"Host", b"h"), (b"content-length", b"5")]
    head = native_request(headers, method=b"PUT")
    events = h11_server_events(head, b"hello")
    assert [type(e) for e in events] == [h11.Request, h11.Data, h11.EndOfMessage]


def test_request_head_websocket():
    headers = [(b"Host", b"h"), (b"Connection", b"Upgrade"), (b"Upgrade", b"WebSocket"),
               (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"Sec-WebSocket-Version", b"13")]
    head = native_request(headers)
    assert head == reference_request(headers)
    fields = split_head(head)[1]
    assert values_of(fields, b"connection") == [b"upgrade"]
    assert values_of(fields, b"upgrade") == [b"websocket"]
    assert values_of(fields, b"sec-websocket-key") == [b"dGhlIHNhbXBsZSBub25jZQ=="]
    assert isinstance(h11_server_events(head)[0], h11.Request)


def test_request_head_non_websocket_upgrade_not_forwarded():
    headers = [(b"Host", b"h"), (b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"h2c"),
               (b"HTTP2-Settings", b"AAMAAABkAAQCAAAAAAIAAAAA")]
    fields = split_head(native_request(headers))[1]
    assert {n.lower() for n, _ in fields} == {b"host", b"x-forwarded-for", b"x-forwarded-proto",
                                             b"x-forwarded-host", b"x-request-id"}


def test_request_head_connection_naming_host_or_content_length_keeps_them():
    headers = [(b"Host", b"h"), (b"Content-Length", b"3"), (b"Connection", b"host, Content-Length")]
    head = native_request(headers, method=b"POST")
    assert head == reference_request(headers, method=b"POST")
    fields = split_head(head)[1]
    assert fields[:2] == [(b"Host", b"h"), (b"Content-Length", b"3")]
    assert [type(e) for e in h11_server_events(head, b"abc")] == [h11.Request, h11.Data, h11.EndOfMessage]


def test_request_head_rewrite_order_remove_set_add():
    rw = Rewrite(add=[(b"x-tag", b"added"), (b"accept", b"text/html")],
                 set=[(b"X-API-Version", b"2"), (b"x-absent", b"new")], remove=[b"x-debug"])
    headers = [(b"Host", b"h"), (b"X-Debug", b"1"), (b"x-api-version", b"1"), (b"Accept", b"*/*"),
               (b"X-TAG", b"orig"), (b"X-DEBUG", b"2"), (b"X-Api-Version", b"0")]
    head = native_request(headers, rewrite=rw)
    assert head == reference_request(headers, rewrite=rw)
    assert split_head(head)[1] == [
        (b"Host", b"h"), (b"Accept", b"*/*"), (b"X-TAG", b"orig"),
        (b"X-Forwarded-For", b"10.0.0.9"), (b"X-Forwarded-Proto", b"http"), (b"X-Forwarded-Host", b"h"),
        (b"X-Request-ID", b"rid-1"),
        (b"X-Api-Version", b"2"), (b"X-Absent", b"new"), (b"X-Tag", b"added"), (b"Accept", b"text/html")]


def test_request_head_rewrite_set_host_replaces_host():
    rw = Rewrite(set=[(b"host", b"internal.svc")])
    headers = [(b"Host", b"public.example.com")]
    head = native_request(headers, rewrite=rw)
    assert head == reference_request(headers, rewrite=rw)
    assert values_of(split_head(head)[1], b"host") == [b"internal.svc"]
    assert values_of(split_head(head)[1], b"x-forwarded-host") == [b"public.example.com"]


def test_request_head_length_prefilter_with_connection_tokens():
    """Rewrite names of the hop-by-hop lengths (2, 7, 10, 16, 17) must not confuse
    the length pre-filter, and Connection tokens apply to names of any length."""
    rw = Rewrite(remove=[b"xy", b"x-trace", b"x-tenant-1", b"x-forwarded-fox", b"x-proxy-connectio",
                         b"x-forwarded-hosx"],
                 set=[(b"ab", b"set")])
    headers = [(b"Host", b"h"), (b"TE", b"trailers"), (b"XY", b"gone"), (b"Xz", b"kept"),
               (b"X-Trace", b"gone"), (b"Trailer", b"x"), (b"X-Tenant-1", b"gone"),
               (b"X-Tenant-2", b"kept"), (b"Keep-Alive", b"5"), (b"X-Forwarded-Fox", b"gone"),
               (b"X-Forwarded-HOSX", b"gone"), (b"X-Proxy-Connectio", b"gone"),
               (b"AB", b"orig"), (b"Connection", b"x-far-longer-name-than-any-rule"),
               (b"X-Far-Longer-Name-Than-Any-Rule", b"gone"), (b"X-Short", b"kept")]
    head = native_request(headers, rewrite=rw)
    assert head == reference_request(headers, rewrite=rw)
    fields = split_head(head)[1]
    assert [v for _, v in fields if v in (b"gone", b"kept")] == [b"kept", b"kept", b"kept"]
    assert fields[-1] == (b"Ab", b"set")


# --- build_request_head: random differential test --------------------------------------------

ORDINARY = [b"accept", b"user-agent", b"cookie", b"authorization", b"cache-control", b"x-custom",
            b"x-debug", b"via", b"accept-encoding", b"x-b3-traceid", b"forwarded", b"date"]
# Same length as a name the scanner or the builders classify, one byte off.
NEAR_MISS = [b"tf", b"xe", b"hosx", b"post", b"expecx", b"upgradx", b"trailex", b"connectiox",
             b"keep-alivx", b"x-request-ix", b"content-lengtx", b"x-forwarded-fox",
             b"x-forwarded-hosx", b"proxy-connectiox", b"transfer-encodinx", b"x-forwarded-protx"]
HOP_NAMES = [b"keep-alive", b"proxy-connection", b"te", b"trailer"]
FORWARDING = [b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"]
# Names a random rewrite may use: everything a route may rewrite without touching
# headers the gateway writes or owns (those are covered by the tests at the end).
REWRITABLE = ORDINARY + NEAR_MISS
PLAIN_TOKEN_LIST = sorted(PLAIN_TOKENS)
VALUE_CHARS = b"abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_.,;=/ :\"()?@\xe9\xff"


def mixed_case(rng: random.Random, name: bytes) -> bytes:
    return bytes(c ^ 0x20 if 97 <= c <= 122 and rng.random() < 0.5 else c for c in name)


def random_value(rng: random.Random, *, empty_ok=True) -> bytes:
    n = rng.randint(0 if empty_ok else 1, 12)
    value = bytes(rng.choice(VALUE_CHARS) for _ in range(n)).strip()
    return value if value or empty_ok else b"v"


def random_rewrite(rng: random.Random) -> Rewrite:
    names = rng.sample(REWRITABLE, rng.randint(0, 6))
    ops = {"add": [], "set": [], "remove": []}
    for name in names:
        op = rng.choice(list(ops))
        name = mixed_case(rng, name) if rng.random() < 0.3 else name
        ops[op].append(name if op == "remove" else (name, random_value(rng)))
    return Rewrite(**ops)


def random_request(rng: random.Random):
    http11 = rng.random() < 0.8
    headers = []
    for _ in range(rng.randint(0, 10)):
        name = rng.choice(ORDINARY + NEAR_MISS + HOP_NAMES + FORWARDING)
        headers.append((mixed_case(rng, name), random_value(rng)))
    if rng.random() < 0.3 and headers:  # exact duplicates
        headers += rng.sample(headers, rng.randint(1, len(headers)))
    if http11 or rng.random() < 0.5:
        headers.append((mixed_case(rng, b"host"), rng.choice([b"example.com", b"api.example.com:8080",
                                                              b"[::1]:80", b"h"])))
    framing = rng.choice(["none", "length", "chunked"])
    body = b""
    if framing == "length":
        body = b"b" * rng.randint(0, 20)
        headers.append((mixed_case(rng, b"content-length"), b"%d" % len(body)))
    elif framing == "chunked" and http11:
        headers.append((mixed_case(rng, b"transfer-encoding"), rng.choice([b"chunked", b"Chunked", b" CHUNKED"])))
        body = b"4\r\nbody\r\n0\r\n\r\n"
    if rng.random() < 0.2:
        headers.append((mixed_case(rng, b"expect"), rng.choice([b"100-continue", b"100-Continue"])))
    if rng.random() < 0.3:
        headers.append((mixed_case(rng, b"x-request-id"),
                        rng.choice([b"abc", b"r" * 200, b"r" * 201, b"", b"id-%d" % rng.randint(0, 99)])))
    tokens = []
    if rng.random() < 0.3:
        headers.append((mixed_case(rng, b"upgrade"), rng.choice([b"websocket", b"WebSocket", b"h2c"])))
        tokens.append(b"upgrade")
    for _ in range(rng.randint(0, 3)):
        tokens.append(rng.choice(PLAIN_TOKEN_LIST + ORDINARY + NEAR_MISS + HOP_NAMES + FORWARDING
                                 + [b"host", b"content-length", b"expect"]))
    if tokens:
        tokens = [mixed_case(rng, t) for t in tokens]
        split = rng.randint(0, len(tokens))
        for part in (tokens[:split], tokens[split:]):
            if part:
                headers.append((mixed_case(rng, b"connection"), b" , ".join(part)))
    rng.shuffle(headers)
    return http11, headers, body



def test_request_head_matches_reference_on_random_headers():
    rng = random.Random(20240611)
    seen = {"websocket": 0, "chunked": 0, "tokens": 0, "http10": 0, "rewrite_hit": 0}
    for case in range(3000):
        http11, headers, body = random_request(rng)
        rewrite = random_rewrite(rng)
        info = scan_request(headers, http11)
        expected_scan = ref_scan(headers, http11)
        assert info_dict(info) == expected_scan, (case, headers)
        request_id = info.request_id if info.request_id is not None else b"gen-%d" % case
        method = rng.choice([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"])
        target = b"/p/%d?q=%d" % (case, rng.randint(0, 9))
        head = build_request_head(method, target, headers, info, rewrite.native(), b"192.0.2.7",
                                  request_id, b"default.internal")
        expected = ref_request_head(method, target, headers, http11, rewrite, b"192.0.2.7",
                                    request_id, b"default.internal")
        assert split_head(head) == split_head(expected), (case, headers, rewrite.__dict__)
        assert head == expected
        events = h11_server_events(head, body)
        request = events[0]
        assert isinstance(request, h11.Request), (case, head)
        assert (request.method, request.target, request.http_version) == (method, target, b"1.1")
        assert request.headers.raw_items() == split_head(expected)[1]
        assert isinstance(events[-1], h11.EndOfMessage)
        assert b"".join(e.data for e in events if isinstance(e, h11.Data)) == (
            b"body" if info.chunked else body)
        seen["websocket"] += info.websocket
        seen["chunked"] += info.chunked
        seen["tokens"] += info.connection_tokens is not None
        seen["http10"] += not http11
        seen["rewrite_hit"] += any(n.lower() in {d.lower() for d in rewrite.remove}
                                   for n, _ in headers)
    assert min(seen.values()) > 100, seen  # the generator reaches every feature


# --- build_response_head --------------------------------------------------------------

def native_response(status, headers, *, reason=b"", rewrite=Rewrite(), request_id=b"rid-1",
                    framing=FRAMING_LENGTH, keep_alive=True, http10_client=False, http11=True):
    info = scan_response(headers, http11)
    assert info.error_status == 0, info.error_message
    return build_response_head(status, reason, headers, info, rewrite.native(), request_id,
                               framing, keep_alive, http10_client)


def test_response_head_exact_bytes():
    head = native_response(200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"2")])
    assert head == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                    b"X-Request-ID: rid-1\r\n\r\n")
    conn, events = h11_client_events(head, b"ok")
    assert [type(e) for e in events] == [h11.Response, h11.Data, h11.EndOfMessage]
    assert (events[0].status_code, events[0].reason, events[1].data) == (200, b"OK", b"ok")
    assert conn.their_state is h11.DONE and conn.our_state is h11.DONE  # keep-alive


def test_response_head_framing_length():
    headers = [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")]  # TE always dropped
    head = native_response(200, headers, framing=FRAMING_LENGTH)
    fields = split_head(head)[1]
    assert fields == [(b"Content-Length", b"5"), (b"X-Request-ID", b"rid-1")]
    _, events = h11_client_events(head, b"hello")
    assert [type(e) for e in events] == [h11.Response, h11.Data, h11.EndOfMessage]


@pytest.mark.parametrize("upstream", [[(b"Content-Length", b"9")], [(b"Transfer-Encoding", b"chunked")], []])
def test_response_head_framing_chunked(upstream):
    head = native_response(200, upstream + [(b"X-A", b"1")], framing=FRAMING_CHUNKED)
    assert split_head(head)[1] == [(b"X-A", b"1"), (b"Transfer-Encoding", b"chunked"),
                                   (b"X-Request-ID", b"rid-1")]
    _, events = h11_client_events(head, b"3\r\nabc\r\n0\r\n\r\n")
    assert [type(e) for e in events] == [h11.Response, h11.Data, h11.EndOfMessage]
    assert events[1].data == b"abc"


@pytest.mark.parametrize("status,method", [(204, b"GET"), (304, b"GET"), (200, b"HEAD")])
def test_response_head_framing_none(status, method):
    head = native_response(status, [(b"Content-Length", b"10"), (b"ETag", b'"x"')], framing=FRAMING_NONE)
    assert split_head(head)[1] == [(b"ETag", b'"x"'), (b"X-Request-ID", b"rid-1")]
    conn, events = h11_client_events(head, method=method)
    assert [type(e) for e in events] == [h11.Response, h11.EndOfMessage]
    assert conn.their_state is h11.DONE


def test_response_head_head_request_keeps_content_length():
    """HEAD with a Content-Length: the proxy passes FRAMING_LENGTH, no body follows."""
    head = native_response(200, [(b"Content-Length", b"10")], framing=FRAMING_LENGTH)
    _, events = h11_client_events(head, method=b"HEAD")
    assert [type(e) for e in events] == [h11.Response, h11.EndOfMessage]
    assert values_of(events[0].headers.raw_items(), b"content-length") == [b"10"]


def test_response_head_framing_close():
    head = native_response(200, [(b"Content-Length", b"3"), (b"Connection", b"keep-alive")],
                           framing=FRAMING_CLOSE, keep_alive=False, http11=False)
    assert split_head(head)[1] == [(b"X-Request-ID", b"rid-1"), (b"Connection", b"close")]
    conn, events = h11_client_events(head, b"until eof", eof=True)
    assert [type(e) for e in events] == [h11.Response, h11.Data, h11.EndOfMessage]
    assert events[1].data == b"until eof"


@pytest.mark.parametrize("keep_alive,http10_client,connection", [
    (True, False, []), (False, False, [b"close"]), (True, True, [b"keep-alive"]), (False, True, [b"close"])])
def test_response_head_connection(keep_alive, http10_client, connection):
    head = native_response(200, [(b"Content-Length", b"0"), (b"Connection", b"close")],
                           keep_alive=keep_alive, http10_client=http10_client)
    fields = split_head(head)[1]
    assert values_of(fields, b"connection") == connection
    if connection:
        assert fields[-1] == (b"Connection", connection[0])
    conn, events = h11_client_events(head)
    assert [type(e) for e in events] == [h11.Response, h11.EndOfMessage]
    assert (conn.their_state is h11.MUST_CLOSE) == (not keep_alive)


def test_response_head_101():
    headers = [(b"Upgrade", b"WebSocket"), (b"Connection", b"Upgrade"),
               (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]
    head = native_response(101, headers, framing=FRAMING_NONE, keep_alive=False)
    assert head == (b"HTTP/1.1 101 Switching Protocols\r\n"
                    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                    b"X-Request-ID: rid-1\r\n"
                    b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n")
    conn, events = h11_client_events(head, request_headers=[(b"Connection", b"Upgrade"),
                                                            (b"Upgrade", b"websocket")])
    assert isinstance(events[0], h11.InformationalResponse) and events[0].status_code == 101
    assert conn.their_state is h11.SWITCHED_PROTOCOL


def test_response_head_request_id_only_when_absent():
    head = native_response(200, [(b"x-request-ID", b"from-upstream"), (b"Content-Length", b"0")])
    assert split_head(head)[1] == [(b"x-request-ID", b"from-upstream"), (b"Content-Length", b"0")]
    head = native_response(200, [(b"Content-Length", b"0")], request_id=b"mine")
    assert split_head(head)[1] == [(b"Content-Length", b"0"), (b"X-Request-ID", b"mine")]


def test_response_head_rewrite_and_connection_tokens():
    rw = Rewrite(add=[(b"x-served-by", b"gw")], set=[(b"server", b"fastgw")], remove=[b"x-powered-by"])
    headers = [(b"Server", b"nginx"), (b"X-Powered-By", b"php"), (b"Connection", b"X-Hop, close"),
               (b"x-hop", b"1"), (b"Content-Length", b"0"), (b"Keep-Alive", b"timeout=5"),
               (b"Trailer", b"x"), (b"Proxy-Connection", b"x"), (b"Upgrade", b"x"), (b"TE", b"x"),
               (b"Vary", b"Accept")]
    head = native_response(200, headers, rewrite=rw)
    assert head == ref_response_head(200, b"", headers, rw, b"rid-1", FRAMING_LENGTH, True)
    assert split_head(head)[1] == [(b"Content-Length", b"0"), (b"Vary", b"Accept"),
                                   (b"X-Request-ID", b"rid-1"), (b"Server", b"fastgw"),
                                   (b"X-Served-By", b"gw")]


def test_response_head_custom_reason():
    head = native_response(200, [(b"Content-Length", b"0")], reason=b"Fine")
    assert split_head(head)[0] == b"HTTP/1.1 200 Fine"
    _, events = h11_client_events(head)
    assert events[0].reason == b"Fine"


def random_response(rng: random.Random):
    headers = []
    for _ in range(rng.randint(0, 10)):
        name = rng.choice(ORDINARY + NEAR_MISS + HOP_NAMES + FORWARDING + [b"host", b"expect", b"server"])
        headers.append((mixed_case(rng, name), random_value(rng)))
    if rng.random() < 0.3 and headers:
        headers += rng.sample(headers, rng.randint(1, len(headers)))
    if rng.random() < 0.4:
        headers.append((mixed_case(rng, b"x-request-id"), b"up-%d" % rng.randint(0, 99)))
    # Any name but X-Request-ID (see test_response_head_request_id_only_when_absent).
    tokens = [mixed_case(rng, rng.choice(PLAIN_TOKEN_LIST + ORDINARY + NEAR_MISS + HOP_NAMES + FORWARDING
                                         + [b"host", b"expect", b"server", b"content-length"]))
              for _ in range(rng.randint(0, 3))]
    if tokens:
        headers.append((mixed_case(rng, b"connection"), b", ".join(tokens)))
    kind = rng.choice(["length", "chunked", "none", "close"])
    method, status, body, eof = b"GET", rng.choice([200, 201, 404, 500, 502, 299]), b"", False
    keep_alive, http10_client = rng.random() < 0.7, rng.random() < 0.2
    if kind == "length":
        n = rng.randint(0, 20)
        headers.append((mixed_case(rng, b"content-length"), b"%d" % n))
        framing, body = FRAMING_LENGTH, b"L" * n
    elif kind == "chunked":
        up = rng.choice([[], [(b"Content-Length", b"7")], [(b"transfer-encoding", b"chunked")]])
        headers += up
        framing, body = FRAMING_CHUNKED, b"2\r\nok\r\n0\r\n\r\n"
    elif kind == "none":
        framing = FRAMING_NONE
        method, status = rng.choice([(b"HEAD", 200), (b"GET", 204), (b"GET", 304), (b"HEAD", 404)])
    else:
        framing, keep_alive, body, eof = FRAMING_CLOSE, False, b"tail bytes", True
    rng.shuffle(headers)
    return dict(status=status, method=method, headers=headers, framing=framing,
                keep_alive=keep_alive, http10_client=http10_client, body=body, eof=eof,
                http11=rng.random() < 0.8)


def test_response_head_matches_reference_on_random_headers():
    rng = random.Random(1234567)
    for case in range(3000):
        r = random_response(rng)
        rewrite = random_rewrite(rng)
        reason = rng.choice([b"", b"", b"Custom Reason"])
        if r["status"] == 299 and not reason:
            reason = b"Whatever"
        info = scan_response(r["headers"], r["http11"])
        assert info.error_status == 0
        head = build_response_head(r["status"], reason, r["headers"], info, rewrite.native(),
                                   b"gen-%d" % case, r["framing"], r["keep_alive"], r["http10_client"])
        expected = ref_response_head(r["status"], reason, r["headers"], rewrite, b"gen-%d" % case,
                                     r["framing"], r["keep_alive"], r["http10_client"])
        assert split_head(head) == split_head(expected), (case, r, rewrite.__dict__)
        assert head == expected
        conn, events = h11_client_events(head, r["body"], method=r["method"], eof=r["eof"])
        response = events[0]
        assert isinstance(response, h11.Response), (case, head)
        assert response.status_code == r["status"]
        assert response.headers.raw_items() == split_head(expected)[1]
        assert isinstance(events[-1], h11.EndOfMessage), (case, head, events)
        data = b"".join(e.data for e in events if isinstance(e, h11.Data))
        if r["framing"] == FRAMING_CHUNKED:
            assert data == b"ok"
        elif r["method"] == b"HEAD" or r["framing"] == FRAMING_NONE:
            assert data == b""
        else:
            assert data == r["body"]
        assert (conn.their_state is h11.DONE) == r["keep_alive"]


# --- RequestIds ----------------------------------------------------------------------

def test_request_ids_unique_and_well_formed():
    ids = RequestIds()
    made = [ids.next() for _ in range(100_000)]
    assert len(set(made)) == 100_000
    prefix = made[0][:13]
    assert re.fullmatch(rb"[0-9a-f]{12}-", prefix)
    assert made[0] == prefix + b"00000001"
    assert made[-1] == prefix + b"%08x" % 100_000
    assert all(m.startswith(prefix) and len(m) == 21 for m in made)


def test_request_ids_instances_have_distinct_prefixes():
    prefixes = {RequestIds().next()[:13] for _ in range(50)}
    assert len(prefixes) == 50


def test_request_ids_past_32_bits_keep_every_digit():
    # "%08x" widens past 8 digits; the native writer must too.
    ids = RequestIds()
    prefix = ids.next()[:13]
    ids.counter = 0xFFFFFFFF
    assert ids.next() == prefix + b"100000000"
    ids.counter = 0xFFFFFFFFFFFFFFFE
    assert ids.next() == prefix + b"ffffffffffffffff"


# --- http_version: the cheap answer agrees with llhttp -----------------------------------

class _Heads:
    def __init__(self):
        self.headers = []

    def on_header(self, name, value):
        self.headers.append((name, value))


def _parsed(kind, version, connection_headers, framing=b"Content-Length: 0\r\n"):
    import httptools
    sink = _Heads()
    if kind == "request":
        parser = httptools.HttpRequestParser(sink)
        head = b"GET / HTTP/%s\r\nHost: h\r\n" % version
    else:
        parser = httptools.HttpResponseParser(sink)
        head = b"HTTP/%s 200 OK\r\n" % version
    parser.feed_data(head + b"".join(b"%s: %s\r\n" % h for h in connection_headers) + framing + b"\r\n")
    return parser, sink.headers


_CONNECTION_CASES = [
    [], [(b"Connection", b"keep-alive")], [(b"Connection", b"close")],
    [(b"Proxy-Connection", b"keep-alive")], [(b"Proxy-Connection", b"close")],
    [(b"Connection", b"Keep-Alive, x-other")], [(b"Connection", b"upgrade")],
]


@pytest.mark.parametrize("kind", ["request", "response"])
@pytest.mark.parametrize("version,expected", [(b"1.1", 11), (b"1.0", 10), (b"2.0", 20), (b"0.9", 9)])
@pytest.mark.parametrize("connection", _CONNECTION_CASES)
def test_http_version_agrees_with_llhttp(kind, version, expected, connection):
    if kind == "response" and version == b"0.9":
        expected = 9
    parser, headers = _parsed(kind, version, connection)
    scan = scan_request if kind == "request" else scan_response
    assert parser.get_http_version() == version.decode()
    assert http_version(parser, scan(headers, True)) == expected


@pytest.mark.parametrize("version,expected", [(b"1.1", 11), (b"1.0", 10)])
def test_http_version_of_a_response_read_to_close(version, expected):
    # No framing: llhttp's should_keep_alive() is false whatever the version,
    # so the answer must come from the version string.
    parser, headers = _parsed("response", version, [], framing=b"")
    assert http_version(parser, scan_response(headers, True)) == expected


def test_connection_seen_by_both_scans():
    for scan in (scan_request, scan_response):
        assert not scan([(b"Host", b"h")], True).connection_seen
        assert scan([(b"Host", b"h"), (b"connection", b"close")], True).connection_seen
        assert scan([(b"Host", b"h"), (b"Proxy-Connection", b"x")], True).connection_seen


# --- head flags: what the route's policies let the gateway write ---------------------------

_CLIENT_SENT = [(b"Host", b"api"), (b"X-Forwarded-For", b"203.0.113.1"), (b"X-Forwarded-Proto", b"https"),
                (b"X-Forwarded-Host", b"edge"), (b"X-Request-ID", b"client-id"),
                (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]


def _head_with(flags, rewrite=Rewrite(), headers=_CLIENT_SENT):
    info = scan_request(headers, True)
    head = build_request_head(b"GET", b"/x", headers, info, rewrite.native(), b"10.0.0.9", b"gw-id",
                              b"backend", flags)
    return split_head(head)[1]


def test_no_flags_passes_the_client_headers_through_untouched():
    got = _head_with(0)
    assert values_of(got, b"x-forwarded-for") == [b"203.0.113.1"]
    assert values_of(got, b"x-forwarded-proto") == [b"https"]
    assert values_of(got, b"x-forwarded-host") == [b"edge"]
    assert values_of(got, b"x-request-id") == [b"client-id"]
    assert values_of(got, b"traceparent") == [_CLIENT_SENT[-1][1]]


def test_each_flag_writes_only_its_own_headers():
    forwarded = _head_with(FORWARDED)
    assert values_of(forwarded, b"x-forwarded-for") == [b"203.0.113.1, 10.0.0.9"]
    assert values_of(forwarded, b"x-forwarded-proto") == [b"http"]
    assert values_of(forwarded, b"x-forwarded-host") == [b"api"]
    assert values_of(forwarded, b"x-request-id") == [b"client-id"]
    request_id = _head_with(REQUEST_ID)
    assert values_of(request_id, b"x-request-id") == [b"gw-id"]
    assert values_of(request_id, b"x-forwarded-for") == [b"203.0.113.1"]
    traced = _head_with(TRACE)
    [line] = values_of(traced, b"traceparent")
    assert line.startswith(b"00-4bf92f3577b34da6a3ce929d0e0e4736-") and not line.endswith(b"00f067aa0ba902b7-01")
    assert values_of(traced, b"x-request-id") == [b"client-id"]


def test_without_the_flag_a_route_rule_still_removes_or_sets_the_header():
    removed = _head_with(0, Rewrite(remove=[b"x-forwarded-for"], set=[(b"x-request-id", b"fixed")]))
    assert values_of(removed, b"x-forwarded-for") == []
    assert values_of(removed, b"x-request-id") == [b"fixed"]


def test_the_default_flags_are_forwarded_and_request_id():
    headers = [(b"Host", b"api")]
    info = scan_request(headers, True)
    assert build_request_head(b"GET", b"/", headers, info, NO_REWRITE, b"1.2.3.4", b"r", b"h") == \
        build_request_head(b"GET", b"/", headers, scan_request(headers, True), NO_REWRITE, b"1.2.3.4", b"r", b"h",
                           FORWARDED | REQUEST_ID)


def test_response_head_without_an_id_to_echo():
    info = scan_response([(b"Content-Length", b"0")], True)
    head = build_response_head(200, b"OK", [(b"Content-Length", b"0")], info, NO_REWRITE, None, FRAMING_LENGTH,
                               True)
    assert b"x-request-id" not in head.lower()


# --- heads larger than the builders' stack buffer -----------------------------------------

@pytest.mark.parametrize("size", [4000, 4096, 5000, 70_000])
def test_request_head_larger_than_the_stack_buffer(size):
    headers = [(b"Host", b"h"), (b"X-Big", b"v" * size), (b"X-After", b"a")]
    assert native_request(headers) == reference_request(headers)
    info = scan_response(headers[1:], True)
    head = build_response_head(200, b"OK", headers[1:], info, NO_REWRITE, b"rid", FRAMING_NONE, True)
    assert head.startswith(b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * size + b"\r\nX-After: a\r\n")
    assert head.endswith(b"\r\n\r\n")


def test_status_line_alternating_statuses_and_reasons():
    seen = [(200, b"OK"), (404, b"Not Found"), (200, b"Fine"), (200, b"OK"), (200, None), (200, b""),
            (503, b"Busy"), (503, b"Busy")]
    for status, reason in seen * 3:
        expected = b"HTTP/1.1 %d %s\r\n" % (status, reason or {200: b"OK", 503: b"Service Unavailable"}[status])
        assert status_line(status, reason) == expected


# --- divergences from the documented behaviour ------------------------------------------

def test_request_rewrite_cannot_remove_content_length():
    headers = [(b"Host", b"h"), (b"Content-Length", b"5")]
    head = native_request(headers, method=b"POST", rewrite=Rewrite(remove=[b"content-length"]))
    # The config accepts `remove: [Content-Length]` (only set/add are refused);
    # the upstream must still see the body framed, not "hello" as a next request.
    events = h11_server_events(head, b"hello")
    assert [type(e) for e in events] == [h11.Request, h11.Data, h11.EndOfMessage]


@pytest.mark.parametrize("name", [b"x-request-id", b"x-forwarded-for", b"x-forwarded-proto",
                                  b"x-forwarded-host"])
def test_request_rewrite_set_replaces_gateway_written_headers(name):
    headers = [(b"Host", b"h")]
    rw = Rewrite(set=[(name, b"configured")])
    head = native_request(headers, rewrite=rw)
    assert values_of(split_head(head)[1], name) == [b"configured"]
    assert head == reference_request(headers, rewrite=rw)


@pytest.mark.parametrize("name", [b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"])
def test_request_rewrite_remove_applies_to_gateway_written_headers(name):
    headers = [(b"Host", b"h")]
    rw = Rewrite(remove=[name])
    assert values_of(split_head(native_request(headers, rewrite=rw))[1], name) == []


def test_request_rewrite_set_host_without_client_host():
    head = native_request([(b"Accept", b"*/*")], http11=False, rewrite=Rewrite(set=[(b"host", b"svc")]))
    assert values_of(split_head(head)[1], b"host") == [b"svc"]
    assert isinstance(h11_server_events(head)[0], h11.Request)


@pytest.mark.parametrize("upstream", [[], [(b"X-Request-ID", b"up")]])
def test_response_rewrite_set_request_id_replaces(upstream):
    head = native_response(200, upstream + [(b"Content-Length", b"0")],
                           rewrite=Rewrite(set=[(b"x-request-id", b"configured")]))
    assert values_of(split_head(head)[1], b"x-request-id") == [b"configured"]
