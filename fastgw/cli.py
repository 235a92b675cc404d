"""The `fastgw` command: run the gateway, check a config, explain routing.

    fastgw run --config gateway.yaml [--workers N]
    fastgw run --upstream http://127.0.0.1:9001 [--listen HOST:PORT] [--workers N] [--upstream-timeout 30s]
    fastgw run ... [--log-format text|json] [--log-level debug|info|warning|error]
    fastgw check --config gateway.yaml
    fastgw routes --config gateway.yaml GET http://api.example.com/users/7
    fastgw --version

Exit codes: 0 ok, 1 config errors, 2 usage errors (and `routes` with no match).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from fastgw import __version__
from fastgw.config import Config, ConfigError, from_command_line, from_document, load, with_workers
from fastgw.config.errors import Invalid
from fastgw.config.model import CircuitBreaker, Cluster, Concurrency, HeaderOps, RateLimit, Route
from fastgw.config.schema import format_address, parse_duration, parse_workers, percent_encode_path
from fastgw.observe import process_log

if TYPE_CHECKING:  # the real import is deferred: it needs the native router
    from fastgw.proxy.routing import RouteTable

T = TypeVar("T")
Params = tuple[tuple[str, bytes], ...] | None  # RouteTable.match()'s bound {params}

EXIT_OK = 0
EXIT_CONFIG_ERROR = 1
EXIT_NO_ROUTE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.handler(args, parser)


# --- argument parsing ------------------------------------------------------

def _flag_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse `type=` from a config value parser, so flags and YAML agree."""
    def convert(text: str) -> T:
        try:
            return parse(text)
        except Invalid as invalid:
            raise argparse.ArgumentTypeError(f"{invalid.problem} ({invalid.hint})") from None
    convert.__name__ = parse.__name__.removeprefix("parse_")  # argparse names it in errors
    return convert


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgw", description="HTTP/1.1 API gateway and reverse proxy.")
    parser.add_argument("--version", action="version", version=f"fastgw {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="serve traffic",
                              description="Serve from a config file, or proxy everything to one --upstream.")
    run.add_argument("--config", metavar="FILE", help="YAML config file")
    run.add_argument("--listen", metavar="HOST:PORT",
                     help="with --upstream: address to listen on (default: $FASTGW_LISTEN or 127.0.0.1:8080)")
    run.add_argument("--upstream", metavar="URL", help="proxy every request to this http:// URL (no config file)")
    run.add_argument("--workers", metavar="N", type=_flag_type(parse_workers),
                     help="worker processes, or 'auto' for one per core (overrides the file and $FASTGW_WORKERS)")
    run.add_argument("--upstream-timeout", metavar="SECONDS", type=_flag_type(parse_duration),
                     help="with --upstream: how long to wait for the response head, e.g. 30 or 30s")
    run.add_argument("--log-format", choices=process_log.FORMATS,
                     help="process log: text on stderr, or JSON lines on stdout (default: $FASTGW_LOG_FORMAT, "
                          "else json when stdout is not a terminal, text when it is)")
    run.add_argument("--log-level", choices=process_log.LEVELS,
                     help="least severe process-log level written (default: $FASTGW_LOG_LEVEL or info)")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="validate a config file and exit",
                                description="Validate a config file: print every error, exit 1 if any.")
    check.add_argument("--config", metavar="FILE", required=True, help="YAML config file")
    check.set_defaults(handler=_check)

    routes = commands.add_parser("routes", help="show which route a request would take",
                                 description="Explain how a request is routed: the route chosen, the upstream "
                                             "request it becomes, and the other candidates in priority order.")
    routes.add_argument("--config", metavar="FILE", required=True, help="YAML config file")
    routes.add_argument("--host", help="Host header to match with (default: the URL's host)")
    routes.add_argument("method", metavar="METHOD", help="HTTP method, e.g. GET")
    routes.add_argument("url", metavar="URL", help="http://host/path?query, or just /path?query")
    routes.set_defaults(handler=_routes)

    keys = commands.add_parser("keys", help="API keys: hash one for a keys file, or make a new one",
                               description="API keys for auth.api_keys: the keys file holds only their hashes.")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    hash_cmd = key_commands.add_parser("hash", help="print the hash of a key (for the keys file's hash:)")
    hash_cmd.add_argument("key", metavar="KEY", nargs="?",
                          help="the key; omit it to read one line from standard input (keeps it out of "
                               "the shell history)")
    hash_cmd.set_defaults(handler=_keys_hash)
    new_cmd = key_commands.add_parser("new", help="make a random key and print it with its hash")
    new_cmd.set_defaults(handler=_keys_new)
    return parser


# --- keys ------------------------------------------------------------------

