"""The compiled Router against a naive reference that scans every route.

The reference implements the documented semantics (fastgw/_native/router.pyx
module docstring) as directly as possible: it lists every route matching host
and path, in priority order; `match` is then the first accepting the method,
`allowed_methods` the union of the explicit method sets.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from fastgw._native.router import EXACT, MAX_PARAMS, PREFIX, TEMPLATE, Router

GET, POST, PUT, DELETE = b"GET", b"POST", b"PUT", b"DELETE"


# --- the reference ------------------------------------------------------------

def norm_host(host: bytes | None) -> bytes:
    if not host:
        return b""
    if host.startswith(b"["):
        close = host.find(b"]")
        if close >= 0:
            host = host[:close + 1]
    else:
        host = host.split(b":", 1)[0]
    if host.endswith(b"."):
        host = host[:-1]
    return host.lower()


@dataclass
class Spec:
    target: object
    host: bytes | None
    kind: int
    path: bytes
    methods: frozenset | None
    order: int
    seq: int = 0

    @property
    def nhost(self) -> bytes | None:
        return norm_host(self.host) or None


def is_param(segment: bytes) -> bool:
    return segment.startswith(b"{") and segment.endswith(b"}")


def path_match(spec: Spec, path: bytes):
    """None, or (priority key, params) when spec's path matches."""
    if spec.kind == EXACT:
        return ((0, spec.order, spec.seq), None) if path == spec.path else None
    if not path.startswith(b"/"):
        return None
    if spec.kind == TEMPLATE:
        want = spec.path[1:].split(b"/")
        got = path[1:].split(b"/")
        if len(want) != len(got):
            return None
        shape, params = [], []
        for w, g in zip(want, got):
            if is_param(w):
                if not g:
                    return None
                shape.append(1)
                params.append((w[1:-1].decode(), g))
            elif w == g:
                shape.append(0)
            else:
                return None
        return (1, tuple(shape), spec.order, spec.seq), tuple(params) or None
    p = spec.path
    ok = path.startswith(p) if p.endswith(b"/") else (path == p or path.startswith(p + b"/"))
    return ((2, -len(p), spec.order, spec.seq), None) if ok else None


def ref_candidates(specs: list[Spec], host: bytes | None, path: bytes):
    h = norm_host(host)
    tiers = []
    if h:
        tiers.append([s for s in specs if s.nhost == h and not s.nhost.startswith(b"*.")])
        wild = {s.nhost for s in specs if s.nhost and s.nhost.startswith(b"*.")}
        for w in sorted(wild, key=len, reverse=True):
            suffix = w[1:]
            if len(h) > len(suffix) and h.endswith(suffix):
                tiers.append([s for s in specs if s.nhost == w])
    tiers.append([s for s in specs if s.nhost is None])
    out = []
    for tier in tiers:
        found = []
        for s in tier:
            m = path_match(s, path)
            if m is not None:
                found.append((m[0], s, m[1]))
        found.sort(key=lambda item: item[0])
        out.extend((s, params) for _, s, params in found)
    return out


def ref_match(candidates, method):
    for s, params in candidates:
        if s.methods is None or method in s.methods:
            return (s.target, params)
    return None


def ref_allowed(candidates):
    methods = set()
    for s, _ in candidates:
        if s.methods is not None:
            methods |= s.methods
    return sorted(methods)


# --- helpers ------------------------------------------------------------------

def build(*routes) -> tuple[Router, list[Spec]]:
    """routes: (target, host, kind, path, methods[, order]); order defaults to position."""
    router, specs = Router(), []
    for i, r in enumerate(routes):
        target, host, kind, path, methods = r[:5]
        order = r[5] if len(r) > 5 else i
        methods = frozenset(methods) if methods is not None else None
        router.add(target, host, kind, path, methods, order)
        specs.append(Spec(target, host, kind, path, methods, order, i))
    router.freeze()
    return router, specs


def check(router: Router, specs: list[Spec], host, method, path):
    """Router and reference agree on match, candidates and allowed_methods."""
    candidates = ref_candidates(specs, host, path)
    want = ref_match(candidates, method)
    assert router.match(host, method, path) == want, (host, method, path)
    assert router.candidates(host, path) == [
        (s.target, params, s.methods) for s, params in candidates
    ], (host, path)
    assert router.allowed_methods(host, path) == ref_allowed(candidates), (host, path)
    return want


def target(router, host, method, path):
    found = router.match(host, method, path)
    return None if found is None else found[0]


