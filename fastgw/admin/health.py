"""Health and readiness: what /health and /readyz report.

Components: each cluster, and Redis when routes use it (`scope: redis`
limits). A component is a name, a state and a latency.

A cluster's state combines two views of each endpoint:

- the workers' view (`ClusterRuntime.endpoint_states()`, gathered from the
  status board): active health checks or outlier detection may have taken
  it out (`unhealthy`, `ejected`); it is up only if no worker did;
- a TCP connect made now by the answering worker, which is also the latency
  reported. Results are cached for a second, so a load balancer polling
  /health every second costs each endpoint one connect a second at most.

    healthy    every endpoint is up
    degraded   some are
    unhealthy  none is

JWKS (routes with auth.jwt.jwks_url): the answering worker's key set,
healthy, degraded (serving with the last good keys) or unhealthy (never
fetched), never required.

Redis: a PING through the answering worker's own client (its command
timeout applies), `healthy` with its round trip, or `unhealthy`. It is
required when `redis.failure_mode` is `closed` (its routes answer 503 while
Redis is away); with `open` they serve unlimited, so the gateway is degraded.

The gateway as a whole is `unhealthy` (HTTP 503) when it is draining, when a
required component (`admin.required_clusters`, Redis failing closed) is
unhealthy, or when every cluster is; `degraded` (200) when any component is
not healthy.

Readiness (/readyz): ready unless draining, or a required cluster is
unhealthy by the same test (the connect timeout, PROBE_TIMEOUT, is half of
Kubernetes' default probe timeout).
"""
from __future__ import annotations

import asyncio
import time

PROBE_TIMEOUT = 0.5     # a TCP handshake slower than this is a failure
PROBE_CACHE = 1.0       # seconds a probe result is reused
PROBE_CONCURRENCY = 64


class EndpointProber:
    """TCP connect probes with a short cache, in one worker's loop."""

    def __init__(self, loop):
        self.loop = loop
        self.cache: dict[tuple[str, int], tuple[float, float | None]] = {}  # -> (when, latency or None)
        self.limit = asyncio.Semaphore(PROBE_CONCURRENCY)

    def cached(self, host: str, port: int) -> tuple[bool, float | None]:
        """(known, latency): unknown when never probed or too old."""
        entry = self.cache.get((host, port))
        if entry is None or time.monotonic() - entry[0] > PROBE_CACHE:
            return False, None
        return True, entry[1]

    async def probe(self, host: str, port: int) -> float | None:
        """Connect latency in seconds, or None when the endpoint refused or timed out."""
        known, latency = self.cached(host, port)
        if known:
            return latency
        async with self.limit:
            started = time.monotonic()
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
            except (OSError, asyncio.TimeoutError):
                latency = None
            else:
                latency = time.monotonic() - started
                writer.close()
        self.cache[(host, port)] = (time.monotonic(), latency)
        return latency


def _cluster_state(up: int, total: int) -> str:
    if total and up == total:
        return "healthy"
    return "degraded" if up else "unhealthy"


async def health(config, clusters: list[dict], prober: EndpointProber, draining: bool,
                 redis_client=None, key_sets=()) -> tuple[int, dict]:
    """(HTTP status, body). `clusters` is snapshot.aggregate()'s output;
    `redis_client` the worker's RedisClient, None when no route uses Redis;
    `key_sets` the answering worker's JWKS key sets (fastgw/auth/jwks.py)."""
    started = time.monotonic()
    checks = [_cluster_component(config, c, prober) for c in clusters]
    if redis_client is not None and config.redis is not None:
        checks.append(_redis_component(config, redis_client))
    components = await asyncio.gather(*checks)
    components += [_jwks_component(keys) for keys in key_sets]
    clusters_only = [c for c in components if c["kind"] == "cluster"]
    failing_required = [c for c in components if c["state"] == "unhealthy" and c["required"]]
    all_down = bool(clusters_only) and all(c["state"] == "unhealthy" for c in clusters_only)
    if draining or failing_required or all_down:
        status = "unhealthy"
    elif any(c["state"] != "healthy" for c in components):
        status = "degraded"
    else:
        status = "healthy"
    body = {
        "status": status,
        "draining": draining,
        "latency_ms": round((time.monotonic() - started) * 1000, 3),
        "components": components,
    }
    return (503 if status == "unhealthy" else 200), body


def _jwks_component(keys) -> dict:
    """A JWKS URL as the answering worker sees it: healthy (last fetch
    good), degraded (the last fetch failed: the last good keys are in use),
    unhealthy (never fetched: its routes answer 503). Never required: the
    routes without JWT serve either way."""
    state = keys.state()
    component = {
        "kind": "jwks",
        "name": state["url"],
        "state": "healthy" if not state["stale"] else "degraded" if state["keys"] else "unhealthy",
        "required": False,
        "keys": state["keys"],
        "latency_ms": None,
    }
    if state["last_error"]:
        component["error"] = state["last_error"]
    return component


async def _redis_component(config, client) -> dict:
    started = time.monotonic()
    error = None
    try:
        reply = await asyncio.wait_for(client.execute("PING"), PROBE_TIMEOUT)
        if reply not in (b"PONG", "PONG"):
            error = f"unexpected reply to PING: {reply!r}"
    except Exception as failure:  # RedisUnavailable, a ReplyError (NOAUTH...), a timeout
        error = str(failure) or type(failure).__name__
    latency = time.monotonic() - started
    component = {
        "kind": "redis",
        "name": "redis",
        "address": config.redis.address,
        "state": "unhealthy" if error else "healthy",
        "required": config.redis.failure_mode == "closed",
        "latency_ms": None if error else round(latency * 1000, 3),
    }
    if error:
        component["error"] = error
    return component


async def _cluster_component(config, cluster: dict, prober: EndpointProber) -> dict:
    endpoints = cluster["endpoints"]
    latencies = await asyncio.gather(*(prober.probe(*_split(e["address"])) for e in endpoints))
    up = [lat for e, lat in zip(endpoints, latencies) if lat is not None and e["state"] in ("healthy", "unknown")]
    # (unknown: no worker has published yet; the connect decides.)
    return {
        "kind": "cluster",
        "name": cluster["name"],
        "state": _cluster_state(len(up), len(endpoints)),
        "required": cluster["name"] in config.admin.required_clusters,
        "endpoints_up": len(up),
        "endpoints_total": len(endpoints),
        # The slowest connect among the endpoints that answered.
        "latency_ms": round(max(up) * 1000, 3) if up else None,
    }


async def readiness(config, clusters: list[dict], prober: EndpointProber, draining: bool) -> list[str]:
    """The reasons the gateway is not ready (empty: ready)."""
    reasons = ["draining"] if draining else []
    by_name = {c["name"]: c for c in clusters}
    for name in config.admin.required_clusters:
        component = await _cluster_component(config, by_name[name], prober)
        if component["state"] == "unhealthy":
            reasons.append(f"required cluster '{name}' has no healthy endpoint")
    return reasons


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
