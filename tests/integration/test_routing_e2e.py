"""Item 2: routing priority end to end, and path rewriting seen upstream.

Every route points at its own upstream server, so the upstream that answers
tells which route matched, independently of any header manipulation.
"""
from __future__ import annotations

import pytest

from support import assert_gateway_error, cluster, http_request, route

ROUTES = [
    # name, extra route keys
    ("prefix-users", dict(prefix="/users")),
    ("template-user", dict(path="/users/{id}", rewrite_path="/v2/users/{id}")),
    ("exact-me", dict(path="/users/me")),
    ("prefix-users-admin", dict(prefix="/users/admin")),
    ("api", dict(prefix="/api", strip_prefix="/api")),
    ("get-only", dict(path="/only-get", methods=["GET"])),
    # Declaration order breaks ties between equally specific routes. (The
    # config check refuses pairs where a later route could never match, so a
    # method-restricted route first and a catch-all second is the observable
    # case.)
    ("dup-first-get", dict(prefix="/dup", methods=["GET"])),
    ("dup-second-any", dict(prefix="/dup")),

    # Host matching.
    ("wild-host", dict(host="*.example.com", prefix="/hosted")),
    ("any-host", dict(prefix="/hosted")),
    ("wild-only", dict(host="*.example.com", prefix="/wildonly")),
    ("exact-host", dict(host="api.example.org", prefix="/exacthost")),
]


@pytest.fixture
def routed(upstream_factory, gateway_factory):
    ups = {name: upstream_factory(name) for name, _ in ROUTES}
    config = {
        "clusters": {name: cluster(up.url) for name, up in ups.items()},
        "routes": [route(name, name, **extra) for name, extra in ROUTES],
    }
    return gateway_factory(config), ups


def get(gw, target, method="GET", host="test.local", body=None):
    return http_request(gw.port, method, target, host=host, body=body)


def served_by(resp) -> tuple[str, str]:
    assert resp.status == 200, resp.describe()
    doc = resp.json()
    return doc["server"], doc["target"]


@pytest.mark.timeout(60)
def test_routing_priority_and_rewrites(routed):
    gw, ups = routed

    # exact > template > prefix, whatever the file order.
    assert served_by(get(gw, "/users/me")) == ("exact-me", "/users/me")
    assert served_by(get(gw, "/users/42")) == ("template-user", "/v2/users/42")
    # A template parameter is one segment: deeper paths fall to the prefix.
    assert served_by(get(gw, "/users/42/posts")) == ("prefix-users", "/users/42/posts")
    assert served_by(get(gw, "/users")) == ("prefix-users", "/users")
    # Longest prefix wins.
    assert served_by(get(gw, "/users/admin/x")) == ("prefix-users-admin", "/users/admin/x")
    # ... but a template still beats any prefix.
    assert served_by(get(gw, "/users/admin")) == ("template-user", "/v2/users/admin")
    # Prefixes are segment-aware: /usersx is not under /users.
    assert_gateway_error(get(gw, "/usersx"), 404, "no_route")

    # Query strings survive rewriting and stripping untouched.
    assert served_by(get(gw, "/users/42?a=1&b=%20x")) == ("template-user", "/v2/users/42?a=1&b=%20x")
    assert served_by(get(gw, "/users/me?x=y")) == ("exact-me", "/users/me?x=y")
    assert served_by(get(gw, "/api/items?x=1&y=2")) == ("api", "/items?x=1&y=2")
    assert served_by(get(gw, "/api/a/b/c")) == ("api", "/a/b/c")
    assert served_by(get(gw, "/api")) == ("api", "/")
    assert served_by(get(gw, "/api?q=1")) == ("api", "/?q=1")
    assert_gateway_error(get(gw, "/apix"), 404, "no_route")

    # Declaration order among equally specific routes.
    assert served_by(get(gw, "/dup/x")) == ("dup-first-get", "/dup/x")
    assert served_by(get(gw, "/dup/x", method="POST", body=b"")) == ("dup-second-any", "/dup/x")
    assert served_by(get(gw, "/dup")) == ("dup-first-get", "/dup")

    # Host wildcards, with and without a port in the Host header.
    assert served_by(get(gw, "/hosted", host="a.example.com")) == ("wild-host", "/hosted")
    assert served_by(get(gw, "/hosted", host="a.example.com:8080")) == ("wild-host", "/hosted")
    assert served_by(get(gw, "/hosted", host="other.org")) == ("any-host", "/hosted")
    assert served_by(get(gw, "/wildonly/z", host="deep.example.com")) == ("wild-only", "/wildonly/z")
    assert_gateway_error(get(gw, "/wildonly/z", host="other.org"), 404, "no_route")
    assert served_by(get(gw, "/exacthost", host="api.example.org")) == ("exact-host", "/exacthost")
    assert served_by(get(gw, "/exacthost", host="API.Example.org")) == ("exact-host", "/exacthost")
    assert_gateway_error(get(gw, "/exacthost", host="x.api.example.org"), 404, "no_route")

    # Nothing matches at all.
    assert_gateway_error(get(gw, "/nothing/here"), 404, "no_route")


@pytest.mark.timeout(30)
def test_method_not_allowed_lists_allowed_methods(routed):
    gw, ups = routed
    assert served_by(get(gw, "/only-get")) == ("get-only", "/only-get")
    resp = get(gw, "/only-get", method="POST", body=b"data")
    assert_gateway_error(resp, 405, "method_not_allowed")
    allow = [m.strip().upper() for m in (resp.header("allow") or "").split(",") if m.strip()]
    assert "GET" in allow, f"Allow header {resp.header('allow')!r}"
    assert "POST" not in allow
    resp = get(gw, "/only-get", method="DELETE")
    assert_gateway_error(resp, 405, "method_not_allowed")
    assert ups["get-only"].requests and all(r.method == "GET" for r in ups["get-only"].requests)
    # Still serving afterwards.
    assert served_by(get(gw, "/only-get")) == ("get-only", "/only-get")