def _keys_hash(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from fastgw.auth.api_keys import hash_key
    key = args.key if args.key is not None else sys.stdin.readline().rstrip("\r\n")
    if not key:
        parser.error("keys hash: the key is empty")
    print(hash_key(key))
    return EXIT_OK


def _keys_new(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from fastgw.auth.api_keys import hash_key, new_key
    key = new_key()
    print(f"key:  {key}\nhash: {hash_key(key)}")
    return EXIT_OK


# --- run -------------------------------------------------------------------

def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.config and (args.listen or args.upstream):
        parser.error("run: --config cannot be combined with --listen/--upstream; put them in the file")
    if args.config and args.upstream_timeout is not None:
        parser.error("run: --upstream-timeout is for --upstream; with --config set timeouts in the file")
    if not args.config and not args.upstream:
        parser.error("run: give --config FILE, or --upstream URL to proxy everything to one server")
    try:
        log_format = process_log.choose(args.log_format, os.environ, "FASTGW_LOG_FORMAT", process_log.FORMATS,
                                        process_log.default_format())
        log_level = process_log.choose(args.log_level, os.environ, "FASTGW_LOG_LEVEL", process_log.LEVELS, "info")
    except ValueError as error:
        parser.error(f"run: {error}")
    process_log.select(log_format, log_level)     # installed by serve()
    def load_file(document: object = None) -> Config:
        # `document`: a config given through the admin API (PUT /config),
        # already validated by the worker that took it; reloaded in place of the file.
        config = load(args.config) if document is None else from_document(document, args.config)
        if args.workers is not None:
            config = with_workers(config, args.workers)
        _check_router_accepts(config)
        return config

    try:
        if args.config:
            config = load_file()
        else:
            config = from_command_line(args.listen, args.upstream, args.workers, args.upstream_timeout)
    except ConfigError as error:
        _print_errors(error)
        return EXIT_CONFIG_ERROR
    # Imported here: `check` and `routes` must work without the server's
    # event-loop dependencies being importable.
    from fastgw.server.master import serve
    # A reload (SIGHUP, POST /reload) reads the file again, flags still applied.
    return serve(config, load_file if args.config else None)


# --- check -----------------------------------------------------------------

def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        config = load(args.config)
        _check_router_accepts(config)
    except ConfigError as error:
        _print_errors(error)
        return EXIT_CONFIG_ERROR
    print(f"{args.config}: ok ({_count(len(config.listeners), 'listener')}, "
          f"{_count(len(config.clusters), 'cluster')}, {_count(len(config.routes), 'route')})")
    return EXIT_OK


def _check_router_accepts(config: Config) -> None:
    """Build the route table as the server will, so `check` passing means the
    server starts. The config validation should already catch everything the
    router refuses; this is the safety net if the two ever drift apart."""
    try:
        from fastgw.proxy.routing import RouteTable
    except ImportError:  # native extension not built: the YAML checks still ran
        return
    try:
        RouteTable(config)
    except ValueError as error:
        raise ConfigError([f"{config.source}: routes: {error} (the router refused it)"]) from None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _print_errors(error: ConfigError) -> None:
    for line in error.errors:
        print(line, file=sys.stderr)
    print(f"{_count(len(error.errors), 'error')}", file=sys.stderr)


# --- routes ----------------------------------------------------------------

# The router's order (fastgw/_native/router.pyx), in one line for `routes`.
PRIORITY_RULE = ("host: exact > *.wildcard (longest first) > any; then path: exact > template "
                 "(a static segment beats a {param}) > longest prefix; then declaration order")


def _routes(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    url_host, path, query = _split_request_url(args.url, parser)
    host = args.host if args.host is not None else url_host
    method = args.method.upper()
    try:
        config = load(args.config)
    except ConfigError as error:
        _print_errors(error)
        return EXIT_CONFIG_ERROR
    from fastgw.proxy.routing import RouteTable  # needs the native router

    table = RouteTable(config)
    host_bytes = host.encode("utf-8") if host else None
    # Encoded as a client would send it: the router matches raw wire bytes.
    path = percent_encode_path(path)
    path_bytes = path.encode("ascii")
    print(f"request: {method} {path}{'?' + query if query else ''}  host: {host or '(none: only host-less routes can match)'}")
    found = table.match(host_bytes, method.encode("ascii"), path_bytes)
    if found is None:
        _print_no_route(table, host_bytes, path_bytes)
        return EXIT_NO_ROUTE
    route, params = found
    upstream = table.upstream_path(route, path_bytes, params).decode("utf-8", "replace")
    _print_route(config, route, params, method, upstream + (f"?{query}" if query else ""))
    _print_candidates(table, host_bytes, method, path_bytes, chosen=route)
    return EXIT_OK


def _split_request_url(url: str, parser: argparse.ArgumentParser) -> tuple[str | None, str, str]:
    """`http://host:port/p?q` or `/p?q` -> (host or None, raw path, query)."""
    if url.startswith("/"):
        path, _, query = url.partition("?")
        return None, path, query.partition("#")[0]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        parser.error(f"routes: URL {url!r} must be http://host/path or start with '/'")
    return parts.netloc.rpartition("@")[2], parts.path or "/", parts.query


def _print_no_route(table: RouteTable, host: bytes | None, path: bytes) -> None:
    allowed = table.allowed_methods(host, path)
    if allowed:
        print(f"no route: 405 Method Not Allowed (Allow: {', '.join(allowed)})")
    else:
        print("no route: 404 Not Found")


def _print_route(config: Config, route: Route, params: Params, method: str, upstream: str) -> None:
    match = route.match
    cluster = config.clusters[route.cluster]
    pattern = match.prefix if match.prefix is not None else match.path
    print(f"route:    {route.name} (routes[{route.index}])")
    print(f"match:    {match.kind} {pattern}, host {match.host or 'any'}, "
          f"methods {', '.join(match.methods) if match.methods else 'any'}")
    print(f"params:   {_format_params(params)}")
    hashing = f" on {cluster.hash_on} (requests without it: round_robin)" if cluster.hash_on else ""
    print(f"cluster:  {cluster.name}, lb {cluster.lb}{hashing}")
    for endpoint in cluster.endpoints:
        print(f"            http://{format_address(endpoint.host, endpoint.port)}  weight {endpoint.weight}")
    if cluster.circuit_breaker is not None:
        print(f"circuit breaker: {_describe_breaker(cluster.circuit_breaker)}")
    for line in describe_health(cluster):
        print(line)
    print(f"upstream: {method} {upstream}{_rewrite_note(route)}")
    _print_header_ops("request headers", route.request_headers)
    _print_header_ops("response headers", route.response_headers)
    timeouts = config.route_timeouts(route)
    source = "route overrides cluster" if route.timeouts is not None else "cluster"
    print(f"timeouts: connect {_seconds(timeouts.connect)}, response_header {_seconds(timeouts.response_header)}, "
          f"idle {_seconds(timeouts.idle)}, websocket_idle {_seconds(timeouts.websocket_idle)} ({source})")
    _print_rate_limits(route.rate_limits)
    print(f"retries:  {_describe_retries(route.retries, cluster.retry_budget, method)}")
    _print_concurrency(route, cluster)
    _print_plugins(config, route)


def _print_plugins(config, route: Route) -> None:
    specs = [("global", spec) for spec in config.plugins] + [("route", spec) for spec in route.plugins]
    if not specs:
        print("plugins:  none")
        return
    print("plugins:  (in this order at each phase: request_head, access, response_head, log)")
    for owner, spec in specs:
        hooks = [h for h in ("on_request_head", "on_access", "on_response_head", "on_log")
                 if getattr(spec.factory, h, None) is not None]
        print(f"            {spec.name} ({spec.use}, {owner}): {', '.join(hooks)}; budget {_seconds(spec.budget)}")


def _print_concurrency(route: Route, cluster: Cluster) -> None:
    limits = [(f"route {route.name}", route.concurrency), (f"cluster {cluster.name}", cluster.concurrency)]
    limits = [(owner, limit) for owner, limit in limits if limit is not None]
    if not limits:
        print("concurrency: no limit")
        return
    print("concurrency: (host-wide, all workers; the route's slot first, then the cluster's)")
    for owner, limit in limits:
        print(f"            {owner}: {_describe_concurrency(limit)}")


def _describe_concurrency(limit: Concurrency) -> str:
    if not limit.max_queue:
        return f"{limit.max_in_flight} in flight, no queue (503 concurrency_limited when full)"
    return (f"{limit.max_in_flight} in flight, then up to {limit.max_queue} wait in order for at most "
            f"{_seconds(limit.queue_timeout)} (503 queue_full, queue_timeout)")


# The methods a retry may repeat after the request reached the upstream (as
# IDEMPOTENT in fastgw/_native/proxy.pyx).
IDEMPOTENT_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))


def _describe_retries(retries, budget, method: str) -> str:
    if retries.attempts == 0:
        return "off"
    if method in IDEMPOTENT_METHODS:
        when = ", ".join(retries.retry_on)
    elif "connect_failure" in retries.retry_on:
        when = f"connect_failure only ({method} is not idempotent)"
    else:
        return f"none for {method} (not idempotent, and connect_failure is not in retry_on)"
    per_try = (f", per-try timeout {_seconds(retries.per_try_timeout)}"
               if retries.per_try_timeout is not None else "")
    return (f"up to {retries.attempts} on {when}; backoff {_seconds(retries.backoff_base)}.."
            f"{_seconds(retries.backoff_max)} with jitter{per_try}; waits for an upstream Retry-After "
            f"up to {_seconds(retries.max_retry_after)}; budget {budget.ratio:g} of requests in flight "
            f"(at least {budget.min_concurrent})")


def describe_health(cluster) -> list[str]:
    """`fastgw routes` lines for a cluster's discovery and health keys."""
    lines = []
    if cluster.dns is not None:
        lines.append(f"            (from DNS: {format_address(cluster.dns.name, cluster.dns.port)}, "
                     f"re-resolved every {_seconds(cluster.dns.interval)})")
    if cluster.endpoints_file is not None:
        lines.append(f"            (from {cluster.endpoints_file.path}, checked every "
                     f"{_seconds(cluster.endpoints_file.interval)})")
    check = cluster.health_check
    if check is not None:
        statuses = ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in check.expected_statuses)
        lines.append(f"health check: GET {check.path}{f' (Host {check.host})' if check.host else ''} every "
                     f"{_seconds(check.interval)}, timeout {_seconds(check.timeout)}, expects {statuses}; "
                     f"unhealthy after {check.unhealthy_threshold} failures, healthy after "
                     f"{check.healthy_threshold} passes; per worker")
    od = cluster.outlier_detection
    if od is not None:
        lines.append(f"outlier detection: eject after {od.consecutive_5xx} consecutive 5xx or "
                     f"{od.consecutive_connect_failures} connect failures, for {_seconds(od.base_ejection)} x n "
                     f"(at most {_seconds(od.max_ejection)}), at most {od.max_ejected_percent:g}% ejected; per worker")
    if check is not None or od is not None:
        lines.append(f"no healthy endpoint: " + (
            f"panic mode below {cluster.panic_threshold:g}% healthy (balance over all)"
            if cluster.panic_threshold else "503 no_healthy_endpoint"))
    return lines