# --- hand-written cases, one rule at a time --------------------------------------

def test_kind_priority_exact_template_prefix():
    r, specs = build(
        ("prefix", None, PREFIX, b"/users", None),
        ("template", None, TEMPLATE, b"/users/{id}", None),
        ("exact", None, EXACT, b"/users/me", None),
    )
    assert check(r, specs, None, GET, b"/users/me") == ("exact", None)
    assert check(r, specs, None, GET, b"/users/42") == ("template", (("id", b"42"),))
    assert check(r, specs, None, GET, b"/users/42/x") == ("prefix", None)
    assert check(r, specs, None, GET, b"/users") == ("prefix", None)
    assert check(r, specs, None, GET, b"/users/") == ("prefix", None)  # {id} needs a non-empty segment
    assert check(r, specs, None, GET, b"/usersx") is None


def test_static_segment_beats_param_leftmost_first():
    r, specs = build(
        ("late-static", None, TEMPLATE, b"/{a}/b/c", None, 0),
        ("early-static", None, TEMPLATE, b"/a/{x}/c", None, 9),
        ("all-params", None, TEMPLATE, b"/{p}/{q}/{r}", None, 0),
    )
    # /a/... : the static first segment wins although it has fewer statics and a higher order.
    assert check(r, specs, None, GET, b"/a/b/c") == ("early-static", (("x", b"b"),))
    assert check(r, specs, None, GET, b"/z/b/c") == ("late-static", (("a", b"z"),))
    assert check(r, specs, None, GET, b"/z/y/x") == (
        "all-params", (("p", b"z"), ("q", b"y"), ("r", b"x")))


def test_same_shape_lower_order_then_declaration_wins():
    r, specs = build(
        ("o5", None, TEMPLATE, b"/u/{a}", None, 5),
        ("o2", None, TEMPLATE, b"/u/{b}", None, 2),
        ("o2-later", None, TEMPLATE, b"/u/{c}", None, 2),
    )
    assert check(r, specs, None, GET, b"/u/1") == ("o2", (("b", b"1"),))
    assert [c[0] for c in r.candidates(None, b"/u/1")] == ["o2", "o2-later", "o5"]


def test_backtracks_from_static_branch_to_param():
    r, specs = build(
        ("deep-static", None, TEMPLATE, b"/a/b/x/{z}", None),
        ("param", None, TEMPLATE, b"/a/{y}/c", None),
    )
    assert check(r, specs, None, GET, b"/a/b/c") == ("param", (("y", b"b"),))
    assert check(r, specs, None, GET, b"/a/b/x/1") == ("deep-static", (("z", b"1"),))


def test_params_bind_whole_nonempty_segments_and_trailing_slash_matters():
    r, specs = build(
        ("id", None, TEMPLATE, b"/users/{id}", None),
        ("id-slash", None, TEMPLATE, b"/users/{id}/", None),
        ("posts", None, TEMPLATE, b"/users/{id}/posts/{post}", None),
    )
    assert check(r, specs, None, GET, b"/users/7") == ("id", (("id", b"7"),))
    assert check(r, specs, None, GET, b"/users/7/") == ("id-slash", (("id", b"7"),))
    assert check(r, specs, None, GET, b"/users/") is None
    assert check(r, specs, None, GET, b"/users//") is None
    assert check(r, specs, None, GET, b"/users/7/posts/") is None
    assert check(r, specs, None, GET, b"/users/7/posts/9") == (
        "posts", (("id", b"7"), ("post", b"9")))
    # Raw bytes: no decoding, an encoded slash stays inside the segment.
    assert check(r, specs, None, GET, b"/users/a%2Fb") == ("id", (("id", b"a%2Fb"),))


def test_empty_segments_and_root():
    r, specs = build(
        ("root", None, EXACT, b"/", None),
        ("dbl", None, EXACT, b"//", None),
        ("t-empty", None, TEMPLATE, b"/a//{x}", None),
        ("p-empty", None, PREFIX, b"/b//", None),
        ("t-root", None, TEMPLATE, b"/{x}", None),
    )
    assert check(r, specs, None, GET, b"/") == ("root", None)
    assert check(r, specs, None, GET, b"//") == ("dbl", None)
    assert check(r, specs, None, GET, b"/a//1") == ("t-empty", (("x", b"1"),))
    assert check(r, specs, None, GET, b"/a/1") is None
    assert check(r, specs, None, GET, b"/b//") == ("p-empty", None)
    assert check(r, specs, None, GET, b"/b//x/y") == ("p-empty", None)
    assert check(r, specs, None, GET, b"/b/") is None
    assert check(r, specs, None, GET, b"/q") == ("t-root", (("x", b"q"),))
    assert check(r, specs, None, GET, b"") is None
    assert check(r, specs, None, GET, b"*") is None


