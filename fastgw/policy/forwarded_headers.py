"""X-Forwarded-For / -Proto / -Host on the upstream request (phase
upstream_request). The gateway is the edge: it appends the client's address
to X-Forwarded-For and writes -Proto and -Host itself rather than trusting
what the client sent. On for every route; a route rule that sets or removes
one of them (`request_headers`) replaces the gateway's line. The native head
builder does the work (`HEAD_FORWARDED`, fastgw/_native/headers.pyx); this
policy is where the decision lives."""
from __future__ import annotations

from fastgw._native.headers import FORWARDED
from fastgw.pipeline.phases import Phase


class ForwardedHeadersPolicy:
    name = "forwarded_headers"
    phases = (Phase.UPSTREAM_REQUEST,)

    def prepare(self, gateway) -> None:
        pass

    def install(self, builder, route) -> None:
        builder.native.head_flags |= FORWARDED


POLICY = ForwardedHeadersPolicy()
