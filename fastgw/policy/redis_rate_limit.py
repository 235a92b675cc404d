"""`scope: redis` rate limits as a policy of the pipeline: a stage of phase
admission, after the local limits (a request a local limit refuses costs
Redis nothing). The stage itself is fastgw/policy/redis_limit.py, imported
only when a route uses Redis: hiredis is an optional dependency
(fastgw[redis])."""
from __future__ import annotations

from fastgw.pipeline.phases import Phase


def has_redis_limits(route) -> bool:
    return any(limit.scope == "redis" for limit in route.rate_limits)


class RedisRateLimitPolicy:
    name = "rate_limit_redis"
    phases = (Phase.ADMISSION,)

    def prepare(self, gateway) -> None:
        gateway.redis, gateway.redis_stages = None, {}
        if any(has_redis_limits(route) for route in gateway.config.routes):
            from fastgw.policy.redis_limit import build_stages
            gateway.redis, gateway.redis_stages = build_stages(gateway.config, gateway.loop)

    def install(self, builder, route) -> None:
        stage = builder.gateway.redis_stages.get(route.index)
        if stage is not None:
            builder.add_stage(Phase.ADMISSION, stage)


POLICY = RedisRateLimitPolicy()