def test_prefix_is_segment_aware():
    r, specs = build(
        ("api", None, PREFIX, b"/api", None),
        ("api-slash", None, PREFIX, b"/api/", None),
    )
    assert check(r, specs, None, GET, b"/api") == ("api", None)
    assert check(r, specs, None, GET, b"/api/") == ("api-slash", None)  # longer prefix
    assert check(r, specs, None, GET, b"/api/x") == ("api-slash", None)
    assert check(r, specs, None, GET, b"/apix") is None
    assert check(r, specs, None, GET, b"/ap") is None

    r, specs = build(("root", None, PREFIX, b"/", None))
    for path in (b"/", b"/x", b"//", b"/a/b/c/"):
        assert check(r, specs, None, GET, path) == ("root", None)
    assert check(r, specs, None, GET, b"x") is None


def test_longest_prefix_then_order():
    r, specs = build(
        ("root", None, PREFIX, b"/", None),
        ("a", None, PREFIX, b"/a", None, 5),
        ("a-again", None, PREFIX, b"/a", None, 1),
        ("ab", None, PREFIX, b"/a/b", None),
        ("abc-get", None, PREFIX, b"/a/b/c", [GET]),
    )
    assert check(r, specs, None, GET, b"/a/b/c/d") == ("abc-get", None)
    assert check(r, specs, None, POST, b"/a/b/c/d") == ("ab", None)  # method fallthrough
    assert check(r, specs, None, GET, b"/a/bc") == ("a-again", None)
    assert check(r, specs, None, GET, b"/ab") == ("root", None)


def test_method_fallthrough_between_templates():
    r, specs = build(
        ("get", None, TEMPLATE, b"/users/{id}", [GET, PUT]),
        ("delete", None, TEMPLATE, b"/users/{uid}", [DELETE]),
        ("post-coll", None, EXACT, b"/users/new", [POST]),
    )
    assert check(r, specs, None, GET, b"/users/1") == ("get", (("id", b"1"),))
    assert check(r, specs, None, DELETE, b"/users/1") == ("delete", (("uid", b"1"),))
    assert check(r, specs, None, POST, b"/users/1") is None
    assert r.allowed_methods(None, b"/users/1") == [DELETE, GET, PUT]
    # the exact route rejects GET, the template takes it
    assert check(r, specs, None, GET, b"/users/new") == ("get", (("id", b"new"),))
    assert r.allowed_methods(None, b"/users/new") == [DELETE, GET, POST, PUT]
    assert r.allowed_methods(None, b"/nothing") == []
    # methods are case-sensitive and nothing is implied
    assert check(r, specs, None, b"get", b"/users/1") is None
    assert check(r, specs, None, b"HEAD", b"/users/1") is None


def test_host_tiers_and_fallthrough():
    r, specs = build(
        ("exact", b"api.example.com", PREFIX, b"/v1", None),
        ("wild", b"*.example.com", PREFIX, b"/", None),
        ("wild-b", b"*.b.example.com", PREFIX, b"/", None),
        ("any", None, PREFIX, b"/", None),
        ("exact-get", b"api.example.com", EXACT, b"/only-get", [GET]),
    )
    assert check(r, specs, b"api.example.com", GET, b"/v1/x") == ("exact", None)
    # the exact-host tier has no route for /v2: the wildcard tier answers
    assert check(r, specs, b"api.example.com", GET, b"/v2") == ("wild", None)
    # a tier skipped for the method
    assert check(r, specs, b"api.example.com", POST, b"/only-get") == ("wild", None)
    assert check(r, specs, b"a.example.com", GET, b"/") == ("wild", None)
    assert check(r, specs, b"a.b.example.com", GET, b"/") == ("wild-b", None)  # longest suffix
    assert check(r, specs, b"b.example.com", GET, b"/") == ("wild", None)
    assert check(r, specs, b"example.com", GET, b"/") == ("any", None)
    assert check(r, specs, b"notexample.com", GET, b"/") == ("any", None)
    # case, port, trailing dot
    assert check(r, specs, b"API.Example.COM:8443", GET, b"/v1") == ("exact", None)
    assert check(r, specs, b"X.B.EXAMPLE.com:8080", GET, b"/") == ("wild-b", None)
    assert check(r, specs, b"api.example.com.", GET, b"/v1") == ("exact", None)
    # no host: host-less routes only
    for host in (None, b"", b":8080"):
        assert check(r, specs, host, GET, b"/v1") == ("any", None)


