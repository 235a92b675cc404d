"""Valid configs: what the loader builds, value parsing, env overrides, command-line configs."""
from __future__ import annotations

import pytest

from fastgw.config import from_command_line, load, with_workers
from fastgw.config.errors import Invalid
from fastgw.config.model import (
    Endpoint, HeaderOps, Limits, Listener, RouteMatch, UpstreamTimeouts,
)
from fastgw.config.schema import parse_duration, parse_size, parse_workers

# --- the annotated example -------------------------------------------------


def test_example_config_loads(example_path):
    config = load(example_path, env={})
    assert config.source == str(example_path)
    assert config.listeners == (Listener(name="public", host="127.0.0.1", port=8080),)
    assert config.server.workers == 0
    assert config.server.limits == Limits(max_header_bytes=16384, max_header_count=100,
                                          max_uri_bytes=8192, max_body_bytes=10 * 1024 * 1024)
    assert (config.server.client_header_timeout, config.server.keepalive_timeout,
            config.server.drain_timeout) == (10.0, 75.0, 30.0)

    users = config.clusters["users"]
    assert list(config.clusters) == ["users", "static"]
    assert users.lb == "round_robin"
    assert users.endpoints == (Endpoint("127.0.0.1", 9001, weight=2), Endpoint("127.0.0.1", 9002, weight=1))
    assert (users.pool_max_idle, users.pool_idle_timeout) == (1024, 60.0)
    assert users.timeouts == UpstreamTimeouts(connect=5.0, response_header=60.0, idle=300.0, websocket_idle=3600.0)


def test_example_routes(example_path):
    user_by_id, api, default = load(example_path, env={}).routes
    assert (user_by_id.name, user_by_id.index, user_by_id.cluster) == ("user-by-id", 0, "users")
    assert user_by_id.match == RouteMatch(host="*.example.com", path="/users/{id}", methods=("GET", "PUT", "DELETE"))
    assert user_by_id.match.kind == "template"
    assert user_by_id.rewrite_path == "/v2/users/{id}"
    assert user_by_id.request_headers == HeaderOps(set=((b"x-gateway", b"fastgw"),), remove=(b"x-debug",))
    assert user_by_id.response_headers == HeaderOps(add=((b"x-served-by", b"fastgw"),))
    # Partial override: only response_header is given; the rest is the cluster's.
    assert user_by_id.timeouts == UpstreamTimeouts(connect=5.0, response_header=5.0, idle=300.0,
                                                   websocket_idle=3600.0)

    assert api.match == RouteMatch(prefix="/api") and api.strip_prefix == "/api" and api.timeouts is None
    assert (default.name, default.match.prefix, default.cluster) == ("default", "/", "static")


# --- defaults and normalisation --------------------------------------------

def test_minimal_config_gets_defaults(write_config, minimal):
    config = load(write_config(minimal), env={})
    assert config.listeners == (Listener(name="default", host="127.0.0.1", port=8080),)
    assert config.server.workers == 0
    assert config.server.limits == Limits()
    assert config.routes[0].name == "route-0"
    assert config.routes[0].match.methods is None
    assert config.clusters["users"].endpoints == (Endpoint("127.0.0.1", 9001),)


def test_values_are_normalised(write_config):
    config = load(write_config("""
        listeners:
          - address: "[::1]:8443"
          - {name: second, address: LocalHost:9000}
        clusters:
          users:
            lb: least_request
            endpoints:
              - http://users.internal
              - url: "http://[::1]:9002/"
                weight: 3
        routes:
          - match:
              host: "*.Example.COM."
              path: /x
              methods: [get, GET, post]
            cluster: users
            request_headers:
              set: {X-Version: 2, X-Name: "Zoë", X-Emoji: "☃"}
        """), env={})
    assert config.listeners == (Listener("listener-0", "::1", 8443), Listener("second", "localhost", 9000))
    assert config.clusters["users"].endpoints == (Endpoint("users.internal", 80), Endpoint("::1", 9002, weight=3))
    match = config.routes[0].match
    assert match.host == "*.example.com"
    assert match.methods == ("GET", "POST")
    # latin-1 where it fits (what HTTP/1.1 historically carries), else UTF-8.
    assert config.routes[0].request_headers.set == (
        (b"x-version", b"2"), (b"x-name", "Zoë".encode("latin-1")), (b"x-emoji", "☃".encode("utf-8")))


def test_route_timeouts_merge_over_the_clusters(write_config):
    config = load(write_config("""
        clusters:
          slow:
            endpoints: [http://127.0.0.1:9001]
            timeouts: {connect: 2s, idle: 10m}
        routes:
          - {match: {path: /report}, cluster: slow, timeouts: {response_header: 500ms}}
          - {match: {prefix: /}, cluster: slow}
        """), env={})
    report, rest = config.routes
    assert report.timeouts == UpstreamTimeouts(connect=2.0, response_header=0.5, idle=600.0, websocket_idle=3600.0)
    assert config.route_timeouts(report) is report.timeouts
    assert rest.timeouts is None
    assert config.route_timeouts(rest) == UpstreamTimeouts(connect=2.0, idle=600.0)


def test_strip_prefix_accepted_forms(write_config):
    config = load(write_config("""
        clusters: {users: {endpoints: [http://127.0.0.1:9001]}}
        routes:
          - {match: {prefix: /api/v1}, strip_prefix: /api, cluster: users}
          - {match: {prefix: /api/}, strip_prefix: /api/, cluster: users}
          - {match: {path: "/svc/users/{id}"}, strip_prefix: /svc, cluster: users}
        """), env={})
    assert [route.strip_prefix for route in config.routes] == ["/api", "/api/", "/svc"]


