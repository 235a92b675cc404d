"""fastgw/_native/metrics.pyx and fastgw/observe/metrics.py without a
gateway: slices summed, restart semantics, the registry API and its
refusals, method labels, and the rendered text parsed by prometheus_client.
Trace-context helpers of headers.pyx are pinned down at the end."""
from __future__ import annotations

import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastgw._native import metrics as native
from fastgw._native.headers import FORWARDED, REQUEST_ID, TRACE as TRACE_FLAG, MessageInfo, NO_REWRITE, build_request_head, \
    scan_request, trace_id_of, valid_traceparent
from fastgw._native.metrics import MetricsTable, method_label
from fastgw.config.model import Cluster, Config, Endpoint, Listener, Route, RouteMatch, ServerSettings
from fastgw.observe import metrics as observe
from fastgw.observe.metrics import Family, SharedMetrics, render_prometheus

L = native.LAYOUT


def _config() -> Config:
    return Config(source="t", listeners=(Listener("l", "127.0.0.1", 1),), server=ServerSettings(),
                  clusters={"users": Cluster("users", (Endpoint("127.0.0.1", 9001), Endpoint("127.0.0.1", 9002)))},
                  routes=(Route("a", 0, RouteMatch(prefix="/a"), "users"),
                          Route("b", 1, RouteMatch(prefix="/b"), "users")))


def _parse(text: bytes) -> dict:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_slices_are_independent_and_summed():
    table = MetricsTable(3, 5)
    assert table.stride == 8  # whole cache lines per slice: no false sharing between workers
    table.write(0, 1, 10)
    table.write(2, 1, 5)
    table.cell(1, 4).inc(7)
    assert table.sums() == [0, 15, 0, 0, 7]
    assert table.read(2, 1) == 5
    with pytest.raises(IndexError):
        table.write(3, 0, 1)
    with pytest.raises(IndexError):
        table.cell(0, 5)


def test_a_fork_shares_the_table():
    table = MetricsTable(2, 1)
    pid = os.fork()
    if pid == 0:
        table.cell(1, 0).inc(42)
        os._exit(0)
    os.waitpid(pid, 0)
    table.cell(0, 0).inc(1)
    assert table.sums() == [43]


def test_restart_keeps_counters_clears_gauges_and_closes_streams():
    shared = SharedMetrics(_config(), workers=1)
    first = shared.process(0).recorder
    first.stream_opened(0)
    first.stream_opened(0)
    first.stream_closed(0)
    first.set(L["G_CONNECTIONS_TOTAL"], 9)
    first.set(L["G_CONNECTIONS_OPEN"], 3)
    shared.process(0)  # the slot's next process
    values = _parse(render_prometheus(shared))
    assert values[("fastgw_streams_opened_total", (("kind", "sse"),))] == 2
    assert values[("fastgw_streams_closed_total", (("kind", "sse"),))] == 2
    assert values[("fastgw_streams_active", (("kind", "sse"),))] == 0
    assert values[("fastgw_client_connections_total", ())] == 9
    assert values[("fastgw_client_connections_active", ())] == 0


def test_registry_families(monkeypatch):
    def families(config):
        return [Family("fastgw_test_retries_total", "counter", "Retries.", labels=("cluster",),
                       series=[(name,) for name in config.clusters]),
                Family("fastgw_queue_depth", "gauge", "Queued.", labels=("route",),
                       series=[(r.name,) for r in config.routes]),
                Family("fastgw_reload_last_seconds", "gauge", "Last reload took.", scale=1000)]
    monkeypatch.setattr(observe, "FAMILY_SOURCES", [*observe.FAMILY_SOURCES, families])
    shared = SharedMetrics(_config(), workers=2)
    w0, w1, master = shared.process(0), shared.process(1), shared.process(shared.master_slot)
    w0.counter("fastgw_test_retries_total", cluster="users").inc()
    w1.counter("fastgw_test_retries_total", cluster="users").inc(2)
    w1.gauge("fastgw_queue_depth", route="b").set(4)
    master.gauge("fastgw_reload_last_seconds").set(1500)
    values = _parse(render_prometheus(shared))
    assert values[("fastgw_test_retries_total", (("cluster", "users"),))] == 3
    assert values[("fastgw_queue_depth", (("route", "a"),))] == 0
    assert values[("fastgw_queue_depth", (("route", "b"),))] == 4
    assert values[("fastgw_reload_last_seconds", ())] == 1.5
    with pytest.raises(KeyError, match="not declared"):
        w0.counter("fastgw_made_up_total")
    with pytest.raises(KeyError, match="not a declared series"):
        w0.counter("fastgw_test_retries_total", cluster="other")   # no series on the fly
    with pytest.raises(KeyError, match="is a counter"):
        w0.gauge("fastgw_test_retries_total", cluster="users")
    # A restarted process's gauges start again from zero; counters stay.
    shared.process(1)
    values = _parse(render_prometheus(shared))
    assert values[("fastgw_queue_depth", (("route", "b"),))] == 0
    assert values[("fastgw_test_retries_total", (("cluster", "users"),))] == 3


