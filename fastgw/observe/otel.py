"""Optional span export with the OpenTelemetry SDK (`pip install 'fastgw[otel]'`).

Off unless `tracing.export` is configured. Each worker then exports one span
per proxied request over OTLP/HTTP (protobuf): the gateway's span, with the
ids the upstream already saw in traceparent (same trace id; span id = the
parent id sent upstream; parent = the client's parent id when it sent a
valid traceparent, else the span is the trace's root). Kind SERVER; name
"METHOD route"; attributes http.request.method, http.route,
http.response.status_code, url.path (query left out: it may carry secrets),
client.address, fastgw.request_id, fastgw.upstream; status ERROR for 5xx
and for requests whose client got no response. Requests answered locally
before an upstream was chosen (404, 429, ...) have no gateway span ids and
are not exported. The SDK's parent-based sampler keeps the client's
decision: a traceparent with flags 00 is not exported.

Spans are batched by the SDK's BatchSpanProcessor (its own thread, started
in the worker after fork; a full queue drops spans rather than blocking the
event loop) and flushed at drain. Export costs a Python span per request:
about 70 us on the shared 2-core VM (micro-benchmark of `log`, export
thread aside), several times a small proxied GET's own cost, so it suits
low-rate routes or clients that sample (flags 00 are not exported). There
is no gateway-side sampling ratio yet: a trace the gateway starts is
always flagged sampled and exported.
"""
from __future__ import annotations

import time

EXPORT_TIMEOUT = 2.0   # seconds per OTLP request; shutdown waits at most about this


def make_span_export(settings):
    if settings is None:
        return None
    return SpanExport(settings)


class SpanExport:
    def __init__(self, settings):
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import IdGenerator

        class GatewayIds(IdGenerator):
            """The ids the gateway already chose (and sent upstream)."""
            span_id = 0
            trace_id = 0

            def generate_span_id(self):
                return self.span_id

            def generate_trace_id(self):
                return self.trace_id

        self._trace = trace
        self.ids = GatewayIds()
        self.provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}),
                                       id_generator=self.ids, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=settings.endpoint, timeout=EXPORT_TIMEOUT),
            schedule_delay_millis=settings.flush_interval * 1000, max_queue_size=8192))
        self.tracer = self.provider.get_tracer("fastgw")
        self.closed = False

    def log(self, ex) -> None:
        info = ex.info
        sent = info.sent_traceparent if info is not None else None
        if sent is None:
            return
        trace = self._trace
        trace_id = int(sent[16:48], 16)
        flags = trace.TraceFlags(int(sent[66:68], 16))
        self.ids.trace_id = trace_id
        self.ids.span_id = int(sent[49:65], 16)
        context = None
        incoming = info.traceparent.strip() if info.traceparent is not None else None
        if incoming is not None and incoming[3:35] == sent[16:48]:  # continued, not started here
            parent = trace.SpanContext(trace_id, int(incoming[36:52], 16), is_remote=True, trace_flags=flags)
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        end = time.time_ns()
        plan = ex.plan
        route = plan.route.name if plan is not None else "(none)"
        method = ex.method.decode("latin-1")
        target = ex.target or b""
        span = self.tracer.start_span(
            f"{method} {route}", context=context, kind=trace.SpanKind.SERVER, start_time=end - ex.duration_ns,
            attributes={"http.request.method": method, "http.route": route,
                        "http.response.status_code": ex.status,
                        "url.path": target.split(b"?", 1)[0].decode("latin-1"),
                        "client.address": ex.client.peer_ip.decode("latin-1"),
                        "fastgw.request_id": ex.request_id.decode("latin-1"),
                        "fastgw.upstream": ex.endpoint or ""})
        if ex.status >= 500 or ex.status == 0:
            span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.end(end_time=end)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.provider.shutdown()  # exports what is queued


class Observers:
    """Several per-request observers behind the one `log(exchange)` hook."""

    def __init__(self, observers):
        self.observers = tuple(observers)

    def log(self, ex) -> None:
        for observer in self.observers:
            observer.log(ex)

    def close(self) -> None:
        for observer in self.observers:
            observer.close()
