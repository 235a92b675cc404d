"""Security response headers (HSTS, X-Content-Type-Options, X-Frame-Options,
Referrer-Policy, CSP): the route's `security_headers` or the top-level
default, compiled into the route's native response header program, so they
cost nothing per request beyond the bytes. They replace an upstream's
header of the same name; a route's own response_headers.set of that name
wins over the preset. Local error replies (401, 429, ...) don't carry them:
those are the gateway's JSON, never a page a browser renders.
"""
from __future__ import annotations

from fastgw._native.headers import HeaderRewrite
from fastgw.pipeline.phases import Phase


def merge_response_rewrite(builder, set_pairs=(), remove=()) -> None:
    """Add `set_pairs` and `remove` to the route's response program (after
    header_rewrite built it from response_headers, whose own sets win)."""
    rw = builder.native.response_rewrite
    own = {name for name, _ in rw.set_pairs}
    sets = tuple(rw.set_pairs) + tuple((n, v) for n, v in set_pairs if n not in own)
    drops = (set(rw.drop) - own) | set(remove)
    builder.native.response_rewrite = HeaderRewrite(add=rw.add_pairs, set=sets, remove=tuple(drops))


class SecurityHeadersPolicy:
    name = "security_headers"
    phases = (Phase.RESPONSE_HEAD,)

    def prepare(self, gateway) -> None:
        pass

    def install(self, builder, route) -> None:
        if route.security_headers is not None and route.security_headers.headers:
            merge_response_rewrite(builder, set_pairs=route.security_headers.headers)


POLICY = SecurityHeadersPolicy()
