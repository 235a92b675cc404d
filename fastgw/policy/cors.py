"""CORS on a route, as a stage of phase access before authentication
(a browser's preflight carries no credentials).

- A preflight (OPTIONS with Origin and Access-Control-Request-Method) is
  answered by the gateway and never reaches the upstream: 200 with the
  Access-Control-Allow-* headers when the origin, the method and every
  requested header are allowed; else 403 cors_refused, without any
  Access-Control-* header.
- Another request from an allowed origin gets Access-Control-Allow-Origin
  (the origin itself, or `*` when any origin is allowed without
  credentials), -Allow-Credentials and -Expose-Headers on its response;
  from a disallowed origin, none (the browser then hides the answer).
- The gateway's own error answers (401/403 of authentication, 429 of a
  limit, 502/503/504) carry the same headers as an upstream answer would:
  the exchange adds what the stages added (fastgw/_native/proxy_exchange.pxi
  `_write_error`), so a browser app can read why it was refused.
- Every response of the route says `Vary: Origin`, so a cache never hands
  one origin's answer to another. The upstream's own Access-Control-Allow-*
  and -Expose-Headers are dropped: the gateway's policy is the one in force.

Origins: exact (`https://app.example.com`), a subdomain pattern
(`https://*.example.com`: any subdomain, not the bare domain), or `*`.
"""
from __future__ import annotations

from fastgw._native.errors import ProxyError
from fastgw._native.proxy import Answer
from fastgw.pipeline.phases import Phase
from fastgw.policy.security_headers import merge_response_rewrite

# Request headers a browser may send without asking (the CORS safelist).
SAFELISTED = frozenset({"accept", "accept-language", "content-language", "content-type"})
UPSTREAM_CORS_HEADERS = (b"access-control-allow-origin", b"access-control-allow-credentials",
                         b"access-control-expose-headers", b"access-control-allow-methods",
                         b"access-control-allow-headers", b"access-control-max-age")
VARY = b"Vary: Origin\r\n"


class CorsStage:
    def __init__(self, route_name: str, cors):
        self.route = route_name
        self.cors = cors
        self.any_origin = "*" in cors.origins
        self.exact = frozenset(o.lower() for o in cors.origins if "*" not in o)
        # https://*.example.com -> ("https://", ".example.com")
        self.patterns = tuple((o.split("*", 1)[0].lower(), o.split("*", 1)[1].lower())
                              for o in cors.origins if o.startswith(("http://*.", "https://*.")))
        self.methods = frozenset(cors.methods)
        self.headers = frozenset(h.lower() for h in cors.headers) | SAFELISTED
        common = b""
        if cors.credentials:
            common += b"Access-Control-Allow-Credentials: true\r\n"
        self.actual_extra = common + (b"Access-Control-Expose-Headers: %s\r\n" % ", ".join(cors.expose_headers)
                                      .encode() if cors.expose_headers else b"")
        self.preflight_extra = common + b"Access-Control-Allow-Methods: %s\r\n" % ", ".join(cors.methods).encode()
        if cors.headers:
            self.preflight_extra += b"Access-Control-Allow-Headers: %s\r\n" % ", ".join(cors.headers).encode()
        if cors.max_age is not None:
            self.preflight_extra += b"Access-Control-Max-Age: %d\r\n" % cors.max_age
        self.preflights = 0
        self.refused = 0

    def __repr__(self):
        return f"CorsStage({self.route!r})"

    def allowed_origin(self, origin: str) -> bool:
        origin = origin.lower()
        if self.any_origin or origin in self.exact:
            return True
        for scheme, suffix in self.patterns:
            if origin.startswith(scheme) and origin.endswith(suffix) and len(origin) > len(scheme) + len(suffix):
                host = origin[len(scheme):len(origin) - len(suffix)]
                if host and "/" not in host and ":" not in host:
                    return True
        return False

    def admit(self, ex):
        origin = request_method = requested = None
        for name, value in ex.request_headers:
            lname = name.lower()
            if lname == b"origin":
                origin = value
            elif lname == b"access-control-request-method":
                request_method = value
            elif lname == b"access-control-request-headers":
                requested = value
        ex.add_response_headers(VARY)
        if origin is None:
            return None
        text = origin.decode("latin-1").strip()
        ok = self.allowed_origin(text)
        if ex.method == b"OPTIONS" and request_method is not None:
            return self._preflight(ex, text, ok, request_method, requested)
        if ok:
            ex.add_response_headers(self._allow_origin(text) + self.actual_extra)
        return None

    def _allow_origin(self, origin: str) -> bytes:
        value = "*" if self.any_origin and not self.cors.credentials else origin
        return b"Access-Control-Allow-Origin: %s\r\n" % value.encode("latin-1")

    def _preflight(self, ex, origin, ok, method, requested):
        self.preflights += 1
        method_ok = method.decode("latin-1").strip() in self.methods
        headers_ok = requested is None or all(
            h.strip().lower() in self.headers for h in requested.decode("latin-1").split(",") if h.strip())
        if not (ok and method_ok and headers_ok):
            self.refused += 1
            why = "origin" if not ok else "method" if not method_ok else "request headers"
            fields = ex.log_fields
            if fields is None:
                ex.log_fields = fields = {}
            fields["cors"] = f"refused_{why.replace(' ', '_')}"
            # No header of its own: the exchange's error reply carries the Vary
            # that admit() added, and no Access-Control-* (none was added).
            return ProxyError(403, "cors_refused", f"the preflight's {why} is not allowed on this route")
        return Answer(200, self._allow_origin(origin) + self.preflight_extra, b"")


class CorsPolicy:
    name = "cors"
    phases = (Phase.ACCESS, Phase.RESPONSE_HEAD)

    def prepare(self, gateway) -> None:
        pass

    def install(self, builder, route) -> None:
        if route.cors is None:
            return
        merge_response_rewrite(builder, remove=UPSTREAM_CORS_HEADERS)
        builder.add_stage(Phase.ACCESS, CorsStage(route.name, route.cors))


POLICY = CorsPolicy()
