"""The per-worker runtime built from a `Config`: compiled routes, one plan per
route, cluster pools, limits, and the set of open client connections.

Everything a request needs is looked up here once per request (route match,
then `plans[route.index]`); nothing is rebuilt per request.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import sys

from fastgw._native.deadlines import Deadlines
from fastgw._native.headers import HeaderRewrite, RequestIds
from fastgw._native.proxy import GatewayCore, RoutePlan
from fastgw.config.model import Config, Route
from fastgw.observe.access_log import make_access_log
from fastgw.observe.otel import Observers, make_span_export
from fastgw.observe.policy_metrics import PolicyMetrics
from fastgw.policy.concurrency import build_stages as build_concurrency_stages
from fastgw.policy.ratelimit import build_limiters
from fastgw.policy.retry import make_retry_rule
from fastgw.proxy.routing import RouteTable
from fastgw.upstream.pool import ClusterRuntime

log = logging.getLogger("fastgw")

# How often idle upstream connections are checked against their idle timeout.
POOL_SWEEP_INTERVAL = 1.0
# Drain: how often open connections are looked at, and how long one must have
# been idle to be closed (a client may be sending on a just-idle one).
DRAIN_TICK = 0.1
DRAIN_IDLE_GRACE = 1.0


def make_route_plan(route: Route, cluster: ClusterRuntime, timeouts, table: RouteTable) -> RoutePlan:
    """What a matched route does, compiled once: cluster, header programs,
    timeouts and the upstream path rewrite (None when the path is unchanged)."""
    plan = RoutePlan()
    plan.route = route
    plan.cluster = cluster
    plan.retry = make_retry_rule(route.retries)
    plan.try_timeout = timeouts.response_header
    if route.retries.per_try_timeout is not None:
        plan.try_timeout = min(route.retries.per_try_timeout, timeouts.response_header)
    plan.idle_timeout = timeouts.idle
    plan.connect_timeout = timeouts.connect
    plan.websocket_idle_timeout = timeouts.websocket_idle
    req, resp = route.request_headers, route.response_headers
    plan.request_rewrite = HeaderRewrite(add=req.add, set=req.set, remove=req.remove)
    plan.response_rewrite = HeaderRewrite(add=resp.add, set=resp.set, remove=resp.remove)
    if route.strip_prefix is not None or route.rewrite_path is not None:
        plan.rewrite = functools.partial(table.upstream_path, route)
    # Host for requests that came without one (HTTP/1.0): the first endpoint (or the DNS name).
    plan.default_host = cluster.default_host
    return plan


class Gateway(GatewayCore):
    """The worker's runtime. The typed fields read per request are declared in
    the native `GatewayCore`; the rest is plain Python."""

    def __init__(self, config: Config, loop, limit_table=None, metrics=None):
        """`metrics`: this process's ProcessMetrics (fastgw/observe/metrics.py), or None."""
        self.config = config
        self.loop = loop
        self.settings = settings = config.server
        limits = settings.limits
        self.max_body_bytes = limits.max_body_bytes
        self.max_uri_bytes = limits.max_uri_bytes
        self.max_header_bytes = limits.max_header_bytes
        self.max_header_count = limits.max_header_count
        # Request line + headers + CRLFs: the bound on a whole request head.
        self.max_head_bytes = limits.max_header_bytes + limits.max_uri_bytes + 1024
        self.client_header_timeout = settings.client_header_timeout
        self.keepalive_timeout = settings.keepalive_timeout
        self.routes = RouteTable(config)
        self.route_match = self.routes.match
        self.allowed_methods = self.routes.allowed_methods
        self.clusters = {name: ClusterRuntime(loop, c, settings.trusted_proxies) for name, c in config.clusters.items()}
        if metrics is not None:
            left_out = metrics.adopt(config)  # a no-op unless this is a reloaded config
            if left_out:
                log.warning("metrics: no room left in the shared table for %s; restart to count them",
                            ", ".join(left_out))
        limiters = build_limiters(config, limit_table)
        self.redis, self.redis_stages = None, {}   # Redis-scoped limits: client, route.index -> stage
        if any(limit.scope == "redis" for route in config.routes for limit in route.rate_limits):
            from fastgw.policy.redis_limit import build_stages  # here: hiredis is optional (fastgw[redis])
            self.redis, self.redis_stages = build_stages(config, loop)
        concurrency_stages = build_concurrency_stages(config, loop)  # route.index -> stages; {} when none
        plans = [None] * (max((r.index for r in config.routes), default=-1) + 1)
        for route in config.routes:
            plan = make_route_plan(route, self.clusters[route.cluster],
                                   config.route_timeouts(route), self.routes)
            plan.limiter = limiters.get(route.index)
            # Redis limits before concurrency slots: a request waiting on Redis
            # must not hold a slot meanwhile (route slot before cluster slot).
            stages = []
            if route.index in self.redis_stages:
                stages.append(self.redis_stages[route.index])
            stages.extend(concurrency_stages.get(route.index) or ())
            plan.admission = tuple(stages) or None
            plan.index = metrics.route_block(route.name) if metrics is not None else 0
            plans[route.index] = plan
        self.plans = plans
        self.request_ids = RequestIds()
        self.deadlines = Deadlines(loop)
        self.connections = set()
        self.process_metrics = metrics
        self.metrics = metrics.recorder if metrics is not None else None
        if metrics is not None:
            for name, cluster in self.clusters.items():
                for pool in cluster.pools:
                    pool.metrics_index = metrics.endpoint_index(name, pool.endpoint.address)
        self.policy_metrics = PolicyMetrics(metrics, self) if metrics is not None else None
        # What sees each finished exchange: the access log, span export, both or neither.
        observers = [o for o in (make_access_log(config.observe.access_log, loop),
                                 make_span_export(config.observe.tracing.export)) if o is not None]
        self.access_log = observers[0] if len(observers) == 1 else Observers(observers) if observers else None
        self.trace = config.observe.tracing.propagate
        self.draining = False
        self.drain_deadline = None
        self._sweeper = loop.call_later(POOL_SWEEP_INTERVAL, self._sweep_pools)

    def _sweep_pools(self):
        now = self.loop.time()
        for cluster in self.clusters.values():
            for pool in cluster.pools:
                pool.sweep(now)
        if self.process_metrics is not None:
            self.process_metrics.sample(self.clusters)  # pool and breaker gauges
            self.policy_metrics.sample()  # retries, ejections, health, Redis, concurrency
        self._sweeper = self.loop.call_later(POOL_SWEEP_INTERVAL, self._sweep_pools)

    # -- accounting the connections use ---------------------------------------
    def connection_closed(self):
        pass  # drain() polls the open connections

    def log_internal_error(self, where, error):
        log.error("internal error in %s: %r", where, error, exc_info=error)

    # -- drain ------------------------------------------------------------------
    async def drain(self, deadline: float):
        """Stop taking requests: every response says `Connection: close`; a
        connection idle for DRAIN_IDLE_GRACE is closed (closing one that has
        just gone idle would race a request the client is sending on it);
        whatever is left at the deadline is closed. `drain_deadline` may be
        moved closer while this runs (SIGTERM during a reload's retirement)."""
        self.draining = True
        if self.drain_deadline is None or deadline < self.drain_deadline:
            self.drain_deadline = deadline
        while self.connections:
            now = self.loop.time()
            if now >= self.drain_deadline:
                log.warning("drain deadline passed with %d connections open; closing them",
                            len(self.connections))
                for conn in list(self.connections):
                    conn.transport.abort()
                break
            idle_since = now - DRAIN_IDLE_GRACE
            for conn in list(self.connections):
                if conn.last_activity <= idle_since:
                    conn.close_if_idle()
            await asyncio.sleep(min(DRAIN_TICK, max(0.0, self.drain_deadline - now)))
        self._sweeper.cancel()
        self.deadlines.close()
        for stage in self.redis_stages.values():
            stage.close()
        if self.redis is not None:
            self.redis.close()
        for cluster in self.clusters.values():
            cluster.close()  # health checks, discovery watchers, timers
            for pool in cluster.pools:
                pool.close_idle()
        if self.access_log is not None:
            self.access_log.close()  # flush what is buffered


def setup_logging():
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s fastgw[%(process)d] %(levelname)s %(message)s")
