"""fastgw/_native/accesslog.pyx driven directly: every line it builds is
byte for byte the line of the Python formatter it replaced (kept below as
`reference_line`), for escapes of every byte value, quotes, backslashes,
non-UTF-8 bytes (latin-1 -> UTF-8, as orjson wrote them), long values,
redaction, header selection and the millisecond figures. Exchange._account's
typed path (`record`) shares the line writer with `log` and is exercised
through the gateway by tests/integration/test_access_log.py."""
from __future__ import annotations

import calendar
import json
import re
import time
import types

import orjson
import pytest

from fastgw._native.accesslog import AccessLineBuffer
from fastgw._native.headers import trace_id_of

REDACT_HEADERS = (b"authorization", b"proxy-authorization", b"cookie", b"x-api-key")
REDACT_QUERY = (b"token", b"access_token", b"api_key", b"apikey", b"password", b"secret")
TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
SENT = b"traceparent: 00-" + TRACE + b"-00f067aa0ba902b7-01\r\n"
TIME = re.compile(rb'^\{"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)",')


# -- the formatter before the native builder (fastgw/observe/access_log.py at c73f952) --
def reference_line(ex, now, headers=(), redact_headers=REDACT_HEADERS, redact_query=REDACT_QUERY) -> bytes:
    headers, redact_headers, redact_query = frozenset(headers), frozenset(redact_headers), frozenset(redact_query)
    info = ex.info
    trace_id = None
    if info is not None:
        sent = info.sent_traceparent
        trace_id = sent[16:48] if sent is not None else trace_id_of(info.traceparent)
    plan = ex.plan
    endpoint = ex.endpoint

    def path(target):
        if target is None:
            return None
        q = target.find(b"?")
        if q < 0 or not redact_query:
            return target.decode("latin-1")
        parts = target[q + 1:].split(b"&")
        for i, part in enumerate(parts):
            name, eq, _ = part.partition(b"=")
            if name in redact_query:
                parts[i] = name + b"=" + b"REDACTED"
        return (target[:q + 1] + b"&".join(parts)).decode("latin-1")

    def chosen(request_headers):
        out = {}
        if not request_headers:
            return out
        for name, value in request_headers:
            lower = name.lower()
            if lower in headers:
                key = lower.decode("latin-1")
                text = "REDACTED" if lower in redact_headers else value.decode("latin-1")
                out[key] = out[key] + ", " + text if key in out else text
        return out

    return orjson.dumps({
        "time": now,
        "request_id": ex.request_id.decode("latin-1"),
        "trace_id": trace_id.decode() if trace_id else None,
        "client_ip": ex.client.peer_ip.decode("latin-1"),
        "method": ex.method.decode("latin-1"),
        "path": path(ex.target),
        "route": plan.route.name if plan is not None else None,
        "status": ex.status,
        "bytes_in": ex.body_bytes,
        "bytes_out": ex.bytes_out,
        "duration_ms": ex.duration_ns // 1000 / 1000,
        "upstream_ms": ex.upstream_ns // 1000 / 1000 if endpoint is not None else None,
        "upstream": endpoint,
        "retries": ex.retries,
        "rate_limit": (None, "allowed", "denied")[ex.rate_limit],
        "headers": chosen(ex.request_headers) if headers else None,
    }, option=orjson.OPT_APPEND_NEWLINE)


def exchange(**fields):
    values = dict(info=types.SimpleNamespace(sent_traceparent=SENT, traceparent=None),
                  plan=types.SimpleNamespace(route=types.SimpleNamespace(name="users")),
                  upstream_ns=1_520_000, request_id=b"a1b2-0000002a", client=types.SimpleNamespace(peer_ip=b"127.0.0.1"),
                  method=b"GET", target=b"/users/7", status=200, body_bytes=0, bytes_out=512,
                  duration_ns=1_840_000, endpoint="127.0.0.1:9001", retries=0, rate_limit=1,
                  request_headers=[(b"Host", b"t"), (b"User-Agent", b"curl/8")])
    peer_ip = fields.pop("peer_ip", None)
    values.update(fields)
    if peer_ip is not None:
        values["client"] = types.SimpleNamespace(peer_ip=peer_ip)
    return types.SimpleNamespace(**values)


def builder(headers=(), redact_headers=REDACT_HEADERS, redact_query=REDACT_QUERY, sampling=1.0, limit=1 << 30):
    return AccessLineBuffer(sampling, headers, redact_headers, redact_query, limit)


