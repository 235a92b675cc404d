"""Import a plugin class named in the config and check it, at config load.

Everything that can go wrong here becomes a config error with the key path
(fastgw/config/plugin_section.py records it): the module is missing or fails
to import, the class is missing or isn't a class, it has no hook, a hook is
not callable, its constructor rejects the config.
"""
from __future__ import annotations

import importlib
import inspect
import sys

from fastgw.config.errors import Invalid
from fastgw.plugins.api import HOOKS, PluginConfigError

# Hooks that run while the upstream's bytes are flowing can't wait on I/O.
SYNC_ONLY = ("on_response_head",)


class PluginLoadError(Exception):
    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(problem)
        self.hint = hint


class PluginConfigInvalid(Invalid):
    def __init__(self, problem: str, hint: str, keypath_suffix: str = "") -> None:
        super().__init__(problem, hint)
        self.keypath_suffix = keypath_suffix


def load_plugin_class(use: str, config_dir: str | None = None) -> type:
    """`config_dir` (the config file's directory) is searched after
    PYTHONPATH, so a plugin kept beside its config needs no environment; the
    workers, forked from the process that loaded the config, inherit it."""
    module_name, _, class_name = use.partition(":")
    if config_dir is not None and config_dir not in sys.path:
        sys.path.append(config_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise PluginLoadError(f"no module named {err.name!r}",
                                  "install the plugin's package, put it beside the config file, or put "
                                  f"its directory on PYTHONPATH (the gateway runs {sys.executable})") from None
        raise PluginLoadError(f"importing {module_name!r} failed: {err}",
                              "the plugin module imports something that is not installed") from None
    except Exception as err:  # the module itself raised while importing
        raise PluginLoadError(f"importing {module_name!r} raised {type(err).__name__}: {err}",
                              "fix the plugin module; `python -c 'import " + module_name + "'` shows the traceback"
                              ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        public = sorted(n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_"))
        raise PluginLoadError(f"module {module_name!r} has no {class_name!r}",
                              f"classes in it: {', '.join(public) or 'none'}")
    if not isinstance(cls, type):
        raise PluginLoadError(f"{use!r} is a {type(cls).__name__}, not a class", "name the plugin's class")
    hooks = [h for h in HOOKS if getattr(cls, h, None) is not None]
    if not hooks:
        raise PluginLoadError(f"{use!r} defines none of the hooks {', '.join(HOOKS)}",
                              "define at least one hook method (see docs/plugins.md)")
    for hook in hooks:
        fn = getattr(cls, hook)
        if not callable(fn):
            raise PluginLoadError(f"{use}.{hook} is not callable", "define it as a method")
        if hook in SYNC_ONLY and inspect.iscoroutinefunction(fn):
            raise PluginLoadError(f"{use}.{hook} is async; {hook} must be a plain method",
                                  "the response is already streaming when it runs: do I/O in on_access")
    return cls


def check_plugin_config(cls: type, config: dict) -> object:
    """Instantiate once with `config`, as the workers will: a rejected config
    is a config error, not a failing worker."""
    try:
        return cls(config)
    except PluginConfigError as err:
        suffix = "".join(f".{part}" for part in err.key.split(".")) if err.key else ""
        raise PluginConfigInvalid(err.problem, err.hint, suffix) from None
    except Exception as err:
        raise PluginConfigInvalid(f"the plugin rejected its config: {type(err).__name__}: {err}",
                                  "see the plugin's documentation for its config keys") from None
