"""Readers for the `listeners`, `server` and `clusters` sections."""
from __future__ import annotations

from dataclasses import replace
from functools import partial

from fastgw.config import model
from fastgw.config.concurrency_section import CONCURRENCY_KEY_HOMES, read_concurrency
from fastgw.config.errors import child, item
from fastgw.config.health_section import DISCOVERY_KEYS, HEALTH_KEYS, read_discovery, read_health
from fastgw.config.model import CircuitBreaker, Cluster, Endpoint, Limits, Listener, ServerSettings, UpstreamTimeouts
from fastgw.config.reader import Section, parse_or_record
from fastgw.config.retry_section import read_retry_budget
from fastgw.config.schema import HASH_ON_HINT, LB_POLICIES, parse_hash_on
from fastgw.config.schema import (
    ADDRESS_HINT, URL_HINT, describe, format_address, parse_address, parse_duration, parse_endpoint_url,
    parse_int, parse_lb, parse_name, parse_rate_limit_slots, parse_ratio, parse_size, parse_trusted_proxy,
    parse_workers,
)

TOP_LEVEL_KEYS = ("listeners", "server", "clusters", "routes", "redis", "metrics", "access_log", "tracing",
                  "admin", "plugins", "auth", "ip_filter", "security_headers")
SERVER_KEY_HOMES = {"workers": "server", "limits": "server", "trusted_proxies": "server",
                    "rate_limit_slots": "server"}

# A config without `listeners` serves where `fastgw run --upstream` does.
DEFAULT_LISTENER = Listener(name="default", host="127.0.0.1", port=8080)

# --- listeners -------------------------------------------------------------

LISTENER_KEYS = ("name", "address")
LISTENERS_HINT = "write a list, e.g. listeners: [{name: public, address: 127.0.0.1:8080}]"


def read_listeners(top: Section) -> tuple[Listener, ...]:
    if not top.has("listeners"):
        return (DEFAULT_LISTENER,)
    entries = top.list("listeners", LISTENERS_HINT)
    if isinstance(top.get("listeners"), list) and not entries:
        top.errors.add("listeners", "the list is empty", "add a listener, or remove the key for 127.0.0.1:8080")
    listeners = [_read_listener(Section(raw, item("listeners", i), top.errors, LISTENER_KEYS), i)
                 for i, raw in enumerate(entries)]
    _check_unique_listeners(top, listeners)
    return tuple(listeners)


def _read_listener(section: Section, index: int) -> Listener:
    name = section.parse("name", parse_name, f"listener-{index}")
    host, port = section.require("address", parse_address, ("", 0), ADDRESS_HINT)
    return Listener(name=name, host=host, port=port)


def _check_unique_listeners(top: Section, listeners: list[Listener]) -> None:
    first_by_address: dict[tuple[str, int], int] = {}
    first_by_name: dict[str, int] = {}
    for index, listener in enumerate(listeners):
        if listener.port == 0:  # its address was invalid and already reported
            continue
        address = (listener.host, listener.port)
        if address in first_by_address:
            top.errors.add(f"listeners[{index}].address",
                           f"{format_address(*address)} is already used by listeners[{first_by_address[address]}]",
                           "give each listener its own host:port")
        first_by_address.setdefault(address, index)
        if listener.name in first_by_name:
            top.errors.add(f"listeners[{index}].name",
                           f"listener name {listener.name!r} is already used by listeners[{first_by_name[listener.name]}]",
                           "give each listener a unique name")
        first_by_name.setdefault(listener.name, index)


# --- server ----------------------------------------------------------------

SERVER_KEYS = ("workers", "limits", "timeouts", "trusted_proxies", "rate_limit_slots")
LIMIT_KEYS = ("max_header_bytes", "max_header_count", "max_uri_bytes", "max_body_bytes")
SERVER_TIMEOUT_KEYS = ("client_header", "keepalive", "drain", "drain_delay", "reload_drain")


def read_server(top: Section) -> ServerSettings:
    homes = {**dict.fromkeys(LIMIT_KEYS, "limits"), **dict.fromkeys(SERVER_TIMEOUT_KEYS, "timeouts")}
    server = top.section("server", SERVER_KEYS, misplaced=homes)
    return ServerSettings(
        workers=server.parse("workers", parse_workers, 0),
        limits=_read_limits(server.section("limits", LIMIT_KEYS)),
        **_read_server_timeouts(server.section("timeouts", SERVER_TIMEOUT_KEYS)),
        trusted_proxies=_read_trusted_proxies(server),
        rate_limit_slots=server.parse("rate_limit_slots", parse_rate_limit_slots, model.DEFAULT_RATE_LIMIT_SLOTS),
    )


TRUSTED_PROXIES_HINT = "write a list of addresses or networks, e.g. trusted_proxies: [10.0.0.0/8, 127.0.0.1]"


