"""The `fastgw` command, run as a real process (`python -m fastgw ...`).

`run` is tested in-process with a stand-in `fastgw.server.master`, so that
what it hands to `serve()` can be inspected without starting a server.
"""
from __future__ import annotations

import sys
import types

import pytest

from fastgw import __version__
from fastgw.cli import main
from fastgw.config.model import Endpoint, Listener

ROUTING_CONFIG = """
clusters:
  users:
    endpoints: [http://127.0.0.1:9001, {url: "http://127.0.0.1:9002", weight: 3}]
    lb: least_request
  static:
    endpoints: [http://127.0.0.1:9003]
routes:
  - name: get-user
    match: {path: "/users/{id}", methods: [GET, PUT]}
    cluster: users
    rewrite_path: "/v2/users/{id}"
  - name: me
    match: {path: /users/me, host: api.example.com}
    cluster: users
  - name: api
    match: {prefix: /api}
    cluster: users
    strip_prefix: /api
    request_headers: {set: {X-Gateway: fastgw}, remove: [X-Debug]}
    timeouts: {response_header: 2s}
  - name: fallback
    match: {prefix: /}
    cluster: static
  - name: admin
    match: {prefix: /admin, methods: [POST]}
    cluster: static
"""


def test_version(run_cli):
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"fastgw {__version__}\n"


def test_no_command_prints_usage(run_cli):
    result = run_cli()
    assert result.returncode == 2
    assert "usage: fastgw" in result.stderr


# --- check -----------------------------------------------------------------

def test_check_ok(run_cli):
    result = run_cli("check", "--config", "examples/gateway.yaml")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "examples/gateway.yaml: ok (1 listener, 2 clusters, 3 routes)\n"


def test_check_reports_every_error_and_exits_1(run_cli, write_config):
    path = write_config("""
        server: {workers: "x"}
        clusters:
          users: {endpoints: ["https://127.0.0.1:9001"]}
        routes:
          - {match: {path: /a}, cluster: userz}
        """)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}: server.workers: expected a number or 'auto', got 'x' "
        "(write a number of processes, e.g. 4, or 'auto' for one per CPU core)",
        f"{path}: clusters.users.endpoints[0]: https upstreams are not supported yet "
        "(use http:// and terminate TLS to the upstream elsewhere)",
        f"{path}: routes[0].cluster: unknown cluster 'userz' (did you mean 'users'?)",
        "3 errors",
    ]


