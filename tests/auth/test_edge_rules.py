"""IP allow/deny lists (IPv4 and IPv6, global and per route, through the
trusted proxies), CORS (preflights answered by the gateway, allowed and
refused; actual requests; Vary), and the security headers preset."""
from __future__ import annotations

import time

import pytest

from support import assert_gateway_error, cluster, http_request, route
from support.metrics import enable_dump, scrape


def xff(address):
    return [("X-Forwarded-For", address)]


@pytest.mark.timeout(60)
def test_ip_lists_v4_and_v6_global_then_route(upstream, gateway_factory, monkeypatch, tmp_path):
    dump = enable_dump(monkeypatch, tmp_path)
    gw = gateway_factory({
        # The test client is 127.0.0.1: trusted, so X-Forwarded-For names the client.
        "server": {"trusted_proxies": ["127.0.0.1"]},
        "ip_filter": {"deny": ["192.0.2.0/24", "2001:db8:bad::/48"]},
        "metrics": {"enabled": True},
        "clusters": {"app": cluster(upstream.url)},
        "routes": [
            route("internal", "app", prefix="/internal/", ip_filter={"allow": ["10.0.0.0/8", "fd00::/8"]}),
            route("open", "app", prefix="/"),
        ],
    })
    cases = [
        ("/internal/a", "10.1.2.3", 200), ("/internal/a", "fd00::1", 200),
        ("/internal/a", "11.0.0.1", 403), ("/internal/a", "2001:db8::1", 403),
        ("/internal/a", "::ffff:10.0.0.7", 200),          # IPv4-mapped: judged as 10.0.0.7
        ("/open", "192.0.2.9", 403), ("/open", "2001:db8:bad::1", 403),
        ("/open", "2001:db8:600d::1", 200), ("/open", "198.51.100.1", 200),
        ("/internal/a", "10.1.2.3, 192.0.2.1", 403),        # the nearest untrusted hop is the client
    ]
    for path, address, status in cases:
        resp = http_request(gw.port, "GET", path, xff(address))
        assert resp.status == status, (path, address, resp.describe())
        if status == 403:
            assert_gateway_error(resp, 403, "ip_denied")
    # Without the header the client is the TCP peer, 127.0.0.1: not in the route's allow list.
    assert http_request(gw.port, "GET", "/internal/b").status == 403

    deadline = time.monotonic() + 10
    while True:
        samples = scrape(gw, dump)
        internal = samples.get_value("fastgw_auth_decisions_total", route="internal", result="denied",
                                     reason="ip_denied")
        if internal == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert internal == 4
    assert samples.get_value("fastgw_auth_decisions_total", route="open", result="denied", reason="ip_denied") == 2


def cors_config(upstream, **cors_extra):
    cors = {"origins": ["https://app.test", "https://*.example.com"], "methods": ["GET", "POST"],
            "headers": ["Content-Type", "X-Trace"], "expose_headers": ["X-Total"], "credentials": True,
            "max_age": 600, **cors_extra}
    return {"clusters": {"app": cluster(upstream.url)},
            "routes": [route("public", "app", prefix="/public/", cors=cors), route("open", "app", prefix="/")]}


def preflight(gw, origin, method="POST", headers=None):
    h = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if headers:
        h.append(("Access-Control-Request-Headers", headers))
    return http_request(gw.port, "OPTIONS", "/public/items", h)


def acheaders(resp):
    return {n for n in resp.header_names() if n.startswith("access-control-")}


@pytest.mark.timeout(60)
def test_cors_preflights_are_answered_by_the_gateway(upstream, gateway_factory):
    gw = gateway_factory(cors_config(upstream))
    resp = preflight(gw, "https://app.test", "POST", "content-type, x-trace")
    assert resp.status == 200, resp.describe()
    assert resp.header("access-control-allow-origin") == "https://app.test"
    assert resp.header("access-control-allow-credentials") == "true"
    assert resp.header("access-control-max-age") == "600"
    assert resp.header("access-control-allow-methods") == "GET, POST"
    assert "origin" in [v.lower() for v in resp.header_tokens("vary")]
    assert preflight(gw, "https://a.b.example.com", "GET").status == 200   # subdomain pattern
    refused = [preflight(gw, "https://evil.test"),                       # origin
               preflight(gw, "https://example.com"),                     # the bare domain is not *.example.com
               preflight(gw, "https://app.test", "DELETE"),              # method
               preflight(gw, "https://app.test", "POST", "x-secret")]    # request header
    for resp in refused:
        assert_gateway_error(resp, 403, "cors_refused")
        assert acheaders(resp) == set(), resp.describe()
    assert upstream.requests == []                                       # no preflight reached it


@pytest.mark.timeout(60)
def test_cors_actual_requests_and_vary(upstream, gateway_factory):
    gw = gateway_factory(cors_config(upstream))
    # The upstream's own Access-Control-Allow-Origin: * is dropped; the route's policy answers.
    ok = http_request(gw.port, "GET", "/public/a?h=Access-Control-Allow-Origin:*", [("Origin", "https://app.test")])
    assert ok.status == 200
    assert ok.header_all("access-control-allow-origin") == ["https://app.test"]
    assert ok.header("access-control-allow-credentials") == "true"
    assert ok.header("access-control-expose-headers") == "X-Total"
    assert "origin" in [v.lower() for v in ok.header_tokens("vary")]
    bad = http_request(gw.port, "GET", "/public/a?h=Access-Control-Allow-Origin:*", [("Origin", "https://evil.test")])
    assert bad.status == 200 and acheaders(bad) == set()
    assert "origin" in [v.lower() for v in bad.header_tokens("vary")]
    none = http_request(gw.port, "GET", "/public/a")
    assert acheaders(none) == set() and "origin" in [v.lower() for v in none.header_tokens("vary")]
    # An OPTIONS without Access-Control-Request-Method is no preflight: it goes upstream.
    plain = http_request(gw.port, "OPTIONS", "/public/a", [("Origin", "https://app.test")])
    assert plain.status == 200 and upstream.requests[-1].method == "OPTIONS"


