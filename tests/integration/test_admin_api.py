"""The admin API on the real binary: token enforcement, probes, health
states, redaction, cross-worker cluster figures, drain, and the OpenAPI
document matching what is served."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from fastgw.admin.server import ENDPOINTS
from support import build_request, cluster, free_port, http_request, route, simple_config

TOKEN = "test-admin-token-0123456789abcdef"
OPENAPI = Path(__file__).resolve().parents[2] / "fastgw" / "admin" / "openapi.json"


def admin(gw, method: str, path: str, token: str | None = None, timeout: float = 10.0):
    headers = [("Authorization", f"Bearer {token}")] if token else []
    return http_request(gw.admin_port, method, path, headers, timeout=timeout)


@pytest.mark.timeout(30)
def test_token_is_enforced(upstream, gateway_factory):
    config = simple_config(upstream.url)
    config["admin"] = {"token": TOKEN}
    gw = gateway_factory(config)
    for path in ("/config", "/routes", "/clusters", "/openapi.json"):
        missing = admin(gw, "GET", path)
        assert missing.status == 401, missing.describe()
        assert missing.json()["error"]["code"] == "unauthorized"
        assert missing.header("www-authenticate", ) == 'Bearer realm="fastgw admin"'
        assert admin(gw, "GET", path, token=TOKEN[:-1] + "x").status == 401
        assert admin(gw, "GET", path, token=TOKEN + "x").status == 401
        assert admin(gw, "GET", path, token=TOKEN).status == 200
    assert admin(gw, "POST", "/reload", token="wrong-token-wrong-token").status == 401
    assert admin(gw, "POST", "/drain").status == 401
    wrong_scheme = http_request(gw.admin_port, "GET", "/config", [("Authorization", f"Basic {TOKEN}")])
    assert wrong_scheme.status == 401
    # Probes need no token: load balancers and kubelets can't always send one.
    for path in ("/livez", "/readyz", "/health"):
        assert admin(gw, "GET", path).status == 200, path
    assert gw.proc.poll() is None  # the refused POST /drain did nothing


@pytest.mark.timeout(30)
def test_unknown_paths_and_methods(proxy):
    gw = proxy.gw
    resp = admin(gw, "GET", "/nope")
    assert resp.status == 404 and resp.json()["error"]["code"] == "not_found"
    resp = admin(gw, "GET", "/reload")
    assert resp.status == 405 and resp.header("allow") == "POST"
    resp = admin(gw, "DELETE", "/config")
    assert resp.status == 405 and resp.header("allow") == "GET, PUT"
    # Keep-alive: several answers on one connection.
    from support import RawClient
    with RawClient(gw.admin_port) as client:
        for path in ("/livez", "/readyz", "/livez"):
            client.request("GET", path)
            assert client.read_response().status == 200
        # Pipelined: answered in order.
        client.send(build_request("GET", "/nope") + build_request("GET", "/livez"))
        assert client.read_response().status == 404
        assert client.read_response().json()["status"] == "alive"


@pytest.mark.timeout(30)
def test_health_states(upstream, gateway_factory):
    listening = socket.socket()  # an endpoint this test can take away
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = {
        "clusters": {"live": cluster(f"http://127.0.0.1:{listening.getsockname()[1]}"),
                     "half": cluster(upstream.url, dead)},
        "routes": [route("live", "live", prefix="/live"), route("half", "half", prefix="/")],
        "admin": {"required_clusters": ["live"]},
    }
    gw = gateway_factory(config, workers=2)
    resp = admin(gw, "GET", "/health")
    assert resp.status == 200, resp.describe()
    body = resp.json()
    assert body["status"] == "degraded" and body["draining"] is False
    components = {c["name"]: c for c in body["components"]}
    assert components["live"]["state"] == "healthy" and components["live"]["required"] is True
    assert components["live"]["endpoints_up"] == 1 and components["live"]["latency_ms"] >= 0
    assert components["half"]["state"] == "degraded"
    assert (components["half"]["endpoints_up"], components["half"]["endpoints_total"]) == (1, 2)
    assert admin(gw, "GET", "/readyz").json()["status"] == "ready"

    listening.close()  # the required cluster's only endpoint goes away
    time.sleep(1.1)  # past the probe cache
    resp = admin(gw, "GET", "/health")
    assert resp.status == 503, resp.describe()
    body = resp.json()
    assert body["status"] == "unhealthy"
    assert {c["name"]: c["state"] for c in body["components"]} == {"live": "unhealthy", "half": "degraded"}
    assert body["components"][0]["latency_ms"] is None
    ready = admin(gw, "GET", "/readyz")
    assert ready.status == 503
    assert ready.json()["reasons"] == ["required cluster 'live' has no healthy endpoint"]
    assert admin(gw, "GET", "/livez").status == 200  # alive all the same


@pytest.mark.timeout(30)
def test_all_clusters_down_is_unhealthy(gateway_factory):
    gw = gateway_factory(simple_config(f"http://127.0.0.1:{free_port()}"))
    resp = admin(gw, "GET", "/health")
    assert resp.status == 503 and resp.json()["status"] == "unhealthy", resp.describe()
    assert admin(gw, "GET", "/readyz").status == 200  # no required cluster


@pytest.mark.timeout(30)
def test_config_is_redacted(upstream, gateway_factory, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = simple_config(upstream.url, route_extra={
        "request_headers": {"set": {"Authorization": "Bearer upstream-secret-xyz", "X-Team": "core"}}})
    config["admin"] = {"token_file": str(token_file)}
    gw = gateway_factory(config)
    resp = admin(gw, "GET", "/config", token=TOKEN)
    assert resp.status == 200, resp.describe()
    text = resp.body.decode()
    assert TOKEN not in text and "upstream-secret-xyz" not in text
    body = json.loads(text)
    shown = body["config"]
    assert shown["admin"]["token"] == "<redacted>"
    assert shown["admin"]["token_source"] == f"file {token_file}"
    assert shown["admin"]["address"] == f"127.0.0.1:{gw.admin_port}"
    assert shown["clusters"]["main"]["endpoints"][0]["port"] == upstream.port
    assert shown["routes"][0]["request_headers"]["set"] == [["authorization", "<redacted>"], ["x-team", "core"]]
    routes = admin(gw, "GET", "/routes", token=TOKEN).json()["routes"]
    assert routes[0]["name"] == "all" and routes[0]["cluster"] == "main"
    assert routes[0]["request_headers"]["set"][0] == ["authorization", "<redacted>"]
    # The redirected request really carries the secret: redaction is only in the view.
    assert http_request(gw.port, "GET", "/echo").status == 200
    assert upstream.requests[-1].header("authorization") == "Bearer upstream-secret-xyz"


def test_redaction_of_urls_and_secret_fields():
    from fastgw.admin.redact import redact, is_secret_key
    shown = redact({"url": "redis://app:s3cret@127.0.0.1:6379/0", "redis_password": "p",
                    "token_source": "env X", "list": ["http://u:pw@h/x", "plain"]}, field_names=True)
    assert shown == {"url": "redis://app:<redacted>@127.0.0.1:6379/0", "redis_password": "<redacted>",
                     "token_source": "env X", "list": ["http://u:<redacted>@h/x", "plain"]}
    assert not is_secret_key("token-service") and is_secret_key("token")


@pytest.mark.timeout(30)
def test_clusters_add_up_all_workers(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.url, server={"workers": 2}), workers=2)
    for _ in range(30):
        assert http_request(gw.port, "GET", "/fixed").status == 200
    time.sleep(1.3)  # every worker has published since
    body = admin(gw, "GET", "/clusters").json()
    assert body["workers"] == 2 and body["generation"] == 1
    (main,) = body["clusters"]
    (endpoint,) = main["endpoints"]
    assert endpoint["address"] == f"127.0.0.1:{upstream.port}"
    assert endpoint["state"] == "healthy" and endpoint["states"] == {"healthy": 2}
    pool = endpoint["pool"]
    # Every upstream connection either worker opened, counted once.
    assert pool["created"] == len(upstream.connections), (pool, len(upstream.connections))
    assert pool["created"] >= 2 and pool["active"] == 0 and pool["idle"] == pool["open"]
    assert main["circuit_breaker"] is None


@pytest.mark.timeout(30)
def test_circuit_state_per_worker(upstream, gateway_factory):
    config = simple_config(upstream.url)
    config["clusters"]["main"]["circuit_breaker"] = {"failures": 2, "open_for": "30s"}
    gw = gateway_factory(config)
    for _ in range(2):
        assert http_request(gw.port, "GET", "/status/500").status == 500
    body = admin(gw, "GET", "/clusters").json()
    assert body["clusters"][0]["circuit_breaker"] == {"open": 1}


@pytest.mark.timeout(30)
def test_drain_via_admin_turns_readyz_503_then_exits(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.url, server={"timeouts": {"drain_delay": "1500ms"}}))
    assert admin(gw, "GET", "/readyz").status == 200
    resp = admin(gw, "POST", "/drain")
    assert resp.status == 202, resp.describe()
    assert resp.json() == {"status": "draining", "drain_delay": 1.5, "drain_timeout": 5.0}
    time.sleep(0.2)
    ready = admin(gw, "GET", "/readyz")
    assert ready.status == 503 and ready.json()["reasons"] == ["draining"]
    health = admin(gw, "GET", "/health")
    assert health.status == 503 and health.json()["draining"] is True
    assert http_request(gw.port, "GET", "/fixed").status == 200  # still serving during the delay
    assert admin(gw, "POST", "/reload").status == 503  # no reload while draining
    assert gw.wait(15) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gw.admin_port), timeout=2).close()


@pytest.mark.timeout(30)
def test_sigint_drains_without_the_delay(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.url, server={"timeouts": {"drain_delay": "20s"}}))
    started = time.monotonic()
    gw.signal(signal.SIGINT)
    assert gw.wait(10) == 0 and time.monotonic() - started < 5


@pytest.mark.timeout(30)
def test_openapi_document_matches_the_served_endpoints(upstream, gateway_factory):
    config = simple_config(upstream.url)
    config["admin"] = {"token": TOKEN}
    gw = gateway_factory(config)
    served = admin(gw, "GET", "/openapi.json", token=TOKEN)
    assert served.status == 200
    doc = served.json()
    shipped = json.loads(OPENAPI.read_text())
    # The shipped document, with this listener's address as the server.
    assert doc["servers"] == [{"url": gw.admin_url, "description": "this gateway's admin listener"}]
    assert {k: v for k, v in doc.items() if k != "servers"} == {k: v for k, v in shipped.items() if k != "servers"}
    assert doc["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == set(ENDPOINTS), (documented ^ set(ENDPOINTS))
    # Every documented GET answers on the real listener (POSTs change state: see the other tests),
    # and the token requirement is as documented.
    for method, path in sorted(documented):
        op = doc["paths"][path][method.lower()]
        needs_token = bool(op.get("security"))
        assert needs_token == (not ENDPOINTS[(method, path)][1]), path
        if method == "GET":
            resp = admin(gw, "GET", path, token=TOKEN)
            assert str(resp.status) in op["responses"], (path, resp.status)
            if needs_token:
                assert "401" in op["responses"] and admin(gw, "GET", path).status == 401


@pytest.mark.timeout(30)
def test_sigint_during_the_drain_delay_closes_at_once(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.url, server={"timeouts": {"drain_delay": "20s"}}))
    gw.wait_children(1)
    gw.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert http_request(gw.port, "GET", "/fixed").status == 200  # in the delay: still served
    started = time.monotonic()
    for worker in gw.children():  # a second Ctrl-C reaches every process of the group
        os.kill(worker, signal.SIGINT)
    assert gw.wait(10) == 0 and time.monotonic() - started < 5


@pytest.mark.timeout(40)
def test_health_reports_redis_and_config_hides_its_password(upstream, redis_factory, gateway_factory):
    password = "s3cret-redis-pw-42"
    redis = redis_factory(extra_args=("--requirepass", password))
    config = simple_config(upstream.url)
    config["redis"] = {"url": f"redis://:{password}@127.0.0.1:{redis.port}", "failure_mode": "closed"}
    config["routes"][0]["rate_limits"] = [{"key": "route", "rate": "1000/s", "burst": 1000, "scope": "redis"}]
    gw = gateway_factory(config)
    assert http_request(gw.port, "GET", "/fixed").status == 200  # the limit works through Redis

    body = admin(gw, "GET", "/health").json()
    components = {c["name"]: c for c in body["components"]}
    redis_part = components["redis"]
    assert redis_part["kind"] == "redis" and redis_part["state"] == "healthy", body
    assert redis_part["required"] is True and redis_part["latency_ms"] >= 0
    assert redis_part["address"] == f"127.0.0.1:{redis.port}"
    assert body["status"] == "healthy"

    shown = admin(gw, "GET", "/config")
    assert password not in shown.body.decode()
    assert shown.json()["config"]["redis"]["password"] == "<redacted>"

    redis.pause()  # hung: connected, never answers
    try:
        resp = admin(gw, "GET", "/health")
        assert resp.status == 503, resp.describe()
        redis_part = {c["name"]: c for c in resp.json()["components"]}["redis"]
        assert redis_part["state"] == "unhealthy" and redis_part["latency_ms"] is None and redis_part["error"]
    finally:
        redis.resume()
    deadline = time.monotonic() + 10
    while admin(gw, "GET", "/health").status != 200:
        assert time.monotonic() < deadline, "Redis never came back healthy"
        time.sleep(0.2)


@pytest.mark.timeout(30)
def test_openapi_without_a_token_declares_no_auth(upstream, gateway_factory):
    """No token configured: the served document requires nothing and
    promises no 401, which is how the listener behaves (a schema-driven
    client finds no contradiction), and names the real address."""
    gw = gateway_factory(simple_config(upstream.url))
    doc = admin(gw, "GET", "/openapi.json").json()
    assert doc["servers"][0]["url"] == gw.admin_url
    assert "securitySchemes" not in doc.get("components", {}) and "security" not in doc
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            assert "security" not in op and "401" not in op["responses"], (method, path)
            if method == "get":
                resp = admin(gw, "GET", path)
                assert str(resp.status) in op["responses"], (path, resp.status)
