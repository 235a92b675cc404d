"""The per-worker runtime built from a `Config`: compiled routes, one plan per
route, cluster pools, limits, and the set of open client connections.

Everything a request needs is looked up here once per request (route match,
then `plans[route.index]`); nothing is rebuilt per request.
"""
from __future__ import annotations

import asyncio
import logging

from fastgw._native.deadlines import Deadlines
from fastgw._native.headers import RequestIds
from fastgw._native.proxy import GatewayCore
from fastgw.config.model import Config
from fastgw.observe.access_log import make_access_log
from fastgw.observe.otel import Observers, make_span_export
from fastgw.observe.policy_metrics import PolicyMetrics
from fastgw.pipeline.plan import build_plans
from fastgw.pipeline.registry import POLICIES
from fastgw.proxy.routing import RouteTable
from fastgw.upstream.pool import ClusterRuntime

log = logging.getLogger("fastgw")

# How often idle upstream connections are checked against their idle timeout.
POOL_SWEEP_INTERVAL = 1.0
# Drain: how often open connections are looked at, and how long one must have
# been idle to be closed (a client may be sending on a just-idle one).
DRAIN_TICK = 0.1
DRAIN_IDLE_GRACE = 1.0


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
        self.limit_table = limit_table
        self.process_metrics = metrics
        # Every route's plan, from the registered policies (fastgw/pipeline/).
        self.plans = build_plans(self, POLICIES)
        self.request_ids = RequestIds()
        self.deadlines = Deadlines(loop)
        self.connections = set()
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
        for keys in self.auth_key_sets.values():
            keys.close()  # JWKS refresh timers
        if self.redis is not None:
            self.redis.close()
        for cluster in self.clusters.values():
            cluster.close()  # health checks, discovery watchers, timers
            for pool in cluster.pools:
                pool.close_idle()
        if self.access_log is not None:
            self.access_log.close()  # flush what is buffered
