"""Reader for the `routes` section, and the checks that span several routes."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

from fastgw.config.auth_section import read_auth
from fastgw.config.edge_section import read_cors, read_forward_auth, read_ip_filter, read_security_headers
from fastgw.config.concurrency_section import CONCURRENCY_KEY_HOMES, read_concurrency
from fastgw.config.errors import ErrorList, Invalid, item
from fastgw.config.model import Cluster, HeaderOps, RateLimit, Route, RouteMatch, UpstreamTimeouts
from fastgw.config.plugin_section import read_plugins
from fastgw.config.reader import Section, parse_or_record
from fastgw.config.schema import (
    check_removable, check_settable, describe, parse_header_name, parse_header_value, parse_int,
    parse_limit_algorithm, parse_limit_key, parse_limit_scope, parse_method, parse_name, parse_path, parse_rate,
    parse_rewrite_path, parse_route_host, pattern_key, suggestion,
)
from fastgw.config.retry_section import read_retries
from fastgw.config.sections import UPSTREAM_TIMEOUT_KEYS, read_upstream_timeouts

ROUTE_KEYS = ("name", "match", "cluster", "strip_prefix", "rewrite_path",
              "request_headers", "response_headers", "timeouts", "rate_limits", "retries", "concurrency",
              "plugins", "auth", "ip_filter", "cors", "security_headers",
              "forward_auth")
MATCH_KEYS = ("host", "path", "prefix", "methods")
HEADER_OP_KEYS = ("add", "set", "remove")
RATE_LIMIT_KEYS = ("key", "rate", "burst", "algorithm", "scope")
ROUTE_KEY_HOMES = {
    **dict.fromkeys(("rate", "burst", "algorithm", "scope"), "rate_limits, as a list entry"),
    **dict.fromkeys(MATCH_KEYS, "match"),
    **dict.fromkeys(HEADER_OP_KEYS, "request_headers or response_headers"),
    **dict.fromkeys(UPSTREAM_TIMEOUT_KEYS, "timeouts"),
    **CONCURRENCY_KEY_HOMES,
}

ROUTES_HINT = "write a list of routes, e.g. routes: [{match: {prefix: /}, cluster: NAME}]"
MATCH_HINT = "give exactly one of: path, for an exact path or a template like /users/{id}; prefix, for a subtree like /api"


@dataclass(frozen=True, slots=True)
class _MatchResult:
    match: RouteMatch | None   # None: too broken to build
    params: tuple[str, ...]    # the path template's parameter names


def read_routes(top: Section, clusters: dict[str, Cluster]) -> tuple[Route, ...]:
    if not top.has("routes"):
        top.errors.add("routes", "missing", ROUTES_HINT)
        return ()
    entries = top.list("routes", ROUTES_HINT)
    if isinstance(top.get("routes"), list) and not entries:
        top.errors.add("routes", "the list is empty", ROUTES_HINT)
    routes = []
    for index, raw in enumerate(entries):
        section = Section(raw, item("routes", index), top.errors, ROUTE_KEYS, misplaced=ROUTE_KEY_HOMES)
        route = _read_route(section, index, clusters)
        if route is not None:
            routes.append(route)
    _check_unique_names(top.errors, routes)
    _check_no_duplicate_matches(top.errors, routes)
    return tuple(routes)


def _read_route(route: Section, index: int, clusters: dict[str, Cluster]) -> Route | None:
    name = route.parse("name", parse_name, f"route-{index}")
    matched = _read_match(route)
    cluster = route.require("cluster", partial(_parse_cluster_ref, clusters=clusters), "",
                            suggestion("", clusters, "every route names a cluster; defined clusters"))
    strip_prefix = _read_strip_prefix(route, matched.match)
    rewrite_path = route.parse("rewrite_path", partial(_parse_rewrite, params=matched.params), None)
    if strip_prefix is not None and rewrite_path is not None:
        route.errors.add(route.path("rewrite_path"), "cannot be combined with strip_prefix",
                         "rewrite_path already replaces the whole upstream path; remove strip_prefix")
    request_headers = _read_header_ops(route.section("request_headers", HEADER_OP_KEYS))
    response_headers = _read_header_ops(route.section("response_headers", HEADER_OP_KEYS))
    timeouts = _read_route_timeouts(route, clusters.get(cluster))
    rate_limits = _read_rate_limits(route)
    retries = read_retries(route)
    concurrency = read_concurrency(route)
    plugins = read_plugins(route)
    auth = read_auth(route, on_route=True)
    ip_filter = read_ip_filter(route)
    cors = read_cors(route)
    security_headers = read_security_headers(route, on_route=True)
    forward_auth = read_forward_auth(route)
    if matched.match is None:
        return None
    return Route(name=name, index=index, match=matched.match, cluster=cluster,
                 strip_prefix=strip_prefix, rewrite_path=rewrite_path,
                 request_headers=request_headers, response_headers=response_headers,
                 timeouts=timeouts, rate_limits=rate_limits, retries=retries,
                 concurrency=concurrency, plugins=plugins, auth=auth, ip_filter=ip_filter, cors=cors,
                 security_headers=security_headers, forward_auth=forward_auth)


def _parse_cluster_ref(value: object, clusters: dict[str, Cluster]) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a cluster name, got {describe(value)}",
                      suggestion("", clusters, "defined clusters"))
    if value not in clusters:
        raise Invalid(f"unknown cluster {value!r}", suggestion(value, clusters, "defined clusters"))
    return value


# --- match -----------------------------------------------------------------

def _read_match(route: Section) -> _MatchResult:
    if not route.has("match"):
        route.errors.add(route.path("match"), "missing", MATCH_HINT)
        return _MatchResult(None, ())
    match = route.section("match", MATCH_KEYS)
    if match.has("path") == match.has("prefix"):
        problem = "has both path and prefix" if match.has("path") else "has neither path nor prefix"
        route.errors.add(match.keypath, problem, MATCH_HINT)
        return _MatchResult(None, ())
    host = match.parse("host", parse_route_host, None)
    methods = _read_methods(match)
    if match.has("prefix"):
        prefix = match.parse("prefix", partial(_parse_pattern, what="prefix"), None)
        return _MatchResult(RouteMatch(host=host, prefix=prefix[0], methods=methods) if prefix else None, ())
    path = match.parse("path", partial(_parse_pattern, what="path"), None)
    if path is None:
        return _MatchResult(None, ())
    return _MatchResult(RouteMatch(host=host, path=path[0], methods=methods), path[1])


def _parse_pattern(value: object, what: str) -> tuple[str, tuple[str, ...]]:
    return parse_path(value, what=what, allow_params=(what == "path"))


def _read_methods(match: Section) -> tuple[str, ...] | None:
    raw = match.get("methods")
    if raw is None:
        return None
    if not isinstance(raw, list):
        example = f"methods: [{raw}]" if isinstance(raw, str) else "methods: [GET, POST]"
        match.errors.add(match.path("methods"), f"expected a list, got {describe(raw)}",
                         f"write a list even for one method, e.g. {example}")
        return None
    if not raw:
        match.errors.add(match.path("methods"), "the list is empty", "omit methods to allow any method")
        return None
    methods: list[str] = []
    for index, value in enumerate(raw):
        method = parse_or_record(match.errors, item(match.path("methods"), index), parse_method, value, None)
        if method is not None and method not in methods:
            methods.append(method)
    return tuple(methods)


# --- upstream path ---------------------------------------------------------

def _read_strip_prefix(route: Section, match: RouteMatch | None) -> str | None:
    strip = route.parse("strip_prefix", partial(parse_path, what="strip_prefix", allow_params=False), None)
    if strip is None or match is None:
        return None
    pattern = match.prefix if match.prefix is not None else match.path
    assert pattern is not None
    if not _starts_with_segments(pattern, strip[0]):
        kind = "prefix" if match.prefix is not None else "path"
        route.errors.add(route.path("strip_prefix"),
                         f"{strip[0]!r} is not a leading part of match.{kind} {pattern!r}",
                         "strip_prefix removes whole leading segments of the matched path, "
                         "e.g. strip_prefix: /api with prefix: /api")
    return strip[0]


def _starts_with_segments(pattern: str, prefix: str) -> bool:
    """Whether `prefix` is `pattern`'s start in whole segments: /api of /api/v1, not of /apix."""
    prefix = prefix.rstrip("/")
    return not prefix or pattern == prefix or pattern.startswith(prefix + "/")