def test_render_has_every_endpoint_and_escapes_nothing_unbounded():
    shared = SharedMetrics(_config(), workers=1)
    text = render_prometheus(shared)
    values = _parse(text)
    for port in (9001, 9002):
        assert values[("fastgw_upstream_requests_total",
                       (("cluster", "users"), ("endpoint", f"127.0.0.1:{port}")))] == 0
    assert b"# TYPE fastgw_request_duration_seconds histogram" in text
    assert ("fastgw_request_bytes_total", (("route", "(none)"),)) in values


@pytest.mark.parametrize("method,label", [
    (b"GET", "GET"), (b"HEAD", "HEAD"), (b"POST", "POST"), (b"PUT", "PUT"), (b"DELETE", "DELETE"),
    (b"PATCH", "PATCH"), (b"OPTIONS", "OPTIONS"), (b"CONNECT", "CONNECT"), (b"TRACE", "TRACE"),
    (b"PROPFIND", "other"), (b"get", "other"), (b"", "other"), (b"GETS", "other"),
])
def test_method_labels_are_a_fixed_set(method, label):
    assert method_label(method) == label


TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"


def test_traceparent_validation():
    good = b"00-" + TRACE + b"-00f067aa0ba902b7-01"
    assert valid_traceparent(good) and trace_id_of(good) == TRACE
    assert valid_traceparent(b" " + good + b" ")
    assert valid_traceparent(b"01-" + TRACE + b"-00f067aa0ba902b7-01-more")
    assert valid_traceparent(b"01-" + TRACE + b"-00f067aa0ba902b7-01")
    for bad in (good + b"-x", b"ff" + good[2:], good.upper(), good[:-1], b"01-" + TRACE + b"-00f067aa0ba902b7-01x",
                b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01", b"00-" + TRACE + b"-" + b"0" * 16 + b"-01",
                b"0g" + good[2:], b""):
        assert not valid_traceparent(bad), bad
        assert trace_id_of(bad) is None


def test_request_head_carries_one_traceparent():
    headers = [(b"Host", b"h"), (b"TraceParent", b"00-" + TRACE + b"-00f067aa0ba902b7-00"), (b"tracestate", b"a=1")]
    info = scan_request(headers, True)
    head = build_request_head(b"GET", b"/", headers, info, NO_REWRITE, b"1.2.3.4", b"rid", b"h",
                              FORWARDED | REQUEST_ID | TRACE_FLAG)
    lines = [line for line in head.split(b"\r\n") if line.lower().startswith(b"traceparent")]
    assert len(lines) == 1
    assert lines[0].startswith(b"traceparent: 00-" + TRACE + b"-") and lines[0].endswith(b"-00")
    assert info.sent_traceparent == lines[0] + b"\r\n"
    assert info.sent_traceparent[16:48] == TRACE and info.sent_traceparent[49:65] != b"00f067aa0ba902b7"
    assert b"tracestate: a=1\r\n" in head
    # Without TRACE the head is what it was before trace context existed.
    plain = build_request_head(b"GET", b"/", headers, scan_request(headers, True), NO_REWRITE, b"1.2.3.4",
                               b"rid", b"h")
    assert b"TraceParent: 00-" + TRACE + b"-00f067aa0ba902b7-00\r\n" in plain
    assert isinstance(info, MessageInfo)


def test_a_reloaded_config_is_adopted_by_name():
    from dataclasses import replace
    config = _config()
    shared = SharedMetrics(config, workers=1)
    process = shared.process(0)
    a = process.route_block("a")
    process.recorder.set(shared.layout.route_base + a * L["ROUTE_CELLS"] + L["R_REQ_BYTES"], 11)
    # Reload: route "a" moves to position 1, "c" is new, "b" is gone; a new endpoint.
    users = Cluster("users", (Endpoint("127.0.0.1", 9001), Endpoint("127.0.0.1", 9003)))
    reloaded = replace(config, clusters={"users": users},
                       routes=(Route("c", 0, RouteMatch(prefix="/c"), "users"),
                               Route("a", 1, RouteMatch(prefix="/a"), "users")))
    assert process.adopt(reloaded) == []
    assert process.route_block("a") == a                     # same cells: its counters go on
    assert process.route_block("c") not in (0, a, process.route_block("b"))
    assert process.endpoint_index("users", "127.0.0.1:9001") == 0
    assert process.endpoint_index("users", "127.0.0.1:9003") == 2
    values = _parse(render_prometheus(shared))
    assert values[("fastgw_request_bytes_total", (("route", "a"),))] == 11
    assert values[("fastgw_request_bytes_total", (("route", "c"),))] == 0
    # Past the room made at start, new names are reported and not counted.
    many = replace(config, routes=tuple(Route(f"r{i}", i, RouteMatch(prefix=f"/r{i}"), "users")
                                        for i in range(40)))
    left_out = process.adopt(many)
    assert left_out and all(item.startswith("route r") for item in left_out)
    assert process.route_block(left_out[0].split()[1]) == 0   # counted under route="(none)"
    values = _parse(render_prometheus(shared))
    assert len([k for k in values if k[0] == "fastgw_request_bytes_total"]) == shared.layout.route_capacity