@pytest.mark.timeout(60)
def test_the_gateways_own_errors_carry_cors_headers(upstream, gateway_factory, tmp_path):
    """A browser app reads a 401, a 429 or a 502 only when it carries
    Access-Control-Allow-Origin: the gateway's error replies get what the
    CORS stage added, once, and a disallowed origin still gets none."""
    import yaml
    from fastgw.auth.api_keys import hash_key
    key = "fgw_key_cors_0123456789abcdefghij"
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [{"id": "k", "consumer": "web", "hash": hash_key(key)}]}))
    cors = {"origins": ["https://app.test"], "methods": ["GET"], "credentials": True}
    gw = gateway_factory({
        "clusters": {"app": cluster(upstream.url), "dead": cluster("http://127.0.0.1:1")},
        "routes": [route("keyed", "app", prefix="/keyed/", cors=cors,
                         auth={"api_keys": {"file": str(keys), "header": "X-Api-Key"}},
                         rate_limits=[{"key": "route", "rate": "1/h", "burst": 1}]),
                   route("down", "dead", prefix="/down/", cors=cors)]})
    app = [("Origin", "https://app.test")]

    def vary_origin_count(resp):
        return [v.lower() for v in resp.header_tokens("vary")].count("origin")

    denied = http_request(gw.port, "GET", "/keyed/a", app)            # no key
    assert_gateway_error(denied, 401, "invalid_token")
    assert denied.header_all("access-control-allow-origin") == ["https://app.test"], denied.describe()
    assert denied.header("access-control-allow-credentials") == "true"
    assert vary_origin_count(denied) == 1, denied.describe()
    other = http_request(gw.port, "GET", "/keyed/a", [("Origin", "https://evil.test")])
    assert other.status == 401 and acheaders(other) == set(), other.describe()
    assert http_request(gw.port, "GET", "/keyed/a", app + [("X-Api-Key", key)]).status == 200
    limited = http_request(gw.port, "GET", "/keyed/b", app + [("X-Api-Key", key)])   # burst 1 spent
    assert_gateway_error(limited, 429, "rate_limited")
    assert limited.header_all("access-control-allow-origin") == ["https://app.test"], limited.describe()
    assert vary_origin_count(limited) == 1
    down = http_request(gw.port, "GET", "/down/x", app)
    assert down.status == 502, down.describe()
    assert down.header_all("access-control-allow-origin") == ["https://app.test"], down.describe()
    refused = http_request(gw.port, "OPTIONS", "/keyed/a", [("Origin", "https://evil.test"),
                                                           ("Access-Control-Request-Method", "GET")])
    assert_gateway_error(refused, 403, "cors_refused")
    assert acheaders(refused) == set() and vary_origin_count(refused) == 1, refused.describe()
    assert [r.path for r in upstream.requests] == ["/keyed/a"]


@pytest.mark.timeout(60)
def test_security_headers_preset_global_route_override_and_opt_out(upstream, gateway_factory):
    gw = gateway_factory({
        "security_headers": "default",
        "clusters": {"app": cluster(upstream.url)},
        "routes": [
            route("framed", "app", prefix="/framed/",
                  security_headers={"preset": "default", "frame_options": "SAMEORIGIN", "csp": ""}),
            route("raw", "app", prefix="/raw/", security_headers=False),
            route("own", "app", prefix="/own/", security_headers={
                "preset": "none", "hsts": "max-age=60", "content_type_options": "nosniff",
                "referrer_policy": "same-origin"}, response_headers={"set": {"Referrer-Policy": "origin"}}),
            route("open", "app", prefix="/"),
        ],
    })
    resp = http_request(gw.port, "GET", "/x")
    assert resp.header("strict-transport-security") == "max-age=31536000; includeSubDomains"
    assert resp.header("x-content-type-options") == "nosniff"
    assert resp.header("x-frame-options") == "DENY"
    assert resp.header("referrer-policy") == "no-referrer"
    assert resp.header("content-security-policy").startswith("default-src 'none'")
    framed = http_request(gw.port, "GET", "/framed/x")
    assert framed.header("x-frame-options") == "SAMEORIGIN"
    assert framed.header("content-security-policy") is None
    assert framed.header("x-content-type-options") == "nosniff"
    raw = http_request(gw.port, "GET", "/raw/x")
    assert raw.header("strict-transport-security") is None and raw.header("x-frame-options") is None
    own = http_request(gw.port, "GET", "/own/x")
    assert own.header("strict-transport-security") == "max-age=60"
    assert own.header("x-content-type-options") == "nosniff"
    assert own.header_all("referrer-policy") == ["origin"]     # the route's own response_headers win
    assert own.header("x-frame-options") is None               # preset none: only what is listed