def _read_trusted_proxies(server: Section) -> tuple:
    """The peers whose X-Forwarded-For is believed; duplicates dropped."""
    networks: list = []
    for index, raw in enumerate(server.list("trusted_proxies", TRUSTED_PROXIES_HINT)):
        network = parse_or_record(server.errors, item(server.path("trusted_proxies"), index),
                                  parse_trusted_proxy, raw, None)
        if network is not None and network not in networks:
            networks.append(network)
    return tuple(networks)


def _read_limits(limits: Section) -> Limits:
    return Limits(
        max_header_bytes=limits.parse("max_header_bytes", parse_size, model.DEFAULT_MAX_HEADER_BYTES),
        max_header_count=limits.parse("max_header_count", partial(parse_int, minimum=1, example=100),
                                      model.DEFAULT_MAX_HEADER_COUNT),
        max_uri_bytes=limits.parse("max_uri_bytes", parse_size, model.DEFAULT_MAX_URI_BYTES),
        max_body_bytes=limits.parse("max_body_bytes", parse_size, model.DEFAULT_MAX_BODY_BYTES),
    )


def _read_server_timeouts(timeouts: Section) -> dict[str, float]:
    return {
        "client_header_timeout": timeouts.parse("client_header", parse_duration, model.DEFAULT_CLIENT_HEADER_TIMEOUT),
        "keepalive_timeout": timeouts.parse("keepalive", parse_duration, model.DEFAULT_KEEPALIVE_TIMEOUT),
        # 0 is meaningful here: on SIGTERM, close at once without draining.
        "drain_timeout": timeouts.parse("drain", partial(parse_duration, allow_zero=True),
                                        model.DEFAULT_DRAIN_TIMEOUT),
        "drain_delay": timeouts.parse("drain_delay", partial(parse_duration, allow_zero=True),
                                      model.DEFAULT_DRAIN_DELAY),
        "reload_drain": timeouts.parse("reload_drain", partial(parse_duration, allow_zero=True),
                                       model.DEFAULT_RELOAD_DRAIN),
    }


# --- clusters --------------------------------------------------------------

CLUSTER_KEYS = ("lb", "hash_on", "endpoints", "pool", "timeouts", "circuit_breaker", "retry_budget",
                "concurrency", *HEALTH_KEYS, *DISCOVERY_KEYS)
POOL_KEYS = ("max_idle", "idle_timeout")
ENDPOINT_KEYS = ("url", "weight")
UPSTREAM_TIMEOUT_KEYS = ("connect", "response_header", "idle", "websocket_idle")
CLUSTER_KEY_HOMES = {
    "url": "endpoints, as a list entry", "weight": "endpoints, as a list entry",
    **dict.fromkeys(POOL_KEYS, "pool"), **dict.fromkeys(UPSTREAM_TIMEOUT_KEYS, "timeouts"),
    **CONCURRENCY_KEY_HOMES,
}
CLUSTERS_HINT = "write a mapping of names to clusters, e.g. clusters: {users: {endpoints: [http://127.0.0.1:9001]}}"
ENDPOINTS_HINT = "list the upstream servers, e.g. endpoints: [http://127.0.0.1:9001]"


def read_clusters(top: Section) -> dict[str, Cluster]:
    """Every cluster named in the file, even invalid ones (their errors are
    recorded), so that routes naming them are not reported as unknown too."""
    if not top.has("clusters"):
        top.errors.add("clusters", "missing", CLUSTERS_HINT)
        return {}
    raw_clusters = top.get("clusters")
    if not isinstance(raw_clusters, dict):
        top.errors.add("clusters", f"expected a mapping of cluster names, got {describe(raw_clusters)}", CLUSTERS_HINT)
        return {}
    if not raw_clusters:
        top.errors.add("clusters", "no clusters are defined", CLUSTERS_HINT)
    clusters = {}
    for raw_name, body in raw_clusters.items():
        keypath = child("clusters", raw_name)
        name = parse_or_record(top.errors, keypath, parse_name, raw_name, str(raw_name))
        clusters[name] = _read_cluster(name, Section(body, keypath, top.errors, CLUSTER_KEYS, misplaced=CLUSTER_KEY_HOMES))
    return clusters


def _read_cluster(name: str, cluster: Section) -> Cluster:
    pool = cluster.section("pool", POOL_KEYS)
    endpoints, discovery = read_discovery(cluster, _read_endpoints)
    lb = cluster.parse("lb", parse_lb, "round_robin")
    return Cluster(
        name=name,
        endpoints=endpoints,
        lb=lb,
        hash_on=_read_hash_on(cluster, lb),
        # 0 is allowed: it turns connection reuse off for this cluster.
        pool_max_idle=pool.parse("max_idle", partial(parse_int, minimum=0, example=64), model.DEFAULT_POOL_MAX_IDLE),
        pool_idle_timeout=pool.parse("idle_timeout", parse_duration, model.DEFAULT_POOL_IDLE_TIMEOUT),
        timeouts=read_upstream_timeouts(cluster.section("timeouts", UPSTREAM_TIMEOUT_KEYS), UpstreamTimeouts()),
        circuit_breaker=_read_circuit_breaker(cluster) if "circuit_breaker" in cluster.raw else None,
        retry_budget=read_retry_budget(cluster),
        **read_health(cluster),
        **discovery,
        concurrency=read_concurrency(cluster),
    )


