"""`request_headers` / `response_headers` on a route (add, set, remove):
compiled into native HeaderRewrite programs that the head builders run
(fastgw/_native/headers.pyx), phases upstream_request and response_head."""
from __future__ import annotations

from fastgw._native.headers import HeaderRewrite
from fastgw.pipeline.phases import Phase


class HeaderRewritePolicy:
    name = "header_rewrite"
    phases = (Phase.UPSTREAM_REQUEST, Phase.RESPONSE_HEAD)

    def prepare(self, gateway) -> None:
        pass

    def install(self, builder, route) -> None:
        req, resp = route.request_headers, route.response_headers
        builder.native.request_rewrite = HeaderRewrite(add=req.add, set=req.set, remove=req.remove)
        builder.native.response_rewrite = HeaderRewrite(add=resp.add, set=resp.set, remove=resp.remove)


POLICY = HeaderRewritePolicy()