def _describe_breaker(breaker: CircuitBreaker) -> str:
    if breaker.failure_ratio is None:
        trip = f"opens after {breaker.failures} consecutive failures"
    else:
        trip = (f"opens when {breaker.failure_ratio:g} of the last {breaker.window} requests fail "
                f"(at least {breaker.min_requests} counted)")
    return (f"{trip}, open for {_seconds(breaker.open_for)}, then {breaker.half_open_probes} "
            f"half-open probe(s); per worker")


def _format_params(params: Params) -> str:
    if not params:
        return "(none)"
    return ", ".join(f"{name}={value.decode('utf-8', 'replace')}" for name, value in params)


def _rewrite_note(route: Route) -> str:
    if route.rewrite_path is not None:
        return f"  (rewrite_path {route.rewrite_path})"
    if route.strip_prefix is not None:
        return f"  (strip_prefix {route.strip_prefix})"
    return "  (path unchanged)"


def _print_header_ops(title: str, ops: HeaderOps) -> None:
    lines = ([f"set {name.decode()}: {value.decode('latin-1')}" for name, value in ops.set]
             + [f"add {name.decode()}: {value.decode('latin-1')}" for name, value in ops.add]
             + [f"remove {name.decode()}" for name in ops.remove])
    if not lines:
        print(f"{title}: unchanged")
        return
    print(f"{title}:")
    for line in lines:
        print(f"            {line}")


