"""Entry points: a YAML file or command-line flags -> a validated `Config`.

Precedence, lowest first: built-in defaults, the file, environment variables
(FASTGW_LISTEN, FASTGW_WORKERS), command-line flags (applied by the CLI).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace

import yaml

from fastgw.config.admin_section import apply_admin_env, read_admin
from fastgw.config.errors import ConfigError, ErrorList
from fastgw.config.model import AdminSettings, Cluster, Config, Endpoint, Listener, Route, RouteMatch, ServerSettings, UpstreamTimeouts
from fastgw.config.observe_section import read_observe
from fastgw.config.plugin_section import read_plugins
from fastgw.config.reader import Section, parse_or_record
from fastgw.config.redis_section import check_limit_scopes, read_redis
from fastgw.config.route_section import read_routes
from fastgw.config.schema import describe, parse_address, parse_duration, parse_endpoint_url, parse_workers
from fastgw.config.sections import SERVER_KEY_HOMES, TOP_LEVEL_KEYS, read_clusters, read_listeners, read_server

COMMAND_LINE = "<command line>"
DEFAULT_LISTEN = "127.0.0.1:8080"
EXAMPLE_HINT = "start from examples/gateway.yaml"


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and return the config at `path`; raise ConfigError listing every problem.

    `env` defaults to os.environ; tests pass their own.
    """
    source = os.fspath(path)
    errors = ErrorList(source)
    document = _read_yaml(source, errors)
    return build(document, errors, os.environ if env is None else env)


def build(document: object, errors: ErrorList, env: Mapping[str, str]) -> Config:
    """Validate an already-parsed YAML document (errors may hold YAML-level problems)."""
    if not isinstance(document, dict):
        problem = "the file is empty" if document is None else f"expected a mapping at the top, got {describe(document)}"
        errors.add("(top level)", problem, f"a config is a mapping with {', '.join(TOP_LEVEL_KEYS)}; {EXAMPLE_HINT}")
        raise ConfigError(errors.lines)
    top = Section(document, "", errors, TOP_LEVEL_KEYS, misplaced=SERVER_KEY_HOMES)
    # Sections are read in the example file's order, so errors come out roughly
    # top to bottom, the order a user fixes them in.
    listeners = read_listeners(top)
    server = read_server(top)
    redis = read_redis(top)
    clusters = read_clusters(top)
    routes = read_routes(top, clusters)
    check_limit_scopes(top, redis)
    observe = read_observe(top)
    admin = read_admin(top, listeners, clusters, env)
    plugins = read_plugins(top)
    config = Config(source=errors.source, listeners=listeners, server=server, clusters=clusters, routes=routes,
                    redis=redis, observe=observe, admin=admin, plugins=plugins)
    config = _apply_env(config, env, errors)
    errors.raise_if_any()
    return config


