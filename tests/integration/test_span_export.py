"""tracing.export: the gateway's spans reach a real OTLP/HTTP receiver with
the ids the upstream saw in traceparent."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is part of the test extra")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest, ExportTraceServiceResponse)

from support import RawClient, http_request, simple_config  # noqa: E402

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP traces endpoint: decodes every export request."""

    def __init__(self):
        self.spans: list = []
        self.resources: list = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                with receiver.cond:
                    for resource_spans in request.resource_spans:
                        for scope in resource_spans.scope_spans:
                            for span in scope.spans:
                                receiver.spans.append(span)
                                receiver.resources.append(resource_spans.resource)
                    receiver.cond.notify_all()
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.spans) < count and time.monotonic() < deadline:
                self.cond.wait(0.1)
            return list(self.spans)

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _attrs(span) -> dict:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value if value.HasField("string_value") else value.int_value
    return out


@pytest.mark.timeout(60)
def test_spans_carry_the_ids_sent_upstream(upstream, gateway_factory, receiver):
    config = simple_config(upstream.url)
    config["tracing"] = {"export": {"endpoint": receiver.url, "service_name": "edge", "flush_interval": "200ms"}}
    gw = gateway_factory(config, workers=2)
    assert http_request(gw.port, "GET", "/echo/a?token=x", [("traceparent", f"00-{TRACE}-{PARENT}-01")]).status == 200
    assert http_request(gw.port, "POST", "/status/503", body=b"x").status == 503
    # /echo/b (flags 00) and then a sampled /echo/c on one connection, so one
    # worker: its batch processor exports in order, so once /echo/c's span
    # arrived, /echo/b's would have too.
    with RawClient(gw.port) as client:
        client.request("GET", "/echo/b", [("traceparent", f"00-{TRACE}-{PARENT}-00")])
        assert client.read_response().status == 200
        client.request("GET", "/echo/c")
        assert client.read_response().status == 200
    spans = receiver.wait(3)
    assert len(spans) == 3, spans
    seen = {r.target.split("?")[0]: r.header("traceparent").split("-") for r in upstream.requests}
    by_path = {_attrs(s)["url.path"]: s for s in spans}
    # Flags 00 (not sampled by the client): not exported.
    assert set(by_path) == {"/echo/a", "/status/503", "/echo/c"}, set(by_path)
    continued, started = by_path["/echo/a"], by_path["/status/503"]
    assert continued.trace_id.hex() == TRACE == seen["/echo/a"][1]
    assert continued.span_id.hex() == seen["/echo/a"][2]        # the parent id the upstream saw
    assert continued.parent_span_id.hex() == PARENT             # the client's span
    assert continued.name == "GET all" and continued.kind == continued.SPAN_KIND_SERVER
    attrs = _attrs(continued)
    assert attrs["http.response.status_code"] == 200 and attrs["http.route"] == "all"
    assert attrs["url.path"] == "/echo/a"                      # no query: it may hold secrets
    assert continued.end_time_unix_nano > continued.start_time_unix_nano
    assert started.trace_id.hex() == seen["/status/503"][1] and started.parent_span_id == b""
    assert started.status.code == started.status.STATUS_CODE_ERROR
    assert {kv.value.string_value for r in receiver.resources for kv in r.attributes
            if kv.key == "service.name"} == {"edge"}