def _parse_rewrite(value: object, params: tuple[str, ...]) -> str:
    path, used = parse_rewrite_path(value)
    for name in used:
        if name not in params:
            hint = (suggestion(name, params, "the path template defines") if params
                    else "only a path template like /users/{id} provides parameters")
            raise Invalid(f"rewrite_path uses {{{name}}}, which the route's path does not define", hint)
    return path


# --- headers ---------------------------------------------------------------

HEADER_MAP_HINT = "write a mapping of header name to value, e.g. set: {X-Gateway: fastgw}"
HEADER_LIST_HINT = "write a list of header names, e.g. remove: [X-Debug]"


def _read_header_ops(ops: Section) -> HeaderOps:
    add = _read_header_values(ops, "add")
    set_ = _read_header_values(ops, "set")
    remove = _read_header_names(ops, "remove")
    _check_each_header_in_one_op(ops, {"add": [n for n, _ in add], "set": [n for n, _ in set_], "remove": remove})
    return HeaderOps(add=tuple(add), set=tuple(set_), remove=tuple(remove))


def _read_header_values(ops: Section, op: str) -> list[tuple[bytes, bytes]]:
    raw = ops.get(op)
    if raw is None:
        return []
    if not isinstance(raw, dict):
        ops.errors.add(ops.path(op), f"expected a mapping, got {describe(raw)}", HEADER_MAP_HINT)
        return []
    pairs: list[tuple[bytes, bytes]] = []
    for raw_name, raw_value in raw.items():
        keypath = f"{ops.path(op)}.{raw_name}"
        name = parse_or_record(ops.errors, keypath, _parse_settable_name, raw_name, None)
        value = parse_or_record(ops.errors, keypath, parse_header_value, raw_value, None)
        if name is None or value is None:
            continue
        if any(name == seen for seen, _ in pairs):
            ops.errors.add(keypath, "header listed twice (names are case-insensitive)", "keep one entry per header")
            continue
        pairs.append((name, value))
    return pairs