def test_drain_may_be_zero_and_pool_may_be_off(write_config, minimal):
    config = load(write_config(minimal.replace("users:\n", "users:\n    pool: {max_idle: 0}\n", 1)
                               + "server: {timeouts: {drain: 0}}\n"), env={})
    assert config.server.drain_timeout == 0.0
    assert config.clusters["users"].pool_max_idle == 0


# --- durations, sizes, workers ---------------------------------------------

@pytest.mark.parametrize("raw, seconds", [
    (5, 5.0), (0.25, 0.25), ("500ms", 0.5), ("5s", 5.0), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0),
    ("10", 10.0), (" 3 s ", 3.0), ("250MS", 0.25),
])
def test_durations(raw, seconds):
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["5 minutes", "1d", "-1s", "s", "", True, [5], 0, "0ms", float("inf")])
def test_invalid_durations(raw):
    with pytest.raises(Invalid):
        parse_duration(raw)


@pytest.mark.parametrize("raw, size", [
    (16384, 16384), ("16k", 16384), ("16K", 16384), ("16kb", 16384), ("16KiB", 16384),
    ("10m", 10 * 1024**2), ("10MiB", 10 * 1024**2), ("1g", 1024**3), ("512", 512), ("512b", 512),
])
def test_sizes(raw, size):
    assert parse_size(raw) == size


@pytest.mark.parametrize("raw", ["16q", "1.5m", "10ib", "-1", 0, -5, 1.5, True, "k"])
def test_invalid_sizes(raw):
    with pytest.raises(Invalid):
        parse_size(raw)


@pytest.mark.parametrize("raw, workers", [("auto", 0), ("AUTO", 0), (0, 0), (4, 4), ("8", 8)])
def test_workers(raw, workers):
    assert parse_workers(raw) == workers


def test_sizes_and_durations_in_a_file(write_config, minimal):
    config = load(write_config(minimal + """
server:
  workers: 3
  limits: {max_header_bytes: 32k, max_uri_bytes: 4096, max_body_bytes: 1MiB}
  timeouts: {client_header: 1500ms, keepalive: 2m}
"""), env={})
    assert config.server.workers == 3
    assert config.server.limits == Limits(max_header_bytes=32768, max_uri_bytes=4096, max_body_bytes=1024**2)
    assert (config.server.client_header_timeout, config.server.keepalive_timeout) == (1.5, 120.0)


# --- environment overrides -------------------------------------------------

def test_env_listen_replaces_only_the_first_listener(write_config, minimal):
    path = write_config(minimal + """
listeners:
  - {name: public, address: 127.0.0.1:8080}
  - {name: admin, address: 127.0.0.1:9090}
""")
    config = load(path, env={"FASTGW_LISTEN": "[::]:80"})
    assert config.listeners == (Listener("public", "::", 80), Listener("admin", "127.0.0.1", 9090))


def test_env_listen_applies_to_the_default_listener(write_config, minimal):
    config = load(write_config(minimal), env={"FASTGW_LISTEN": "0.0.0.0:9000"})
    assert config.listeners == (Listener("default", "0.0.0.0", 9000),)


@pytest.mark.parametrize("value, workers", [("6", 6), ("auto", 0)])
def test_env_workers(write_config, minimal, value, workers):
    config = load(write_config(minimal + "server: {workers: 2}\n"), env={"FASTGW_WORKERS": value})
    assert config.server.workers == workers


def test_empty_env_variables_count_as_unset(write_config, minimal):
    config = load(write_config(minimal + "server: {workers: 2}\n"), env={"FASTGW_WORKERS": "", "FASTGW_LISTEN": ""})
    assert (config.server.workers, config.listeners[0].port) == (2, 8080)


def test_os_environ_is_the_default(write_config, minimal, monkeypatch):
    monkeypatch.setenv("FASTGW_WORKERS", "5")
    assert load(write_config(minimal)).server.workers == 5


def test_with_workers_overrides_file_and_env(write_config, minimal):
    config = load(write_config(minimal + "server: {workers: 2}\n"), env={"FASTGW_WORKERS": "3"})
    assert with_workers(config, 7).server.workers == 7


# --- command-line configs --------------------------------------------------

def test_from_command_line_builds_one_catch_all_route():
    config = from_command_line("0.0.0.0:8000", "http://127.0.0.1:9001", 2, 2.5, env={})
    assert config.source == "<command line>"
    assert config.listeners == (Listener("default", "0.0.0.0", 8000),)
    assert config.server.workers == 2
    (route,) = config.routes
    assert (route.name, route.match, route.cluster) == ("default", RouteMatch(prefix="/"), "default")
    cluster = config.clusters["default"]
    assert cluster.endpoints == (Endpoint("127.0.0.1", 9001),)
    assert cluster.timeouts == UpstreamTimeouts(response_header=2.5)


def test_from_command_line_defaults():
    config = from_command_line(None, "http://backend", None, None, env={})
    assert config.listeners == (Listener("default", "127.0.0.1", 8080),)
    assert config.clusters["default"].endpoints == (Endpoint("backend", 80),)
    assert config.clusters["default"].timeouts == UpstreamTimeouts()
    assert config.server.workers == 0


def test_from_command_line_falls_back_to_env_for_omitted_flags():
    env = {"FASTGW_LISTEN": "127.0.0.1:7000", "FASTGW_WORKERS": "3"}
    from_env = from_command_line(None, "http://backend:1", None, None, env=env)
    assert (from_env.listeners[0].port, from_env.server.workers) == (7000, 3)
    explicit = from_command_line("127.0.0.1:7001", "http://backend:1", 1, None, env=env)
    assert (explicit.listeners[0].port, explicit.server.workers) == (7001, 1)
