"""Plugins as a policy of the pipeline: the top-level `plugins` run on every
route, before the route's own; each plugin's hooks go into the slots of
their phases (fastgw/plugins/runtime.py)."""
from __future__ import annotations

from fastgw.pipeline.phases import Phase
from fastgw.plugins.runtime import PluginInstance


class PluginsPolicy:
    name = "plugins"
    phases = (Phase.REQUEST_HEAD, Phase.ACCESS, Phase.RESPONSE_HEAD, Phase.LOG)

    def prepare(self, gateway) -> None:
        # One instance per plugin entry and worker; a global one is shared by all routes.
        gateway.plugin_instances = [PluginInstance(spec, gateway.loop) for spec in gateway.config.plugins]

    def install(self, builder, route) -> None:
        instances = list(builder.gateway.plugin_instances)
        instances += [PluginInstance(spec, builder.gateway.loop) for spec in route.plugins]
        for instance in instances:
            for stage in instance.stages:
                builder.add_stage(stage.phase, stage)
            if instance.response_hook is not None:
                builder.add_response_hook(instance.response_hook)
            if instance.log_hook is not None:
                builder.add_log_hook(instance.log_hook)


POLICY = PluginsPolicy()