CIRCUIT_BREAKER_KEYS = ("failures", "failure_ratio", "window", "min_requests", "open_for", "half_open_probes")


def _read_circuit_breaker(cluster: Section) -> CircuitBreaker:
    """`failures` (consecutive) or `failure_ratio` (over `window`): one model per breaker."""
    section = cluster.section("circuit_breaker", CIRCUIT_BREAKER_KEYS)
    ratio = section.parse("failure_ratio", parse_ratio, None)
    if ratio is not None or section.has("failure_ratio"):
        if section.has("failures"):
            section.errors.add(section.path("failures"), "can't be combined with failure_ratio",
                               "keep one: failures counts consecutive failures, "
                               "failure_ratio the share of failures in the last `window` requests")
    else:
        for key in ("window", "min_requests"):
            if section.has(key):
                section.errors.add(section.path(key), "only used with failure_ratio",
                                   "add failure_ratio, e.g. 0.5, or remove it")
    window = section.parse("window", partial(parse_int, minimum=1, example=20), model.DEFAULT_CB_WINDOW)
    min_requests = section.parse("min_requests", partial(parse_int, minimum=1, example=10),
                                 min(model.DEFAULT_CB_MIN_REQUESTS, window))
    if min_requests > window:
        section.errors.add(section.path("min_requests"), f"{min_requests} is more than window ({window})",
                           "the window holds only `window` requests; use min_requests <= window")
    return CircuitBreaker(
        failures=section.parse("failures", partial(parse_int, minimum=1, example=5), model.DEFAULT_CB_FAILURES),
        failure_ratio=ratio,
        window=window,
        min_requests=min_requests,
        open_for=section.parse("open_for", parse_duration, model.DEFAULT_CB_OPEN_FOR),
        half_open_probes=section.parse("half_open_probes", partial(parse_int, minimum=1, example=1),
                                       model.DEFAULT_CB_HALF_OPEN_PROBES),
    )


def _read_hash_on(cluster: Section, lb: str) -> str | None:
    """`hash_on` is required by ring_hash and refused with any other policy."""
    if lb == "ring_hash":
        return cluster.require("hash_on", parse_hash_on, None, HASH_ON_HINT)
    # An invalid `lb` was reported already (and read as round_robin): say nothing more.
    if cluster.has("hash_on") and cluster.get("lb") in (None, *LB_POLICIES):
        cluster.errors.add(cluster.path("hash_on"), f"only used with lb: ring_hash (this cluster has lb: {lb})",
                           "set lb: ring_hash to hash on a request key, or remove hash_on")
    return None


def _read_endpoints(cluster: Section) -> tuple[Endpoint, ...]:
    if not cluster.has("endpoints"):
        cluster.errors.add(cluster.path("endpoints"), "missing", ENDPOINTS_HINT)
        return ()
    entries = cluster.list("endpoints", ENDPOINTS_HINT)
    if isinstance(cluster.get("endpoints"), list) and not entries:
        cluster.errors.add(cluster.path("endpoints"), "the list is empty", ENDPOINTS_HINT)
    endpoints = []
    first_index: dict[tuple[str, int], int] = {}
    for index, raw in enumerate(entries):
        keypath = item(cluster.path("endpoints"), index)
        endpoint = _read_endpoint(raw, keypath, cluster)
        if endpoint is None:
            continue
        address = (endpoint.host, endpoint.port)
        if address in first_index:
            cluster.errors.add(keypath, f"{format_address(*address)} is listed twice, first as endpoints[{first_index[address]}]",
                               "list each endpoint once; raise its weight to send it more traffic")
        first_index.setdefault(address, index)
        endpoints.append(endpoint)
    return tuple(endpoints)


def _read_endpoint(raw: object, keypath: str, cluster: Section) -> Endpoint | None:
    # Shorthand: `- http://127.0.0.1:9001` is `- url: http://127.0.0.1:9001`.
    if isinstance(raw, str):
        host, port = parse_or_record(cluster.errors, keypath, parse_endpoint_url, raw, ("", 0))
        return Endpoint(host=host, port=port) if port else None
    endpoint = Section(raw, keypath, cluster.errors, ENDPOINT_KEYS,
                       hint="write a URL string or {url: http://host:port, weight: 1}")
    host, port = endpoint.require("url", parse_endpoint_url, ("", 0), URL_HINT)
    weight = endpoint.parse("weight", partial(parse_int, minimum=1, example=2), 1)
    return Endpoint(host=host, port=port, weight=weight) if port else None


def read_upstream_timeouts(timeouts: Section, base: UpstreamTimeouts) -> UpstreamTimeouts:
    """`base` with the keys given in `timeouts` replaced: a route's timeouts
    override its cluster's field by field."""
    overrides = {key: timeouts.parse(key, parse_duration, getattr(base, key))
                 for key in UPSTREAM_TIMEOUT_KEYS if timeouts.has(key)}
    return replace(base, **overrides)
