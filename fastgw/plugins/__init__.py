"""Plugins in plain Python: what a plugin author imports.

    from fastgw.plugins import Plugin, PluginConfigError

See docs/plugins.md for the contract (hooks, phases, what a hook may read and
change, errors, time budgets) and examples/plugins/ for a working plugin.
"""
from fastgw.plugins.api import Plugin, PluginConfigError, Request, Response

__all__ = ["Plugin", "PluginConfigError", "Request", "Response"]
