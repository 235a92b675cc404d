"""W3C trace context (`tracing.propagate`, on by default): the gateway is a
span of the client's trace. Upstream it sends the same trace id and flags
with its own span id as the parent (a new sampled trace when the client sent
no valid traceparent); tracestate passes through. The native head builder
writes the line (`HEAD_TRACE`, `_write_traceparent` in
fastgw/_native/headers.pyx) and keeps it for the access log and span export
(fastgw/observe/otel.py)."""
from __future__ import annotations

from fastgw._native.headers import TRACE
from fastgw.pipeline.phases import Phase


class TraceContextPolicy:
    name = "trace_context"
    phases = (Phase.UPSTREAM_REQUEST,)

    def prepare(self, gateway) -> None:
        pass

    def install(self, builder, route) -> None:
        if builder.gateway.config.observe.tracing.propagate:
            builder.native.head_flags |= TRACE


POLICY = TraceContextPolicy()
