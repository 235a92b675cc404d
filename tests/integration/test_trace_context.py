"""W3C trace context through the real gateway, as the upstream sees it: a
valid traceparent continues the trace with the gateway as a span (new
parent id, same trace id and flags), a missing or invalid one starts a new
trace, tracestate passes untouched; `tracing.propagate: false` leaves both
headers alone."""
from __future__ import annotations

import re

import pytest

from support import http_request, simple_config

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def _upstream_traceparent(upstream, gw, headers) -> tuple[str, str, str]:
    before = len(upstream.requests)
    assert http_request(gw.port, "GET", "/echo", headers).status == 200
    assert upstream.wait_for(lambda: len(upstream.requests) > before)
    seen = upstream.requests[-1]
    value = seen.header("traceparent")  # asserts it appears at most once
    assert value is not None, seen.headers
    match = TRACEPARENT.fullmatch(value)
    assert match, value
    trace_id, span_id, flags = match.groups()
    assert trace_id != "0" * 32 and span_id != "0" * 16
    return trace_id, span_id, flags


@pytest.mark.timeout(30)
def test_traceparent_continued_with_the_gateway_as_a_span(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.url))
    state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    trace_id, span_id, flags = _upstream_traceparent(
        upstream, gw, [("traceparent", f"00-{TRACE}-{PARENT}-01"), ("tracestate", state)])
    assert (trace_id, flags) == (TRACE, "01")
    assert span_id != PARENT
    assert upstream.requests[-1].header("tracestate") == state
    # Flags are kept as sent (not sampled stays not sampled); each request is a new span.
    trace_id2, span_id2, flags2 = _upstream_traceparent(upstream, gw, [("TraceParent", f"00-{TRACE}-{PARENT}-00")])
    assert (trace_id2, flags2) == (TRACE, "00")
    assert span_id2 not in (span_id, PARENT)
    # A later version's header is read by its version-00 prefix.
    trace_id3, _, flags3 = _upstream_traceparent(
        upstream, gw, [("traceparent", f"cc-{TRACE}-{PARENT}-01-what-the-future-holds")])
    assert (trace_id3, flags3) == (TRACE, "01")


@pytest.mark.timeout(30)
def test_traceparent_created_when_missing(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.url), workers=2)
    seen = {_upstream_traceparent(upstream, gw, [])[0] for _ in range(20)}
    assert len(seen) == 20, "each request without a traceparent starts its own trace"
    assert _upstream_traceparent(upstream, gw, [])[2] == "01"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bad", [
    f"00-{'0' * 32}-{PARENT}-01",            # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",             # all-zero parent id
    f"00-{TRACE.upper()}-{PARENT}-01",       # upper-case hex
    f"ff-{TRACE}-{PARENT}-01",               # version ff is invalid
    f"00-{TRACE}-{PARENT}-01-extra",         # version 00 has nothing after the flags
    f"00-{TRACE[:-1]}-{PARENT}-01",          # short trace id
    f"00_{TRACE}_{PARENT}_01",
    "garbage",
])
def test_invalid_traceparent_replaced(upstream, gateway_factory, bad):
    gw = gateway_factory(simple_config(upstream.url))
    trace_id, span_id, flags = _upstream_traceparent(upstream, gw, [("traceparent", bad), ("tracestate", "a=b")])
    assert trace_id not in (TRACE, "0" * 32)
    assert flags == "01"
    assert upstream.requests[-1].header("tracestate") == "a=b"


@pytest.mark.timeout(30)
def test_propagation_off_leaves_headers_alone(upstream, gateway_factory):
    config = simple_config(upstream.url)
    config["tracing"] = {"propagate": False}
    gw = gateway_factory(config)
    sent = f"00-{TRACE}-{PARENT}-01"
    assert http_request(gw.port, "GET", "/echo", [("traceparent", sent)]).status == 200
    assert upstream.wait_for(lambda: len(upstream.requests) == 1)
    assert upstream.requests[-1].header("traceparent") == sent
    assert http_request(gw.port, "GET", "/echo").status == 200
    assert upstream.wait_for(lambda: len(upstream.requests) == 2)
    assert upstream.requests[-1].header("traceparent") is None
