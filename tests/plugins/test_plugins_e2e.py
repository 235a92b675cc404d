"""Plugins through the real binary (issue 9, item 3): hooks in phase order,
what a hook reads and changes, early answers, async hooks, failures that
cost one request and nothing else, budgets and timeouts, config errors."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from support import RawClient, assert_gateway_error, cluster, http_request, route, wait_until

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


@pytest.fixture(autouse=True)
def plugin_path(monkeypatch):
    """The gateway imports tests/plugins/sample_plugins.py and the example
    (`plugins.tenant_gate`, from examples/)."""
    monkeypatch.setenv("PYTHONPATH", f"{HERE}:{REPO / 'examples'}")


def plugin(use: str, **config) -> dict:
    return {"use": f"sample_plugins:{use}", "config": config}


def config_with(upstream_url: str, *routes, plugins=None, **top) -> dict:
    config = {"clusters": {"main": cluster(upstream_url)}, "routes": list(routes), **top}
    if plugins is not None:
        config["plugins"] = plugins
    return config


@pytest.mark.timeout(60)
def test_hooks_run_in_phase_order_global_before_route(upstream, gateway_factory, tmp_path):
    log_path = tmp_path / "access.log"
    gw = gateway_factory(config_with(
        upstream.url,
        route("tagged", "main", prefix="/", plugins=[plugin("Tag", tag="r")]),
        plugins=[plugin("Tag", tag="g")],
        access_log={"path": str(log_path), "flush_interval": "100ms"}))
    resp = http_request(gw.port, "GET", "/echo/x")
    assert resp.status == 200, resp.describe()
    [seen] = upstream.requests
    # request_head of every plugin (global first), then access of every plugin.
    assert seen.header("x-order") == "g,r,g,r"
    assert resp.header("x-order") == "g,r"  # response_head, same order
    assert wait_until(lambda: log_path.exists() and log_path.read_text().strip(), 10)
    line = json.loads(log_path.read_text().splitlines()[0])
    assert line["seen_g"] == "tagged" and line["seen_r"] == "tagged"
    assert line["status"] == 200  # a plugin's field never replaces a built-in one


@pytest.mark.timeout(60)
def test_on_log_runs_with_metrics_and_access_log_off_and_gets_the_same_request(upstream, gateway_factory,
                                                                               tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    gw = gateway_factory(config_with(
        upstream.url, route("logged", "main", prefix="/", plugins=[plugin("Ledger", path=str(ledger))]),
        metrics={"enabled": False}))
    with RawClient(gw.port) as client:  # one keep-alive connection: the exchanges follow each other
        for i in range(5):
            client.request("GET", f"/echo/{i}")
            assert client.read_response(timeout=10).status == 200
    assert wait_until(lambda: ledger.exists() and len(ledger.read_text().splitlines()) == 5, 10)
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [line["path"] for line in lines] == [f"/echo/{i}" for i in range(5)]
    assert all(line["same_request"] for line in lines)


@pytest.mark.timeout(60)
def test_a_plugin_reads_the_request_and_answers_early(upstream, gateway_factory):
    gw = gateway_factory(config_with(
        upstream.url, route("users", "main", path="/inspect/{id}", plugins=[plugin("Inspect")])))
    resp = http_request(gw.port, "GET", "/inspect/42?x=1", headers=[("User-Agent", "probe/1")])
    assert resp.status == 200, resp.describe()
    assert resp.header("content-type") == "application/json"
    assert resp.header("x-request-id")
    body = resp.json()
    assert body == {"method": "GET", "path": "/inspect/42", "query": "x=1", "client_ip": "127.0.0.1",
                    "route": "users", "params": {"id": "42"}, "agent": "probe/1",
                    "request_id": resp.header("x-request-id")}
    assert upstream.requests == []  # answered by the plugin


@pytest.mark.timeout(60)
def test_async_access_hook_admits_or_refuses(upstream, gateway_factory):
    gw = gateway_factory(config_with(
        upstream.url, route("keyed", "main", prefix="/", plugins=[plugin("AsyncCheck", key="k1")])))
    with RawClient(gw.port) as client:
        client.request("GET", "/echo/a", [("X-Key", "wrong")])
        refused = client.read_response(timeout=10)
        assert refused.status == 401 and refused.header("www-authenticate") == "Key"
        assert refused.json() == {"error": "bad key"}
        # The same connection goes on: a refusal of a bodiless request keeps it.
        client.request("GET", "/echo/b", [("X-Key", "k1")])
        ok = client.read_response(timeout=10)
        assert ok.status == 200, ok.describe()
    [seen] = upstream.requests
    assert seen.target == "/echo/b" and seen.header("x-key-ok") == "1"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["on_access", "on_response_head"])
def test_a_plugin_that_raises_fails_its_request_only(upstream, gateway_factory, where):
    gw = gateway_factory(config_with(
        upstream.url, route("fragile", "main", prefix="/", plugins=[plugin("Broken", where=where)])))
    for _ in range(3):
        resp = http_request(gw.port, "GET", "/boom")
        assert_gateway_error(resp, 500, "plugin_error")
    assert http_request(gw.port, "GET", "/echo/fine").status == 200
    # One traceback in the log, not one per request.
    assert wait_until(lambda: "deliberate failure" in gw.stderr_path.read_text(), 5)
    logged = gw.stderr_path.read_text()
    assert logged.count("Traceback") == 1, logged
    assert "plugin Broken" in logged


@pytest.mark.timeout(60)
def test_a_log_hook_that_raises_costs_nothing(upstream, gateway_factory):
    gw = gateway_factory(config_with(
        upstream.url, route("fragile", "main", prefix="/", plugins=[plugin("Broken", where="on_log")])))
    assert http_request(gw.port, "GET", "/echo/boom").status == 200
    assert http_request(gw.port, "GET", "/echo/fine").status == 200
    assert wait_until(lambda: "deliberate failure in on_log" in gw.stderr_path.read_text(), 5)


@pytest.mark.timeout(60)
def test_budget_overrun_is_logged_and_timeout_fails_the_request(upstream, gateway_factory):
    slow = {"use": "sample_plugins:Slow", "config": {"seconds": 0.05}, "budget": "1ms"}
    hung = {"use": "sample_plugins:AsyncCheck", "config": {"key": "k", "delay": 30}, "timeout": "300ms"}
    gw = gateway_factory(config_with(
        upstream.url,
        route("slow", "main", prefix="/slow-plugin", plugins=[slow]),
        route("hung", "main", prefix="/hung", plugins=[hung]),
        route("rest", "main", prefix="/")))
    assert http_request(gw.port, "GET", "/slow-plugin").status == 200
    assert wait_until(lambda: "over its budget of 1.0 ms" in gw.stderr_path.read_text(), 5)
    started = time.monotonic()
    resp = http_request(gw.port, "GET", "/hung", headers=[("X-Key", "k")], timeout=20)
    assert_gateway_error(resp, 504, "plugin_timeout")
    assert time.monotonic() - started < 15  # 300 ms configured; bounded, not 30 s
    assert http_request(gw.port, "GET", "/echo/ok").status == 200


@pytest.mark.timeout(60)
def test_plugins_may_not_change_framing_headers(upstream, gateway_factory):
    gw = gateway_factory(config_with(upstream.url, route("r", "main", prefix="/", plugins=[plugin("Forbidden")])))
    assert_gateway_error(http_request(gw.port, "GET", "/echo/x"), 500, "plugin_error")
    assert upstream.requests == []
    assert "may not change 'Content-Length'" in gw.stderr_path.read_text()


@pytest.mark.timeout(60)
def test_the_example_plugin_as_documented(upstream, gateway_factory, tmp_path):
    """examples/plugins.yaml's plugin, with the example's own settings."""
    example = yaml.safe_load((REPO / "examples" / "plugins.yaml").read_text())
    config = config_with(upstream.url, *example["routes"])
    config["clusters"] = {"app": cluster(upstream.url)}
    gw = gateway_factory(config)
    assert http_request(gw.port, "GET", "/api/x").status == 403
    assert http_request(gw.port, "GET", "/api/x", headers=[("X-Tenant", "initech")]).status == 403
    ok = http_request(gw.port, "GET", "/api/x", headers=[("X-Tenant", "acme")])
    assert ok.status == 200 and ok.header("x-served-for") == "acme"
    assert upstream.requests[-1].header("x-tenant-checked") == "acme"
    assert http_request(gw.port, "GET", "/public").status == 200  # the other route has no plugin


def _check(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"PYTHONPATH": f"{REPO}:{HERE}", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "fastgw", "check", "--config", str(path)],
                          capture_output=True, text=True, env=env, timeout=60)


BAD_PLUGINS = [
    ({"use": "no_such_module:X"}, "routes[0].plugins[0].use", "no module named 'no_such_module'"),
    ({"use": "sample_plugins:Nope"}, "routes[0].plugins[0].use", "has no 'Nope'"),
    ({"use": "sample_plugins"}, "routes[0].plugins[0].use", "package.module:ClassName"),
    ({"use": "sample_plugins:Tag", "config": {"tag": 3}}, "routes[0].plugins[0].config.tag", "expected a string"),
    ({"use": "sample_plugins:Tag", "config": [1]}, "routes[0].plugins[0].config", "expected a mapping"),
    ({"use": "sample_plugins:Tag", "config": {"tag": "a"}, "budget": "fast"}, "routes[0].plugins[0].budget", ""),
    ({"use": "sample_plugins:Tag", "conf": {}}, "routes[0].plugins[0].conf", "unknown key"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("entry,keypath,words", BAD_PLUGINS, ids=[b[1] + ":" + b[2][:20] for b in BAD_PLUGINS])
def test_fastgw_check_names_a_bad_plugin_with_its_key_path(tmp_path, entry, keypath, words):
    config = {"clusters": {"main": {"endpoints": ["http://127.0.0.1:9"]}},
              "routes": [{"match": {"prefix": "/"}, "cluster": "main", "plugins": [entry]}]}
    result = _check(tmp_path, config)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    out = result.stdout + result.stderr
    assert keypath in out and words in out, out
    assert str(tmp_path / "gw.yaml") in out  # the file is named


@pytest.mark.timeout(60)
def test_fastgw_check_refuses_an_async_response_hook(tmp_path):
    module = tmp_path / "async_response.py"
    module.write_text("class A:\n    def __init__(self, config): pass\n"
                      "    async def on_response_head(self, request, response): pass\n")
    config = {"clusters": {"main": {"endpoints": ["http://127.0.0.1:9"]}},
              "plugins": [{"use": "async_response:A"}],
              "routes": [{"match": {"prefix": "/"}, "cluster": "main"}]}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "fastgw", "check", "--config", str(path)],
                            capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": f"{REPO}:{tmp_path}", "PATH": "/usr/bin:/bin"})
    out = result.stdout + result.stderr
    assert result.returncode == 1 and "plugins[0].use" in out and "must be a plain method" in out, out


@pytest.mark.timeout(60)
def test_admin_config_and_routes_show_plugins(upstream, gateway_factory):
    gw = gateway_factory(config_with(
        upstream.url, route("tagged", "main", prefix="/", plugins=[plugin("Tag", tag="r")]),
        plugins=[plugin("Tag", tag="g")]))
    import httpx
    shown = httpx.get(f"{gw.admin_url}/config", timeout=10).json()["config"]
    assert shown["plugins"][0]["use"] == "sample_plugins:Tag" and shown["plugins"][0]["config"] == {"tag": "g"}
    assert "factory" not in shown["plugins"][0]
    routes = httpx.get(f"{gw.admin_url}/routes", timeout=10).json()
    entry = routes["routes"][0]
    assert entry["plugins"][0]["config"] == {"tag": "r"}


@pytest.mark.timeout(60)
def test_fastgw_routes_lists_a_route_s_plugins_in_order(tmp_path):
    config = {"clusters": {"main": {"endpoints": ["http://127.0.0.1:9"]}},
              "plugins": [{"use": "sample_plugins:Tag", "config": {"tag": "g"}, "name": "first"}],
              "routes": [{"match": {"prefix": "/"}, "cluster": "main",
                          "plugins": [{"use": "sample_plugins:AsyncCheck", "budget": "3ms"}]}]}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "fastgw", "routes", "--config", str(path), "GET", "/x"],
                            capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": f"{REPO}:{HERE}", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    first = lines.index("first (sample_plugins:Tag, global): on_request_head, on_access, on_response_head; budget 50ms")
    assert lines[first + 1] == "AsyncCheck (sample_plugins:AsyncCheck, route): on_access; budget 3ms"


@pytest.mark.timeout(60)
def test_the_example_config_checks_as_the_docs_say_with_no_environment():
    """`fastgw check --config examples/plugins.yaml` with nothing on
    PYTHONPATH: the plugin beside the config file is found."""
    result = subprocess.run([sys.executable, "-m", "fastgw", "check", "--config",
                             str(REPO / "examples" / "plugins.yaml")],
                            capture_output=True, text=True, timeout=60, cwd="/",
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