def _parse_settable_name(value: object) -> bytes:
    name = parse_header_name(value)
    check_settable(name)
    return name


def _parse_removable_name(value: object) -> bytes:
    name = parse_header_name(value)
    check_removable(name)
    return name


def _read_header_names(ops: Section, op: str) -> list[bytes]:
    raw = ops.get(op)
    if raw is None:
        return []
    if not isinstance(raw, list):
        example = f"remove: [{raw}]" if isinstance(raw, str) else "remove: [X-Debug]"
        ops.errors.add(ops.path(op), f"expected a list, got {describe(raw)}",
                       f"write a list even for one header, e.g. {example}")
        return []
    names: list[bytes] = []
    for index, value in enumerate(raw):
        name = parse_or_record(ops.errors, item(ops.path(op), index), _parse_removable_name, value, None)
        if name is not None and name not in names:
            names.append(name)
    return names


def _check_each_header_in_one_op(ops: Section, names_by_op: dict[str, list[bytes]]) -> None:
    # Order between add, set and remove of the same header would be a guess;
    # refusing the combination keeps the behaviour obvious from the file.
    first_op: dict[bytes, str] = {}
    for op, names in names_by_op.items():
        for name in names:
            if name in first_op:
                ops.errors.add(f"{ops.path(op)}.{name.decode()}", f"header is also in {first_op[name]}",
                               "list each header under only one of add, set or remove")
            else:
                first_op[name] = op


# --- timeouts --------------------------------------------------------------

def _read_route_timeouts(route: Section, cluster: Cluster | None) -> UpstreamTimeouts | None:
    timeouts = route.section("timeouts", UPSTREAM_TIMEOUT_KEYS)
    if not timeouts.raw:
        return None
    base = cluster.timeouts if cluster is not None else UpstreamTimeouts()
    return read_upstream_timeouts(timeouts, base)


# --- rate limits -----------------------------------------------------------

RATE_LIMITS_HINT = "write a list, e.g. rate_limits: [{key: client_ip, rate: 100/s}]"
RATE_LIMIT_HINT = "write {key: client_ip, rate: 100/s}, optionally with burst, algorithm and scope"
# The sliding window keeps 32-bit counts.
MAX_WINDOW_REQUESTS = 2**31 - 1


