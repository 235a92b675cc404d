"""What a worker publishes about its clusters, and how the admin API adds
the workers' snapshots up.

A snapshot is small plain JSON (per cluster: circuit state; per endpoint:
state and pool counters), written to the worker's status-board slot once a
second and right before that worker answers an admin request, so the figures
are at most a second old for the other workers.
"""
from __future__ import annotations

from collections import Counter

# Worst first: an endpoint any worker sees as unhealthy is listed as such.
# (ClusterRuntime.endpoint_states: healthy, unhealthy by health checks,
# ejected by outlier detection.)
STATE_RANK = {"unhealthy": 0, "ejected": 1, "healthy": 2}
POOL_FIELDS = ("idle", "active", "created", "open")


def worker_snapshot(gateway) -> dict:
    clusters = {}
    for name, runtime in gateway.clusters.items():
        breaker = runtime.breaker
        clusters[name] = {
            "circuit": breaker.state if breaker is not None else None,
            "endpoints": [
                {"address": pool.endpoint.address, "weight": pool.endpoint.weight, "state": state,
                 "idle": len(pool.idle),
                 "active": pool.active, "created": pool.created, "open": pool.open}
                for pool, state in runtime.endpoint_states()
            ],
        }
    return {"connections": len(gateway.connections), "clusters": clusters}


def worst(states) -> str:
    return min(states, key=lambda state: STATE_RANK.get(state, -1))


def aggregate(config, snapshots: list[dict]) -> list[dict]:
    """Per cluster of `config`: endpoints with pool counters summed over the
    workers, their state (the worst any worker reports, with the count per
    state) and the circuit state count per worker. Endpoints are matched by
    address, in the order the workers list them: discovery (dns,
    endpoints_file) may have changed them since the config was read."""
    clusters = []
    for name, cluster in config.clusters.items():
        views = [s["clusters"][name] for s in snapshots if name in s.get("clusters", {})]
        seen: dict[str, list[dict]] = {}
        for view in views:
            for endpoint in view["endpoints"]:
                seen.setdefault(endpoint["address"], []).append(endpoint)
        if not views:  # no worker has published yet: the configured endpoints, state unknown
            for endpoint in cluster.endpoints:
                seen[endpoint.address] = []
        weights = {endpoint.address: endpoint.weight for endpoint in cluster.endpoints}
        endpoints = []
        for address, reports in seen.items():
            states = Counter(e["state"] for e in reports)
            endpoints.append({
                "address": address,
                "weight": reports[0].get("weight", 1) if reports else weights.get(address, 1),
                "state": worst(states) if states else "unknown",
                "states": dict(states),
                "pool": {f: sum(e[f] for e in reports) for f in POOL_FIELDS},
            })
        circuits = Counter(v["circuit"] for v in views if v["circuit"] is not None)
        clusters.append({
            "name": name,
            "lb": cluster.lb,
            "hash_on": cluster.hash_on,
            "circuit_breaker": dict(circuits) if cluster.circuit_breaker is not None else None,
            "endpoints": endpoints,
        })
    return clusters