def test_no_hostless_routes():
    r, specs = build(
        ("exact", b"api.example.com", PREFIX, b"/", None),
        ("wild", b"*.example.com", EXACT, b"/w", None),
        ("v6", b"[::1]", EXACT, b"/six", None),
    )
    assert check(r, specs, None, GET, b"/") is None
    assert check(r, specs, b"other", GET, b"/") is None
    assert check(r, specs, b"x.example.com", GET, b"/") is None
    assert check(r, specs, b"x.Example.com:1", GET, b"/w") == ("wild", None)
    assert check(r, specs, b"[::1]:8080", GET, b"/six") == ("v6", None)
    assert check(r, specs, b"*.example.com", GET, b"/w") == ("wild", None)


def test_route_host_is_normalised():
    r, specs = build(
        ("upper", b"API.Example.com", EXACT, b"/a", None),
        ("dot", b"other.org.", EXACT, b"/a", None),
        ("wild-upper", b"*.EXAMPLE.com", EXACT, b"/a", None),
    )
    assert target(r, b"api.example.com", GET, b"/a") == "upper"
    assert target(r, b"other.org", GET, b"/a") == "dot"
    assert target(r, b"x.example.com", GET, b"/a") == "wild-upper"


def test_allowed_methods_405_across_tiers():
    r, specs = build(
        ("h", b"api.example.com", TEMPLATE, b"/items/{id}", [GET]),
        ("w", b"*.example.com", EXACT, b"/items/1", [PUT, PATCH := b"PATCH"]),
        ("any", None, PREFIX, b"/items", [POST]),
        ("any-other", None, PREFIX, b"/other", None),
    )
    assert check(r, specs, b"api.example.com", DELETE, b"/items/1") is None
    assert r.allowed_methods(b"api.example.com", b"/items/1") == [GET, PATCH, POST, PUT]
    assert r.allowed_methods(None, b"/items/1") == [POST]
    assert r.allowed_methods(b"api.example.com", b"/other/x") == []  # any-method routes list nothing
    assert r.allowed_methods(b"api.example.com", b"/nope") == []


def test_validation():
    r = Router()
    for bad in (b"/a/{x}y", b"/a/{x", b"/a/x}", b"/a/{}", b"/a/{x}/{x}", b"/{a{b}}"):
        with pytest.raises(ValueError):
            r.add("t", None, TEMPLATE, bad, None, 0)
    with pytest.raises(ValueError):
        r.add("t", None, TEMPLATE, b"/" + b"/".join(b"{p%d}" % i for i in range(MAX_PARAMS + 1)), None, 0)
    r.add("t", None, TEMPLATE, b"/" + b"/".join(b"{p%d}" % i for i in range(MAX_PARAMS)), None, 0)
    with pytest.raises(ValueError):
        r.add("t", None, EXACT, b"no-slash", None, 0)
    with pytest.raises(ValueError):
        r.add("t", None, 7, b"/", None, 0)
    for host in (b"api.example.com:80", b"*", b"*.", b"a.*.com", b"**.a.com"):
        with pytest.raises(ValueError):
            r.add("t", host, EXACT, b"/", None, 0)
    with pytest.raises(ValueError):
        r.add("t", None, EXACT, b"/", frozenset(), 0)
    with pytest.raises(RuntimeError):
        r.match(None, GET, b"/")
    r.freeze()
    with pytest.raises(RuntimeError):
        r.add("t", None, EXACT, b"/", None, 0)
    many = b"/" + b"/".join(b"v%d" % i for i in range(MAX_PARAMS))
    assert r.match(None, GET, many)[1] == tuple((f"p{i}", b"v%d" % i) for i in range(MAX_PARAMS))
    assert len(r) == 1


def test_many_distinct_hosts():
    """Tiers are cached per raw Host (bounded); results stay the same past the bound."""
    r, specs = build(
        ("wild", b"*.example.com", PREFIX, b"/", None),
        ("h7", b"h7.example.com", EXACT, b"/x", None),
        ("any", None, EXACT, b"/x", None),
    )
    for _ in range(2):
        for i in range(3000):
            host = b"H%d.example.com:%d" % (i, i) if i % 2 else b"h%d.other" % i
            want = "any" if i % 2 == 0 else ("h7" if i == 7 else "wild")
            assert target(r, host, GET, b"/x") == want


