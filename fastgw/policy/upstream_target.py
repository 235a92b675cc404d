"""The route's upstream: cluster, timeouts, Host for HTTP/1.0 requests, and
the path rewrite (strip_prefix / rewrite_path). Every route has these: this
policy fills the plan's native slots (phases upstream_select and
upstream_request); it has no Python hook."""
from __future__ import annotations

import functools

from fastgw.pipeline.phases import Phase


class UpstreamTargetPolicy:
    name = "upstream_target"
    phases = (Phase.UPSTREAM_SELECT, Phase.UPSTREAM_REQUEST)

    def prepare(self, gateway) -> None:
        pass

    def install(self, builder, route) -> None:
        plan, gateway = builder.native, builder.gateway
        cluster = gateway.clusters[route.cluster]
        timeouts = gateway.config.route_timeouts(route)
        plan.cluster = cluster
        plan.try_timeout = timeouts.response_header
        if route.retries.per_try_timeout is not None:
            plan.try_timeout = min(route.retries.per_try_timeout, timeouts.response_header)
        plan.idle_timeout = timeouts.idle
        plan.websocket_idle_timeout = timeouts.websocket_idle
        if route.strip_prefix is not None or route.rewrite_path is not None:
            plan.rewrite = functools.partial(gateway.routes.upstream_path, route)
        # Host for requests that came without one (HTTP/1.0): the first endpoint (or the DNS name).
        plan.default_host = cluster.default_host
        metrics = gateway.process_metrics
        plan.index = metrics.route_block(route.name) if metrics is not None else 0


POLICY = UpstreamTargetPolicy()