def lines_of(log, exchanges, **config) -> list[tuple[bytes, bytes]]:
    """(native line, reference line) for each exchange, the reference given the native line's time."""
    pairs = []
    for ex in exchanges:
        log.log(ex)
        line = log.take()
        match = TIME.match(line)
        assert match, line
        pairs.append((line, reference_line(ex, match.group(1).decode(), **config)))
    return pairs


def assert_same(log, exchanges, **config):
    for native, reference in lines_of(log, exchanges, **config):
        assert native == reference


ALL_BYTES = bytes(range(256))


def test_every_byte_value_is_escaped_as_before():
    headers = (b"x-raw",)
    log = builder(headers=headers)
    exchanges = [exchange(target=b"/" + ALL_BYTES, request_id=ALL_BYTES, method=ALL_BYTES, peer_ip=ALL_BYTES,
                          request_headers=[(b"X-Raw", ALL_BYTES)])]
    exchanges += [exchange(target=bytes([c]) * 3, request_headers=[(b"x-raw", bytes([c]))]) for c in range(256)]
    assert_same(log, exchanges, headers=headers)
    log.log(exchanges[0])
    parsed = json.loads(log.take())
    assert parsed["path"] == ("/" + ALL_BYTES.decode("latin-1"))
    assert parsed["headers"] == {"x-raw": ALL_BYTES.decode("latin-1")}


def test_escape_forms():
    log = builder()
    log.log(exchange(target=b'/q"\\\x00\x1f\x7f\x08\t\n\x0c\r/\xe9\xff'))
    line = log.take()
    assert b'"path":"/q\\"\\\\\\u0000\\u001f\x7f\\b\\t\\n\\f\\r/\xc3\xa9\xc3\xbf"' in line


def test_plain_and_odd_exchanges_match_the_reference():
    none_info = dict(info=None)
    assert_same(builder(), [
        exchange(),
        exchange(**none_info, plan=None, endpoint=None, status=404, rate_limit=0, target=None),
        exchange(info=types.SimpleNamespace(sent_traceparent=None,
                                            traceparent=b" 00-" + TRACE + b"-00f067aa0ba902b7-01 ")),
        exchange(info=types.SimpleNamespace(sent_traceparent=None, traceparent=b"00-zz-00-01")),
        exchange(info=types.SimpleNamespace(sent_traceparent=None, traceparent=None)),
        exchange(info=types.SimpleNamespace(sent_traceparent=b"traceparent: 0", traceparent=None)),
        exchange(info=types.SimpleNamespace(sent_traceparent=SENT[:30], traceparent=None)),
        exchange(status=0, rate_limit=2, retries=3, body_bytes=(1 << 62), bytes_out=(1 << 63) - 1),
        exchange(method=b"POST", body_bytes=300, plan=types.SimpleNamespace(route=types.SimpleNamespace(name=None))),
        exchange(plan=types.SimpleNamespace(route=types.SimpleNamespace(name='r\u00e9"\\\u2603\n'))),
        exchange(endpoint="[::1]:9001"),
        exchange(endpoint='we"ird\x01'),
    ])


@pytest.mark.parametrize("ns", [0, 1, 999, 1000, 1001, 9_999, 10_000, 100_000, 1_000_000, 1_840_000,
                                1_234_567, 12_345_678_901, 999_999_999_999, 10**12 + 1000, 86_400 * 10**9,
                                10**18 - 1, 10**18, 10**18 + 10**6, (1 << 63) - 1, -1, -1000, -1_500_000])
def test_milliseconds_are_the_shortest_float_repr(ns):
    assert_same(builder(), [exchange(duration_ns=ns, upstream_ns=ns)])


def test_every_microsecond_fraction():
    log = builder()
    assert_same(log, [exchange(duration_ns=(7_000 + us) * 1000 + 999, upstream_ns=us * 1000) for us in range(1000)])


QUERY_TARGETS = [
    b"/a?token=s3cret&page=2&sig=xyz", b"/a?token", b"/a?token=", b"/a?", b"/a?&", b"/a?&&token=1&",
    b"/a?tokens=1&token2=2&Token=3&x=token", b"/a?password=a=b&secret=%22&apikey==", b"/?a=1?token=2&token=3",
    b"/p/token=1?x=1", b"/a?page=2", b"/a#frag?token=1", b"/a?token=\xff\x00\"&next=\\",
]