def test_empty_router():
    r, specs = build()
    assert r.match(b"x", GET, b"/") is None
    assert r.allowed_methods(b"x", b"/") == []
    assert r.candidates(None, b"/") == []


# --- generated route sets ------------------------------------------------------

SEGMENTS = [b"a", b"b", b"ab", b"c", b""]
ROUTE_HOSTS = [None, None, None, b"api.example.com", b"API.example.com", b"*.example.com",
               b"*.b.example.com", b"other.org", b"other.org.", b"*.org"]
REQUEST_HOSTS = [None, b"", b":80", b"api.example.com", b"API.EXAMPLE.COM:8443", b"x.example.com",
                 b"a.b.example.com", b"B.example.com", b"example.com", b"other.org", b"other.org.:1",
                 b"x.other.org", b"org", b"*.example.com", b"api.example.com.", b"[::1]:80"]
METHODS = [GET, POST, DELETE, PUT]


def random_path(rng: random.Random, *, params: bool = False) -> bytes:
    segments, names = [], 0
    for _ in range(rng.randint(1, 4)):
        if params and rng.random() < 0.4:
            segments.append(b"{p%d}" % names)
            names += 1
        else:
            segments.append(rng.choice(SEGMENTS))
    if params and not names:
        segments[rng.randrange(len(segments))] = b"{p0}"
    return b"/" + b"/".join(segments)


def random_routes(rng: random.Random, count: int):
    routes = []
    for i in range(count):
        kind = rng.choice((EXACT, TEMPLATE, TEMPLATE, PREFIX))
        if kind == PREFIX and rng.random() < 0.1:
            path = b"/"
        else:
            path = random_path(rng, params=kind == TEMPLATE)
            if kind == PREFIX and rng.random() < 0.3:
                path += b"/"
        methods = None if rng.random() < 0.4 else rng.sample(METHODS[:3], rng.randint(1, 3))
        routes.append((f"r{i}", rng.choice(ROUTE_HOSTS), kind, path, methods, rng.randrange(8)))
    return routes


def random_request_path(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.05:
        return rng.choice([b"", b"*", b"a/b", b"/", b"//"])
    path = random_path(rng)
    if r < 0.2:
        path += b"/"
    return path


@pytest.mark.parametrize("seed", range(40))
def test_generated_against_reference(seed):
    rng = random.Random(seed)
    router, specs = build(*random_routes(rng, rng.choice((1, 5, 20, 60))))
    for _ in range(250):
        check(router, specs, rng.choice(REQUEST_HOSTS), rng.choice(METHODS), random_request_path(rng))


def test_generated_paths_drawn_from_routes():
    """Requests built from the routes' own paths, so most of them hit something."""
    rng = random.Random(1234)
    routes = random_routes(rng, 80)
    router, specs = build(*routes)
    hits = 0
    for _ in range(3000):
        path = rng.choice(routes)[3]
        path = b"/".join(rng.choice([b"x", b"a", b"12"]) if is_param(seg) else seg
                         for seg in path.split(b"/"))
        if rng.random() < 0.3:
            path += rng.choice([b"/", b"/a", b"/c/b", b"x"])
        hits += check(router, specs, rng.choice(REQUEST_HOSTS), rng.choice(METHODS), path) is not None
    assert hits > 1000


def test_ten_thousand_routes_spot_check():
    rng = random.Random(99)
    routes = []
    for i in range(10_000):
        kind = (EXACT, TEMPLATE, PREFIX)[i % 3]
        host = (None, b"api.example.com", b"*.example.com")[i % 7 % 3]
        stem = b"/svc%d/v%d" % (i % 500, i % 7)
        path = {EXACT: stem + b"/item%d" % i, TEMPLATE: stem + b"/{id}/x%d" % i, PREFIX: stem + b"/p%d" % i}[kind]
        routes.append((i, host, kind, path, None if i % 2 else [GET], rng.randrange(100)))
    router, specs = build(*routes)
    hits = 0
    for _ in range(150):
        i = rng.randrange(10_000)
        path = routes[i][3].replace(b"{id}", b"42") + rng.choice([b"", b"/more"])
        hits += check(router, specs, rng.choice(REQUEST_HOSTS), rng.choice(METHODS), path) is not None
    assert hits > 30