def test_check_missing_file(run_cli, tmp_path):
    result = run_cli("check", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert f"{tmp_path / 'absent.yaml'}: file not found" in result.stderr


def test_check_sees_env_overrides(run_cli, write_config, minimal):
    result = run_cli("check", "--config", str(write_config(minimal)), env={"FASTGW_WORKERS": "lots"})
    assert result.returncode == 1
    assert ": env FASTGW_WORKERS: expected a number or 'auto', got 'lots'" in result.stderr


# --- run -------------------------------------------------------------------

@pytest.fixture
def fake_serve(monkeypatch):
    """Stand in for fastgw.server.master: record the config, return exit code 7."""
    served = []
    master = types.ModuleType("fastgw.server.master")

    def serve(config, reloader=None):
        served.append(config)
        return 7

    master.serve = serve
    monkeypatch.setitem(sys.modules, "fastgw.server.master", master)
    for name in ("FASTGW_LISTEN", "FASTGW_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    return served


def test_run_with_config_calls_serve(fake_serve, example_path):
    assert main(["run", "--config", str(example_path), "--workers", "3"]) == 7
    (config,) = fake_serve
    assert config.source == str(example_path)
    assert config.server.workers == 3
    assert [route.name for route in config.routes] == ["user-by-id", "api", "default"]


def test_run_with_upstream_calls_serve(fake_serve):
    assert main(["run", "--upstream", "http://127.0.0.1:9001", "--upstream-timeout", "1500ms"]) == 7
    (config,) = fake_serve
    assert config.listeners == (Listener("default", "127.0.0.1", 8080),)
    assert config.clusters["default"].endpoints == (Endpoint("127.0.0.1", 9001),)
    assert config.clusters["default"].timeouts.response_header == 1.5


def test_run_config_error_exits_1_without_serving(fake_serve, write_config, capsys):
    path = write_config("clusters: {}\nroutes: []\n")
    assert main(["run", "--config", str(path)]) == 1
    assert fake_serve == []
    assert f"{path}: clusters: no clusters are defined" in capsys.readouterr().err


def test_run_bad_upstream_exits_1(run_cli):
    result = run_cli("run", "--upstream", "https://127.0.0.1:9001")
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        "<command line>: --upstream: https upstreams are not supported yet "
        "(use http:// and terminate TLS to the upstream elsewhere)")


@pytest.mark.parametrize("args, message", [
    (["--config", "examples/gateway.yaml", "--upstream", "http://a:1"], "cannot be combined"),
    (["--listen", "127.0.0.1:8080"], "give --config FILE, or --upstream URL"),
    (["--upstream", "http://a:1", "--workers", "many"], "argument --workers: expected a number or 'auto'"),
    (["--upstream", "http://a:1", "--upstream-timeout", "soon"], "'soon' is not a duration"),
])
def test_run_usage_errors_exit_2(run_cli, args, message):
    result = run_cli("run", *args)
    assert result.returncode == 2
    assert message in result.stderr


# --- routes ----------------------------------------------------------------

@pytest.fixture
def routing_config(write_config):
    return str(write_config(ROUTING_CONFIG))


def test_routes_template_match(run_cli, routing_config):
    result = run_cli("routes", "--config", routing_config, "get", "http://api.example.com/users/7?x=1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:9] == [
        "request: GET /users/7?x=1  host: api.example.com",
        "route:    get-user (routes[0])",
        "match:    template /users/{id}, host any, methods GET, PUT",
        "params:   id=7",
        "cluster:  users, lb least_request",
        "            http://127.0.0.1:9001  weight 1",
        "            http://127.0.0.1:9002  weight 3",
        "upstream: GET /v2/users/7?x=1  (rewrite_path /v2/users/{id})",
        "request headers: unchanged",
    ]
    assert "timeouts: connect 5s, response_header 1m, idle 5m, websocket_idle 1h (cluster)" in lines


def test_routes_lists_candidates_in_priority_order(run_cli, routing_config):
    # For api.example.com, /users/me: the exact-host tier wins over host-less
    # routes, and within host-less ones the template beats the prefix.
    result = run_cli("routes", "--config", routing_config, "GET", "http://api.example.com:8080/users/me")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "route:    me (routes[1])" in out
    candidates = out[out.index("candidates for GET, in priority order:"):].splitlines()
    assert candidates[1].startswith("  1. me (routes[1]): host api.example.com, exact path /users/me")
    assert candidates[1].endswith("<- chosen")
    assert candidates[2].startswith("  2. get-user (routes[0]): any host, template /users/{id} (id=me)")
    assert candidates[3].startswith("  3. fallback (routes[3]): any host, prefix /")
    assert candidates[4] == ("  rule: host: exact > *.wildcard (longest first) > any; then path: exact > template "
                             "(a static segment beats a {param}) > longest prefix; then declaration order.")


def test_routes_strip_prefix_headers_and_route_timeouts(run_cli, routing_config):
    result = run_cli("routes", "--config", routing_config, "POST", "/api/v1/orders")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "request: POST /api/v1/orders  host: (none: only host-less routes can match)" in out
    assert "upstream: POST /v1/orders  (strip_prefix /api)" in out
    assert "request headers:\n            set x-gateway: fastgw\n            remove x-debug\n" in out
    assert "timeouts: connect 5s, response_header 2s, idle 5m, websocket_idle 1h (route overrides cluster)" in out


def test_routes_host_flag_overrides_the_url(run_cli, routing_config):
    result = run_cli("routes", "--config", routing_config, "--host", "api.example.com", "GET", "/users/me")
    assert result.returncode == 0, result.stderr
    assert "route:    me (routes[1])" in result.stdout


def test_routes_percent_encodes_the_path_like_a_client(run_cli, write_config):
    path = write_config("""
        clusters: {users: {endpoints: [http://127.0.0.1:9001]}}
        routes:
          - {match: {path: "/caf%C3%A9/{item}"}, cluster: users}
        """)
    result = run_cli("routes", "--config", str(path), "GET", "/café/au lait")
    assert result.returncode == 0, result.stdout
    assert "request: GET /caf%C3%A9/au%20lait  host:" in result.stdout
    assert "params:   item=au%20lait" in result.stdout


def test_routes_method_not_allowed(run_cli, write_config):
    path = write_config("""
        clusters: {users: {endpoints: [http://127.0.0.1:9001]}}
        routes:
          - {match: {path: /users, methods: [GET, PUT]}, cluster: users}
          - {match: {path: /users, methods: [DELETE]}, cluster: users}
        """)
    result = run_cli("routes", "--config", str(path), "POST", "/users")
    assert result.returncode == 2
    assert result.stdout.splitlines()[-1] == "no route: 405 Method Not Allowed (Allow: DELETE, GET, PUT)"


def test_routes_not_found(run_cli, write_config):
    path = write_config("""
        clusters: {users: {endpoints: [http://127.0.0.1:9001]}}
        routes:
          - {match: {prefix: /api}, cluster: users}
        """)
    result = run_cli("routes", "--config", str(path), "GET", "/apix")
    assert result.returncode == 2
    assert result.stdout.splitlines()[-1] == "no route: 404 Not Found"


def test_routes_with_a_bad_config_exits_1(run_cli, write_config):
    path = write_config("routes: []\n")
    result = run_cli("routes", "--config", str(path), "GET", "/")
    assert result.returncode == 1
    assert f"{path}: clusters: missing" in result.stderr


def test_routes_shows_what_would_be_retried(run_cli, routing_config):
    result = run_cli("routes", "--config", routing_config, "GET", "http://api.example.com/users/7")
    assert ("retries:  up to 2 on connect_failure, reset, 502, 503, 504; backoff 25ms..250ms with jitter; "
            "waits for an upstream Retry-After up to 1s; budget 0.2 of requests in flight (at least 3)"
            ) in result.stdout.splitlines()
    result = run_cli("routes", "--config", routing_config, "PUT", "http://api.example.com/users/7")
    assert "retries:  up to 2 on connect_failure, reset, 502, 503, 504;" in result.stdout
    result = run_cli("routes", "--config", routing_config, "POST", "http://api.example.com/other")
    assert "retries:  up to 2 on connect_failure only (POST is not idempotent);" in result.stdout