# --- reading YAML ----------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """safe_load, plus a record of duplicate mapping keys.

    Plain YAML keeps the last of two equal keys without a word, so a second
    `users:` cluster would silently replace the first.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[tuple[str, int, int]] = []  # (key, line, first line)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            # `<<` merges are meant to be overridden by the keys next to them.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_line:
                self.duplicate_keys.append((key_node.value, line, first_line[key_node.value]))
            first_line.setdefault(key_node.value, line)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(source: str, errors: ErrorList) -> object:
    try:
        with open(source, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise ConfigError([f"{source}: file not found (check the path; {EXAMPLE_HINT})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{source}: not a UTF-8 text file (a config is YAML text; {EXAMPLE_HINT})"]) from None
    except OSError as error:
        raise ConfigError([f"{source}: cannot read: {error.strerror} (check the path and its permissions)"]) from None

    loader = _StrictLoader(text)
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as error:
        raise ConfigError([_describe_yaml_error(source, error)]) from None
    finally:
        loader.dispose()
    for key, line, first in loader.duplicate_keys:
        errors.add(f"line {line}", f"duplicate key {key!r}, first at line {first}",
                   "each key may appear once in a mapping; YAML would silently keep only the last")
    return document


def _describe_yaml_error(source: str, error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(unknown position)"
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    detail = f"{problem}, {context}" if context else problem
    return (f"{source}: {where}: invalid YAML: {detail} "
            "(check the indentation there, and quote values that contain ': ', '#', '{' or '[')")


# --- environment -----------------------------------------------------------

def _apply_env(config: Config, env: Mapping[str, str], errors: ErrorList) -> Config:
    """FASTGW_LISTEN replaces the first listener's address, FASTGW_WORKERS the
    worker count, FASTGW_ADMIN the admin address (or `off`).

    An empty variable counts as unset: deployment templates often render
    `FASTGW_WORKERS=` when no value was chosen.
    """
    listen = env.get("FASTGW_LISTEN")
    if listen and config.listeners:
        host, port = parse_or_record(errors, "env FASTGW_LISTEN", parse_address, listen, ("", 0))
        if port:
            first = replace(config.listeners[0], host=host, port=port)
            config = replace(config, listeners=(first, *config.listeners[1:]))
    config = apply_admin_env(config, env, errors)
    workers = env.get("FASTGW_WORKERS")
    if workers:
        count = parse_or_record(errors, "env FASTGW_WORKERS", parse_workers, workers, None)
        if count is not None:
            config = replace(config, server=replace(config.server, workers=count))
    return config


# --- command line ----------------------------------------------------------

def from_command_line(
    listen: str | None,
    upstream: str,
    workers: int | str | None = None,
    upstream_timeout: float | str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """The config for `fastgw run --upstream URL`: everything goes to one upstream.

    A flag left out (None) falls back to FASTGW_LISTEN / FASTGW_WORKERS, then to
    the defaults, so containers can be configured the same way in both modes.
    """
    env = os.environ if env is None else env
    errors = ErrorList(COMMAND_LINE)
    listen_key, listen_text = _flag_or_env("--listen", listen, "FASTGW_LISTEN", env, DEFAULT_LISTEN)
    host, port = parse_or_record(errors, listen_key, parse_address, listen_text, ("", 0))
    upstream_host, upstream_port = parse_or_record(errors, "--upstream", parse_endpoint_url, upstream, ("", 0))
    workers_key, workers_value = _flag_or_env("--workers", workers, "FASTGW_WORKERS", env, 0)
    worker_count = parse_or_record(errors, workers_key, parse_workers, workers_value, 0)
    timeouts = UpstreamTimeouts()
    if upstream_timeout is not None:
        response_header = parse_or_record(errors, "--upstream-timeout", parse_duration, upstream_timeout, 0.0)
        timeouts = replace(timeouts, response_header=response_header)
    errors.raise_if_any()

    cluster = Cluster(name="default", endpoints=(Endpoint(host=upstream_host, port=upstream_port),), timeouts=timeouts)
    return Config(
        source=COMMAND_LINE,
        listeners=(Listener(name="default", host=host, port=port),),
        server=ServerSettings(workers=worker_count),
        clusters={"default": cluster},
        routes=(Route(name="default", index=0, match=RouteMatch(prefix="/"), cluster="default"),),
        # Quick-start mode: no admin listener (and no file to reload).
        admin=AdminSettings(enabled=False),
    )


def _flag_or_env(flag: str, value: object, variable: str, env: Mapping[str, str], default: object) -> tuple[str, object]:
    """(the name to blame in errors, the value) for a flag with an env fallback."""
    if value is not None:
        return flag, value
    if env.get(variable):
        return f"env {variable}", env[variable]
    return flag, default


def with_workers(config: Config, workers: int | str) -> Config:
    """`config` with the worker count from `--workers`, which beats the file and env."""
    errors = ErrorList(COMMAND_LINE)
    count = parse_or_record(errors, "--workers", parse_workers, workers, 0)
    errors.raise_if_any()
    return replace(config, server=replace(config.server, workers=count))
