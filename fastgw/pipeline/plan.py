"""A route's plan, built once per config and worker from the registered
policies (registry.py): each policy's `install(builder, route)` puts its
hooks into the phase slots (phases.py) or fills a native slot. The result is
the native `RoutePlan` the exchange reads per request; a slot nobody filled
stays None and costs the exchange one pointer test.
"""
from __future__ import annotations

from fastgw._native.proxy import RoutePlan
from fastgw.pipeline.phases import Phase


class PlanBuilder:
    """What a policy's `install` gets: the route's native plan to fill and
    the slots for Python hooks."""

    def __init__(self, route, gateway) -> None:
        self.route = route
        self.gateway = gateway        # the worker's runtime: loop, clusters, tables, metrics
        self.native = RoutePlan()
        self.native.route = route
        self._stages: list[tuple[Phase, object]] = []
        self._response_hooks: list = []
        self._log_hooks: list = []

    def add_stage(self, phase: Phase, stage) -> None:
        """A stage of `phase` (REQUEST_HEAD, ACCESS or ADMISSION), after the
        ones already added to it."""
        if phase not in (Phase.REQUEST_HEAD, Phase.ACCESS, Phase.ADMISSION):
            raise ValueError(f"stages run in request_head, access or admission, not {phase.name}")
        self._stages.append((phase, stage))

    def add_response_hook(self, hook) -> None:
        self._response_hooks.append(hook)

    def add_log_hook(self, hook) -> None:
        self._log_hooks.append(hook)

    def finish(self) -> RoutePlan:
        plan = self.native
        # Phase order first, then the order policies were registered in.
        ordered = sorted(enumerate(self._stages), key=lambda item: (item[1][0], item[0]))
        plan.stages = tuple(stage for _, (_, stage) in ordered) or None
        plan.response_hooks = tuple(self._response_hooks) or None
        plan.log_hooks = tuple(self._log_hooks) or None
        return plan


def build_plans(gateway, policies) -> list:
    """route.index -> RoutePlan for every route of the gateway's config."""
    config = gateway.config
    for policy in policies:
        policy.prepare(gateway)
    plans = [None] * (max((r.index for r in config.routes), default=-1) + 1)
    for route in config.routes:
        builder = PlanBuilder(route, gateway)
        for policy in policies:
            policy.install(builder, route)
        plans[route.index] = builder.finish()
    return plans

