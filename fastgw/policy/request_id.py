"""X-Request-ID: the client's id when it sent a sane one (at most 200 bytes),
else one the worker makes (`RequestIds`, fastgw/_native/headers.pyx), sent to
the upstream and echoed to the client when the upstream's answer has none
(phases upstream_request and response_head). The id itself is made for every
request before routing, because the gateway's own answers (404, 400, 429,
...) and the access log carry it too; this policy decides the headers of
proxied requests (`HEAD_REQUEST_ID`)."""
from __future__ import annotations

from fastgw._native.headers import REQUEST_ID
from fastgw.pipeline.phases import Phase


class RequestIdPolicy:
    name = "request_id"
    phases = (Phase.UPSTREAM_REQUEST, Phase.RESPONSE_HEAD)

    def prepare(self, gateway) -> None:
        pass

    def install(self, builder, route) -> None:
        builder.native.head_flags |= REQUEST_ID


POLICY = RequestIdPolicy()
