"""Reader for `plugins` lists (top level: every route; on a route: that route).

    plugins:
      - use: my_package.auth:HeaderCheck      # module:Class, imported at load
        config: {header: x-tenant}            # handed to the class, which validates it
        budget: 5ms                           # slower calls are logged (default 50ms)
        timeout: 2s                           # an async hook still running fails the request (default 10s)

The class is imported and instantiated here, at config load, so `fastgw
check` reports an import error or a bad plugin config with its key path; the
workers instantiate it again after the fork (fastgw/plugins/runtime.py).
"""
from __future__ import annotations

import os

from fastgw.config.errors import Invalid, item
from fastgw.config.model import PluginSpec
from fastgw.config.reader import Section
from fastgw.config.schema import parse_duration

PLUGIN_KEYS = ("use", "config", "budget", "timeout", "name")
PLUGINS_HINT = "write a list, e.g. plugins: [{use: my_package.module:MyPlugin, config: {...}}]"
USE_HINT = "name the class as 'package.module:ClassName'; the module must be importable by the gateway's Python"
DEFAULT_BUDGET = 0.05
DEFAULT_TIMEOUT = 10.0


def read_plugins(owner: Section) -> tuple[PluginSpec, ...]:
    """`owner.plugins`, each imported and checked; errors are recorded, not raised."""
    if not owner.has("plugins"):
        return ()
    specs = []
    for index, raw in enumerate(owner.list("plugins", PLUGINS_HINT)):
        section = Section(raw, item(owner.path("plugins"), index), owner.errors, PLUGIN_KEYS,
                          hint="give each plugin as a mapping with use: and config:")
        spec = _read_plugin(section)
        if spec is not None:
            specs.append(spec)
    return tuple(specs)


def _read_plugin(plugin: Section) -> PluginSpec | None:
    # Imported here: the plugin loader imports the native layer, which the
    # rest of the config package doesn't need.
    from fastgw.plugins.loader import PluginLoadError, check_plugin_config, load_plugin_class

    if not plugin.has("use"):
        plugin.errors.add(plugin.path("use"), "missing", USE_HINT)
        return None
    use = plugin.get("use")
    if not isinstance(use, str) or use.count(":") != 1 or not all(use.split(":")):
        plugin.errors.add(plugin.path("use"), f"expected 'package.module:ClassName', got {use!r}", USE_HINT)
        return None
    config = plugin.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        plugin.errors.add(plugin.path("config"), f"expected a mapping, got {type(config).__name__}",
                          "give the plugin's settings as a mapping (or leave config out)")
        return None
    budget = plugin.parse("budget", parse_duration, DEFAULT_BUDGET)
    timeout = plugin.parse("timeout", parse_duration, DEFAULT_TIMEOUT)
    name = plugin.get("name")
    if name is not None and not isinstance(name, str):
        plugin.errors.add(plugin.path("name"), "expected a string", "name the plugin for logs and metrics")
        name = None
    try:
        config_dir = None if plugin.errors.source.startswith("<") else \
            os.path.dirname(os.path.abspath(plugin.errors.source))
        cls = load_plugin_class(use, config_dir)
    except PluginLoadError as err:
        plugin.errors.add(plugin.path("use"), str(err), err.hint)
        return None
    try:
        check_plugin_config(cls, config)
    except Invalid as err:
        plugin.errors.add(plugin.path("config") + getattr(err, "keypath_suffix", ""), err.problem, err.hint)
        return None
    return PluginSpec(use=use, name=name or use.rpartition(":")[2], config=config, budget=budget,
                      timeout=timeout, factory=cls)
