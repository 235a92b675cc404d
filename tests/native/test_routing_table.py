"""RouteTable: Config.routes compiled into the native Router, plus upstream paths."""
from __future__ import annotations

import pytest

from fastgw.config.model import Cluster, Config, Endpoint, Listener, Route, RouteMatch, ServerSettings
from fastgw.proxy.routing import RouteTable


def route(name, *, host=None, path=None, prefix=None, methods=None, strip=None, rewrite=None):
    return dict(name=name, match=RouteMatch(host=host, path=path, prefix=prefix, methods=methods),
                strip_prefix=strip, rewrite_path=rewrite)


def table(*routes) -> RouteTable:
    config = Config(
        source="<test>",
        listeners=(Listener("public", "127.0.0.1", 8080),),
        server=ServerSettings(),
        clusters={"c": Cluster("c", (Endpoint("127.0.0.1", 9001),))},
        routes=tuple(Route(index=i, cluster="c", **r) for i, r in enumerate(routes)),
    )
    return RouteTable(config)


def name(t: RouteTable, host, method, path):
    found = t.match(host, method, path)
    return None if found is None else found[0].name


@pytest.fixture
def example() -> RouteTable:
    """The routes of examples/gateway.yaml."""
    return table(
        route("user-by-id", host="*.example.com", path="/users/{id}", methods=("GET", "PUT", "DELETE"),
              rewrite="/v2/users/{id}"),
        route("api", prefix="/api", strip="/api"),
        route("default", prefix="/"),
    )


def test_match_returns_the_route_and_params(example):
    r, params = example.match(b"a.example.com:8080", b"GET", b"/users/42")
    assert r.name == "user-by-id" and r is example.routes[0]
    assert params == (("id", b"42"),)
    assert example.match(b"a.example.com", b"GET", b"/api/x") == (example.routes[1], None)
    assert name(example, b"a.example.com", b"POST", b"/users/42") == "default"
    assert name(example, b"example.com", b"GET", b"/users/42") == "default"
    assert name(example, None, b"GET", b"/apix") == "default"


def test_allowed_methods_are_strings():
    t = table(route("get", path="/users/{id}", methods=("GET",)),
              route("del", path="/users/{id}", methods=("DELETE",)))
    assert t.match(None, b"POST", b"/users/1") is None
    assert t.allowed_methods(None, b"/users/1") == ["DELETE", "GET"]
    assert t.allowed_methods(None, b"/other") == []


def test_exact_template_prefix_kinds_from_routematch():
    t = table(route("p", prefix="/users"), route("t", path="/users/{id}"), route("e", path="/users/me"))
    assert name(t, None, b"GET", b"/users/me") == "e"
    assert name(t, None, b"GET", b"/users/7") == "t"
    assert name(t, None, b"GET", b"/users/7/x") == "p"


@pytest.mark.parametrize("strip, path, want", [
    ("/api", b"/api/x", b"/x"),
    ("/api", b"/api", b"/"),
    ("/api", b"/api/", b"/"),
    ("/api", b"/api/x/y/", b"/x/y/"),
    ("/api", b"/apix", b"/apix"),        # not at a segment boundary: untouched
    ("/api", b"/other", b"/other"),
    ("/api/", b"/api/x", b"/x"),
    ("/api/", b"/api/", b"/"),
    ("/api/", b"/api", b"/api"),
    ("/a/b", b"/a/b/c", b"/c"),
    ("/", b"/x", b"/x"),
])
def test_strip_prefix(strip, path, want):
    t = table(route("r", prefix="/", strip=strip))
    r, params = t.match(None, b"GET", path)
    assert t.upstream_path(r, path, params) == want


def test_no_strip_no_rewrite_is_identity():
    t = table(route("r", prefix="/"))
    path = b"/a/b%20c"
    r, params = t.match(None, b"GET", path)
    assert t.upstream_path(r, path, params) is path


@pytest.mark.parametrize("template, rewrite, path, want", [
    ("/users/{id}", "/v2/users/{id}", b"/users/42", b"/v2/users/42"),
    ("/users/{id}", "/v2/users/{id}/", b"/users/a%2Fb", b"/v2/users/a%2Fb/"),
    ("/a/{x}/b/{y}", "/{y}/{x}/{y}", b"/a/1/b/2", b"/2/1/2"),
    ("/users/{id}", "/static", b"/users/42", b"/static"),
    ("/users/{id}", "/v%20{id}%", b"/users/42", b"/v%2042%"),   # literal % survives
    ("/users/me", "/self", b"/users/me", b"/self"),
])
def test_rewrite_path(template, rewrite, path, want):
    t = table(route("r", path=template, rewrite=rewrite))
    r, params = t.match(None, b"GET", path)
    assert t.upstream_path(r, path, params) == want


def test_rewrite_replaces_the_whole_path_even_with_strip():
    t = table(route("r", prefix="/api", strip="/api", rewrite="/fixed"))
    r, params = t.match(None, b"GET", b"/api/x/y")
    assert t.upstream_path(r, b"/api/x/y", params) == b"/fixed"


def test_upstream_path_for_the_example(example):
    for host, path, want in [
        (b"a.example.com", b"/users/42", b"/v2/users/42"),
        (None, b"/api/users/42", b"/users/42"),
        (None, b"/api", b"/"),
        (None, b"/index.html", b"/index.html"),
    ]:
        r, params = example.match(host, b"GET", path)
        assert example.upstream_path(r, path, params) == want


def test_bad_routes_are_refused_with_their_name():
    with pytest.raises(ValueError, match="'r'.*id"):
        table(route("r", path="/users/{uid}", rewrite="/x/{id}"))
    with pytest.raises(ValueError, match="'r'.*id"):
        table(route("r", prefix="/users", rewrite="/x/{id}"))
    with pytest.raises(ValueError, match="'bad'"):
        table(route("bad", path="/users/v{id}"))
    with pytest.raises(ValueError, match="'port'"):
        table(route("port", host="a.example.com:80", path="/"))


def test_candidates_in_priority_order_with_reasons():
    t = table(
        route("any-root", prefix="/"),
        route("wild-get", host="*.example.com", path="/users/{id}", methods=("GET",)),
        route("host-api", host="api.example.com", prefix="/users"),
        route("any-exact-post", path="/users/7", methods=("POST",)),
        route("any-me", path="/users/{id}"),
    )
    got = t.candidates(b"API.example.com:443", b"GET", b"/users/7")
    assert [r.name for r, _ in got] == ["host-api", "wild-get", "any-me", "any-root"]
    assert got[0][0] is t.match(b"API.example.com:443", b"GET", b"/users/7")[0]
    reasons = [reason for _, reason in got]
    assert reasons[0] == "host api.example.com, prefix /users, any method"
    assert reasons[1] == "host wildcard *.example.com, template /users/{id} (id=7), methods GET"
    assert reasons[2] == "any host, template /users/{id} (id=7), any method"
    assert reasons[3] == "any host, prefix /, any method"
    # POST: the GET-only route drops out, the exact POST one comes in
    got = t.candidates(b"api.example.com", b"POST", b"/users/7")
    assert [r.name for r, _ in got] == ["host-api", "any-exact-post", "any-me", "any-root"]
    assert got[1][1] == "any host, exact path /users/7, methods POST"
    assert t.candidates(None, b"GET", b"x") == []


def test_declaration_order_breaks_ties():
    t = table(route("first", prefix="/a"), route("second", prefix="/a"))
    assert name(t, None, b"GET", b"/a/b") == "first"
    assert [r.name for r, _ in t.candidates(None, b"GET", b"/a")] == ["first", "second"]
