"""Metrics of the traffic policies: retries, outlier ejections, endpoint
health, Redis-backed limits and concurrency limits.

The policies keep plain per-worker counters on their own objects (no metrics
call on their paths). Once a second each worker's `PolicyMetrics.sample`
copies them into its slice of the shared table: counters as the increase
since the last sample (so a restarted worker continues its slot's totals),
gauges as this worker's share, summed over workers by the renderer. The
series are declared from the config (`policy_families`, one of
fastgw/observe/metrics.py's FAMILY_SOURCES), so their labels are bounded:
cluster, route and configured endpoint names only.

    fastgw_retries_total{cluster}                       tries after the first
    fastgw_retry_budget_exhausted_total{cluster}        retries the budget refused
    fastgw_outlier_ejections_total{cluster}             endpoints ejected
    fastgw_endpoint_state{cluster,endpoint,state}       workers that see the endpoint
                                                        healthy / unhealthy / ejected
    fastgw_redis_limit_fallbacks_total{route,result}    Redis failed: admitted_unlimited
                                                        (fail open) or refused (fail closed)
    fastgw_redis_timeouts_total, fastgw_redis_reconnects_total
    fastgw_concurrency_in_flight{scope,limit}            slots taken (host-wide)
    fastgw_concurrency_queued{scope,limit}               requests waiting (queue depth)

Endpoints found by discovery (DNS, endpoints_file) have no series of their
own in fastgw_endpoint_state: the label set is fixed at config load.
"""
from __future__ import annotations

from functools import partial

from fastgw.observe.auth_metrics import auth_samplers
from fastgw.observe.families import Family
from fastgw.policy.concurrency import records as concurrency_records

ENDPOINT_STATES = ("healthy", "unhealthy", "ejected")
FALLBACKS = ("admitted_unlimited", "refused")


def _watched(cluster) -> bool:
    return cluster.health_check is not None or cluster.outlier_detection is not None


def policy_families(config) -> list[Family]:
    clusters = sorted(config.clusters)
    families = [
        Family("fastgw_retries_total", "counter", "Upstream tries after the first, by cluster.",
               labels=("cluster",), series=[(name,) for name in clusters]),
        Family("fastgw_retry_budget_exhausted_total", "counter",
               "Retries not made because the cluster's retry budget was spent.",
               labels=("cluster",), series=[(name,) for name in clusters]),
        Family("fastgw_outlier_ejections_total", "counter", "Endpoints ejected by outlier detection.",
               labels=("cluster",),
               series=[(name,) for name in clusters if config.clusters[name].outlier_detection]),
        Family("fastgw_endpoint_state", "gauge",
               "Workers that see the endpoint in this state (static endpoints of checked clusters).",
               labels=("cluster", "endpoint", "state"),
               series=[(name, ep.address, state) for name in clusters if _watched(config.clusters[name])
                       for ep in config.clusters[name].endpoints for state in ENDPOINT_STATES]),
        Family("fastgw_concurrency_in_flight", "gauge", "Requests holding a slot of the limit (host-wide).",
               labels=("scope", "limit"),
               series=[(kind, name) for kind, name, _ in concurrency_records(config)]),
        Family("fastgw_concurrency_queued", "gauge", "Requests waiting for a slot of the limit (host-wide).",
               labels=("scope", "limit"),
               series=[(kind, name) for kind, name, _ in concurrency_records(config)]),
    ]
    redis_routes = [route.name for route in config.routes
                    if any(limit.scope == "redis" for limit in route.rate_limits)]
    families.append(Family("fastgw_redis_limit_fallbacks_total", "counter",
                           "Requests on Redis-limited routes decided without Redis (it failed or was slow).",
                           labels=("route", "result"),
                           series=[(name, result) for name in redis_routes for result in FALLBACKS]))
    if getattr(config, "redis", None) is not None:
        families += [Family("fastgw_redis_timeouts_total", "counter",
                            "Redis commands answered as unavailable because their deadline passed."),
                     Family("fastgw_redis_reconnects_total", "counter", "Redis connections redialled.")]
    return families


class _Delta:
    """A counter cell fed from a monotonic per-worker count."""
    __slots__ = ("cell", "last", "read")

    def __init__(self, cell, read):
        self.cell, self.read, self.last = cell, read, 0

    def sample(self):
        now = self.read()
        if now > self.last:
            self.cell.inc(now - self.last)
        self.last = now


class PolicyMetrics:
    """One worker's copy of the policies' figures into its metrics slice."""

    def __init__(self, metrics, gateway):
        self.counters: list[_Delta] = []
        self.samplers = []
        config = gateway.config
        for name, runtime in gateway.clusters.items():
            budget = runtime.retry_budget
            self._counter(metrics, "fastgw_retries_total", lambda b=budget: b.sent, cluster=name)
            self._counter(metrics, "fastgw_retry_budget_exhausted_total", lambda b=budget: b.refused,
                          cluster=name)
            if runtime.outliers is not None:
                self._counter(metrics, "fastgw_outlier_ejections_total",
                              lambda o=runtime.outliers: o.ejections_total, cluster=name)
            if _watched(runtime.config):
                self.samplers.append(self._endpoint_states(metrics, name, runtime))
        for index, stage in gateway.redis_stages.items():
            route = next(r.name for r in config.routes if r.index == index)
            self._counter(metrics, "fastgw_redis_limit_fallbacks_total",
                          lambda s=stage: s.admitted_unlimited, route=route, result="admitted_unlimited")
            self._counter(metrics, "fastgw_redis_limit_fallbacks_total",
                          lambda s=stage: s.refused_unavailable, route=route, result="refused")
        if gateway.redis is not None:
            self._counter(metrics, "fastgw_redis_timeouts_total", lambda c=gateway.redis: c.timeouts)
            self._counter(metrics, "fastgw_redis_reconnects_total", lambda c=gateway.redis: c.reconnects)
        seen = set()
        for plan in gateway.plans:
            for stage in (plan.stages or ()) if plan is not None else ():
                if hasattr(stage, "own_counts") and id(stage) not in seen:
                    seen.add(id(stage))
                    self.samplers.append(self._concurrency(metrics, stage))
        self.samplers += auth_samplers(metrics, gateway, partial(self._counter, metrics))

    def _counter(self, metrics, name, read, **labels):
        self.counters.append(_Delta(metrics.counter(name, **labels), read))

    @staticmethod
    def _endpoint_states(metrics, name, runtime):
        cells = {}
        for ep in runtime.config.endpoints:
            for state in ENDPOINT_STATES:
                cells[(ep.address, state)] = metrics.gauge("fastgw_endpoint_state", cluster=name,
                                                           endpoint=ep.address, state=state)

        def sample():
            for pool, state in runtime.endpoint_states():
                for known in ENDPOINT_STATES:
                    cell = cells.get((pool.endpoint.address, known))
                    if cell is not None:
                        cell.set(1 if state == known else 0)
        return sample

    @staticmethod
    def _concurrency(metrics, stage):
        scope, _, quoted = stage.owner.partition(" ")
        labels = {"scope": scope, "limit": quoted.strip("'")}
        in_flight = metrics.gauge("fastgw_concurrency_in_flight", **labels)
        queued = metrics.gauge("fastgw_concurrency_queued", **labels)

        def sample():
            taken, waiting = stage.own_counts()
            in_flight.set(taken)
            queued.set(waiting)
        return sample

    def sample(self):
        for counter in self.counters:
            counter.sample()
        for sampler in self.samplers:
            sampler()
