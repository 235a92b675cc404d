"""Entry points: a YAML file or command-line flags -> a validated `Config`.

Precedence, lowest first: built-in defaults, the file, environment variables
(FASTGW_LISTEN, FASTGW_WORKERS), command-line flags (applied by the CLI).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace

from fastgw.config import yaml_text
from fastgw.config.admin_section import apply_admin_env, read_admin
from fastgw.config.auth_section import apply_edge_defaults, read_auth, redact_credentials
from fastgw.config.edge_section import read_ip_filter, read_security_headers
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


def from_document(document: object, source: str, env: Mapping[str, str] | None = None,
                  directory: str | None = None) -> Config:
    """Validate a document that came from elsewhere than a file (the admin
    API's PUT /config); errors name `source`, relative paths are relative to
    `directory` (else to source's directory)."""
    return build(document, ErrorList(source, directory), os.environ if env is None else env)


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
    redis = read_redis(top, env)
    clusters = read_clusters(top)
    routes = read_routes(top, clusters)
    check_limit_scopes(top, redis)
    observe = read_observe(top)
    admin = read_admin(top, listeners, clusters, env)
    plugins = read_plugins(top)
    auth = read_auth(top, on_route=False)
    ip_filter = read_ip_filter(top)
    security_headers = read_security_headers(top, on_route=False)
    routes = apply_edge_defaults(top, routes, auth, security_headers)
    observe = redact_credentials(observe, routes)
    config = Config(source=errors.source, listeners=listeners, server=server, clusters=clusters, routes=routes,
                    redis=redis, observe=observe, admin=admin, plugins=plugins, auth=auth, ip_filter=ip_filter,
                    security_headers=security_headers, document=document)
    config = _apply_env(config, env, errors)
    errors.raise_if_any()
    return config


# --- reading YAML ----------------------------------------------------------

def _read_yaml(source: str, errors: ErrorList) -> object:
    """The parsed document; a file that can't be read or parsed raises at once
    (there is nothing to validate), duplicate keys are recorded and reading goes on."""
    try:
        document, duplicates = yaml_text.parse(yaml_text.read_text(source))
    except yaml_text.YamlProblem as problem:
        where = f"{problem.where}: " if problem.where else ""
        hint = problem.hint if problem.where else f"{problem.hint}; {EXAMPLE_HINT}"
        raise ConfigError([f"{source}: {where}{problem.problem} ({hint})"]) from None
    for key, line, first in duplicates:
        errors.add(f"line {line}", f"duplicate key {key!r}, first at line {first}",
                   "each key may appear once in a mapping; YAML would silently keep only the last")
    return document


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
    config = Config(
        source=COMMAND_LINE,
        listeners=(Listener(name="default", host=host, port=port),),
        server=ServerSettings(workers=worker_count),
        clusters={"default": cluster},
        routes=(Route(name="default", index=0, match=RouteMatch(prefix="/"), cluster="default"),),
        # Quick-start mode: no admin listener (and no file to reload) unless
        # FASTGW_ADMIN=host:port asks for one, so the simplest deployment can
        # be probed and scraped too.
        admin=AdminSettings(enabled=False),
    )
    config = apply_admin_env(config, env, errors)
    errors.raise_if_any()
    return config


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