def _print_rate_limits(limits: tuple[RateLimit, ...]) -> None:
    if not limits:
        print("rate limits: none")
        return
    print("rate limits: (all must allow; a denial answers 429)")
    for limit in limits:
        print(f"            {_describe_limit(limit)}")


_UNIT_NAMES = {1.0: "s", 60.0: "m", 3600.0: "h"}


def _describe_limit(limit: RateLimit) -> str:
    rate = f"{limit.requests:g}/{_UNIT_NAMES.get(limit.per, f'{limit.per:g}s')}"
    if limit.algorithm == "token_bucket":
        shape = f"token_bucket, burst {limit.burst}"
    else:
        shape = f"sliding_window of {_seconds(limit.per)}"
    return f"key {limit.key_text}: {rate}, {shape}, scope {limit.scope}"


def _seconds(value: float) -> str:
    """Durations as written in configs: 500ms, 5s, 2m, 1h."""
    if value == 0:
        return "0s"
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    if value < 1:
        return f"{value * 1000:g}ms"
    return f"{value:g}s"


def _print_candidates(table: RouteTable, host: bytes | None, method: str, path: bytes, chosen: Route) -> None:
    print()
    print(f"candidates for {method}, in priority order:")
    for rank, (route, reason) in enumerate(table.candidates(host, method.encode("ascii"), path), start=1):
        marker = "  <- chosen" if route is chosen else ""
        print(f"  {rank}. {route.name} (routes[{route.index}]): {reason}{marker}")
    print(f"  rule: {PRIORITY_RULE}.")
    print(f"        Routes whose methods exclude {method} are skipped.")