def _read_rate_limits(route: Section) -> tuple[RateLimit, ...]:
    limits = []
    for index, raw in enumerate(route.list("rate_limits", RATE_LIMITS_HINT)):
        keypath = item(route.path("rate_limits"), index)
        if not isinstance(raw, dict):
            route.errors.add(keypath, f"expected a mapping, got {describe(raw)}", RATE_LIMIT_HINT)
            continue
        section = Section(raw, keypath, route.errors, RATE_LIMIT_KEYS)
        limit = _read_rate_limit(section)
        if limit is not None:
            limits.append(limit)
    return tuple(limits)


def _read_rate_limit(limit: Section) -> RateLimit | None:
    key = limit.require("key", parse_limit_key, None,
                        "say what is counted: client_ip, route, header:NAME, or a+b combinations")
    rate = limit.require("rate", parse_rate, None, "e.g. rate: 100/s")
    algorithm = limit.parse("algorithm", parse_limit_algorithm, "token_bucket")
    scope = limit.parse("scope", parse_limit_scope, "local")
    burst = 1
    if algorithm == "sliding_window":
        if limit.has("burst"):
            limit.errors.add(limit.path("burst"), "burst applies only to algorithm token_bucket",
                             "a sliding window allows the rate's N per window; remove burst")
        if rate is not None and (rate[0] != int(rate[0]) or rate[0] > MAX_WINDOW_REQUESTS):
            limit.errors.add(limit.path("rate"),
                             f"a sliding window counts whole requests, got {rate[0]:g} per window",
                             f"write a whole number from 1 to {MAX_WINDOW_REQUESTS} per window, e.g. 1000/h")
            rate = None
    elif rate is not None:
        default_burst = max(1, math.ceil(rate[0] / rate[1]))
        burst = limit.parse("burst", partial(parse_int, minimum=1, example=default_burst), default_burst)
    if key is None or rate is None:
        return None
    return RateLimit(key=key, requests=rate[0], per=rate[1], burst=burst, algorithm=algorithm, scope=scope)


# --- checks across routes --------------------------------------------------

def _check_unique_names(errors: ErrorList, routes: list[Route]) -> None:
    first_index: dict[str, int] = {}
    for route in routes:
        if route.name in first_index:
            errors.add(f"routes[{route.index}].name",
                       f"route name {route.name!r} is already used by routes[{first_index[route.name]}]",
                       "give each route a unique name; unnamed routes are called route-INDEX")
        else:
            first_index[route.name] = route.index


def _check_no_duplicate_matches(errors: ErrorList, routes: list[Route]) -> None:
    """Two routes with the same host and pattern where the earlier one takes
    some of the later one's methods: the router always picks the earlier, so
    the later route is dead for those methods, which is always a mistake."""
    seen: dict[tuple[str | None, str, str], list[Route]] = {}
    for route in routes:
        match = route.match
        key = (match.host, match.kind, pattern_key(match.prefix if match.prefix is not None else match.path or ""))
        for earlier in seen.get(key, []):
            shadowed = _shadowed_methods(earlier.match.methods, match.methods)
            if shadowed:
                errors.add(f"routes[{route.index}].match",
                           f"duplicates routes[{earlier.index}] {earlier.name!r}: same host and "
                           f"{match.kind} pattern, {shadowed}",
                           f"routes[{route.index}] could never match those requests; "
                           "change its host, pattern or methods, or delete one of them")
                break
        seen.setdefault(key, []).append(route)


def _shadowed_methods(earlier: tuple[str, ...] | None, later: tuple[str, ...] | None) -> str:
    """Which of the later route's methods the earlier one takes first, described;
    "" when none.

    An explicit method list followed by a method-less route on the same pattern
    is not a duplicate: it is the usual "these methods go here, every other
    method goes there" split, and the later route is reachable.
    """
    if earlier is None:
        return "both allow any method" if later is None else "and the earlier one already takes any method"
    if later is None:
        return ""
    shared = [method for method in later if method in earlier]
    return f"both allow {', '.join(shared)}" if shared else ""