def test_query_redaction_matches_the_reference():
    assert_same(builder(), [exchange(target=t) for t in QUERY_TARGETS])
    assert_same(builder(redact_query=()), [exchange(target=t) for t in QUERY_TARGETS], redact_query=())
    assert_same(builder(redact_query=(b"sig",)), [exchange(target=t) for t in QUERY_TARGETS], redact_query=(b"sig",))


def test_header_selection_matches_the_reference():
    headers = (b"user-agent", b"authorization", b"x-pad", b"cookie", b"absent")
    request_headers = [(b"Host", b"t"), (b"User-Agent", b"probe/1"), (b"AUTHORIZATION", b"Bearer x"),
                       (b"x-pad", b"one"), (b"Cookie", b"a=1"), (b"X-Pad", b"tw\"o\xe9"), (b"user-agent", b"second"),
                       (b"cookie", b"b=2"), (b"x-padding", b"no"), (b"x-pa", b"no")]
    config = dict(headers=headers)
    log = builder(**config)
    assert_same(log, [exchange(request_headers=request_headers), exchange(request_headers=[]),
                      exchange(request_headers=None), exchange(request_headers=list(reversed(request_headers)))],
                **config)
    log.log(exchange(request_headers=request_headers))
    assert json.loads(log.take())["headers"] == {
        "user-agent": "probe/1, second", "authorization": "REDACTED", "x-pad": "one, tw\"o\u00e9",
        "cookie": "REDACTED, REDACTED"}
    no_redaction = dict(headers=headers, redact_headers=())
    assert_same(builder(**no_redaction), [exchange(request_headers=request_headers)], **no_redaction)
    assert_same(builder(), [exchange(request_headers=request_headers)])  # no headers: "headers": null


def test_long_values_grow_the_buffer():
    big = (b"\x01\"\xe9abc" * 40_000)
    headers = (b"x-big",)
    log = builder(headers=headers)
    exchanges = [exchange(target=b"/a?token=" + big + b"&b=" + big, request_id=big, request_headers=[
        (b"x-big", big), (b"x-big", big)]) for _ in range(3)]
    for ex in exchanges:
        log.log(ex)
    assert log.buffered > 3 * 6 * len(big)
    data = log.take()
    assert log.buffered == 0 and log.take() == b""
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    for line, ex in zip(lines, exchanges):
        now = TIME.match(line).group(1).decode()
        assert line + b"\n" == reference_line(ex, now, headers=headers)


def test_flush_is_called_at_the_limit():
    class Flushing(AccessLineBuffer):
        def __init__(self, *args):
            super().__init__(*args)
            self.written = []

        def flush(self):
            self.written.append(self.take())

    log = Flushing(1.0, (), REDACT_HEADERS, REDACT_QUERY, 1000)
    for i in range(20):
        log.log(exchange(request_id=b"r-%02d" % i))
    assert log.written, "never flushed"
    assert all(len(chunk) >= 1000 and chunk.endswith(b"\n") for chunk in log.written)
    rest = log.take()
    ids = [json.loads(line)["request_id"] for line in b"".join(log.written + [rest]).splitlines()]
    assert ids == ["r-%02d" % i for i in range(20)]


def test_sampling():
    off = builder(sampling=0.0)
    for _ in range(100):
        off.log(exchange())
    assert off.take() == b""
    half = builder(sampling=0.5)
    for _ in range(2000):
        half.log(exchange())
    count = half.take().count(b"\n")
    assert 800 <= count <= 1200, count  # Binomial(2000, 0.5): sd ~22


def test_time_is_utc_milliseconds_now():
    log = builder()
    before = time.time()
    log.log(exchange())
    after = time.time()
    stamp = TIME.match(log.take()).group(1).decode()
    whole, millis = stamp[:-1].split(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000
    assert int(before * 1000) / 1000 - 0.001 <= seconds <= after + 0.001


def test_time_follows_the_clock_across_seconds():
    log = builder()
    stamps = []
    deadline = time.time() + 1.5
    while time.time() < deadline:
        log.log(exchange())
        stamps.append(TIME.match(log.take()).group(1))
        time.sleep(0.05)
    assert stamps == sorted(stamps)
    assert len({s[:19] for s in stamps}) >= 2  # a new second was formatted
