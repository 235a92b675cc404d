"""Hot reload and drain with the real binary under a steady client load:
5 reloads and a SIGTERM drain with zero failed requests, a WebSocket that
outlives a reload, and invalid configs that leave the old one serving."""
from __future__ import annotations

import signal
import socket
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from support import cluster, http_request, route
from support.load import LoadClient


def versioned(upstream_url: str, version: int, **server) -> dict:
    """One catch-all route whose responses say which config served them."""
    return {
        "server": {"timeouts": server} if server else {},
        "clusters": {"main": cluster(upstream_url)},
        "routes": [route("all", "main", prefix="/", response_headers={"set": {"X-Config": f"v{version}"}})],
    }


def admin(gw, method: str, path: str, timeout: float = 40.0):
    return http_request(gw.admin_port, method, path, timeout=timeout)


def children_settle(gw, count: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        kids = gw.children()
        if len(kids) == count or time.monotonic() > deadline:
            return kids
        time.sleep(0.05)


@pytest.mark.timeout(90)
def test_five_reloads_under_load_lose_nothing(upstream, gateway_factory):
    gw = gateway_factory(versioned(upstream.url, 0), workers=2)
    load = LoadClient(gw.port, threads=6).start()
    took_all = []
    try:
        time.sleep(0.5)
        for version in range(1, 6):
            gw.write_config(versioned(upstream.url, version))
            started = time.monotonic()
            resp = admin(gw, "POST", "/reload")
            assert resp.status == 200, resp.describe()
            assert resp.json() == {"status": "reloaded", "generation": version + 1}
            took = time.monotonic() - started
            took_all.append(took)
            # Once /reload answered, a new connection gets the new config.
            fresh = http_request(gw.port, "GET", "/fixed")
            assert fresh.status == 200 and fresh.header("x-config") == f"v{version}", fresh.describe()
            assert took < 10, f"reload {version} took {took:.1f}s"
            time.sleep(0.4)  # load keeps running on the new generation
    finally:
        load.stop()
    assert not load.failures(), load.summary()
    assert load.count() > 100, f"the load was too thin to show anything: {load.summary()}"
    # Every version was served during the test, and the last one is in effect.
    seen = {o.header for o in load.outcomes}
    assert {"v0", "v5"} <= seen, seen
    assert http_request(gw.port, "GET", "/fixed").header("x-config") == "v5"
    # The old generations finished and left: only the 2 current workers remain.
    assert len(children_settle(gw, 2)) == 2, gw.children()
    assert gw.proc.poll() is None
    print(f"\nreloads under load: {load.summary()}; POST /reload took "
          + ", ".join(f"{t * 1000:.0f}" for t in took_all) + " ms")


@pytest.mark.timeout(60)
def test_sigterm_drain_under_load(upstream, gateway_factory):
    delay = 1.5
    gw = gateway_factory(versioned(upstream.url, 0, drain_delay=f"{delay}s", drain="10s"), workers=2)
    load = LoadClient(gw.port, threads=4).start()
    slow: dict = {}

    def slow_request():
        try:
            slow["resp"] = http_request(gw.port, "GET", "/slow?delay=2.5", timeout=15)
        except BaseException as error:
            slow["error"] = error

    time.sleep(0.5)
    in_flight = threading.Thread(target=slow_request)
    in_flight.start()
    upstream.wait_mark("slow-received", timeout=5)
    sigterm_at = time.monotonic()
    gw.signal(signal.SIGTERM)
    time.sleep(0.2)
    ready = admin(gw, "GET", "/readyz")
    assert ready.status == 503 and "draining" in ready.json()["reasons"], ready.describe()
    assert time.monotonic() - sigterm_at < delay - 0.5, "the readiness check came too late to mean anything"
    # The load balancer's view: /readyz fails, but connections are still accepted
    # until drain_delay has passed; a load balancer stops sending within it.
    time.sleep(max(0.0, sigterm_at + delay - 0.4 - time.monotonic()))
    before_close = load.count()
    load.stop()
    assert not load.failures(), load.summary()
    during_delay = [o for o in load.outcomes if o.at > sigterm_at + 0.2]
    assert len(during_delay) > 10, f"too little load during the delay: {load.summary()}"
    assert before_close > 50, load.summary()

    time.sleep(max(0.0, sigterm_at + delay + 0.5 - time.monotonic()))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gw.port), timeout=2).close()
    in_flight.join(15)
    assert "error" not in slow, f"the in-flight request failed during the drain: {slow['error']!r}"
    assert slow["resp"].status == 200, slow["resp"].describe()
    assert gw.wait(15) == 0, "the master did not exit 0 after the drain"
    print(f"\nSIGTERM drain under load: {load.summary()}")


@pytest.mark.timeout(60)
def test_websocket_outlives_a_reload_until_reload_drain(upstream, ws_upstream, gateway_factory):
    def config(version: int) -> dict:
        return {
            "server": {"timeouts": {"reload_drain": "3s"}},
            "clusters": {"ws": cluster(f"http://127.0.0.1:{ws_upstream.port}"), "main": cluster(upstream.url)},
            "routes": [route("ws", "ws", prefix="/ws"),
                       route("all", "main", prefix="/", response_headers={"set": {"X-Config": f"v{version}"}})],
        }

    gw = gateway_factory(config(0), workers=1)
    with connect(f"ws://127.0.0.1:{gw.port}/ws/chat", proxy=None, open_timeout=5, close_timeout=2,
                 compression=None) as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        gw.write_config(config(1))
        resp = admin(gw, "POST", "/reload")
        reloaded_at = time.monotonic()
        assert resp.status == 200, resp.describe()
        assert http_request(gw.port, "GET", "/fixed").header("x-config") == "v1"
        # The stream opened before the reload keeps going on the old worker...
        for i in range(5):
            ws.send(f"after {i}")
            assert ws.recv(timeout=5) == f"after {i}"
            time.sleep(0.2)
        assert len(gw.children()) == 2, "the old worker left while its WebSocket was open"
        # ...until the reload_drain deadline (3s) closes it.
        with pytest.raises(ConnectionClosed):
            while True:
                ws.send("ping")
                ws.recv(timeout=8)
                time.sleep(0.2)
        closed_after = time.monotonic() - reloaded_at
    assert 2.5 < closed_after < 7, f"the stream was closed {closed_after:.1f}s after the reload"
    assert len(children_settle(gw, 1)) == 1


@pytest.mark.timeout(60)
def test_invalid_config_leaves_the_old_one_serving(upstream, gateway_factory):
    gw = gateway_factory(versioned(upstream.url, 0), workers=1)
    workers = gw.wait_children(1)
    assert len(workers) == 1
    bad = versioned(upstream.url, 1)
    bad["clusters"]["main"]["lbb"] = "p2c"
    bad["routes"][0]["cluster"] = "mian"

    gw.write_config(bad)
    resp = admin(gw, "POST", "/reload")
    assert resp.status == 400, resp.describe()
    error = resp.json()["error"]
    assert error["code"] == "invalid_config" and error["generation"] == 1
    source = str(gw.config_path)
    assert any(line.startswith(f"{source}: clusters.main.lbb: unknown key") for line in error["errors"]), error
    assert any(line.startswith(f"{source}: routes[0].cluster: unknown cluster 'mian'") for line in error["errors"])
    assert len(error["errors"]) == 2, error["errors"]
    assert http_request(gw.port, "GET", "/fixed").header("x-config") == "v0"

    gw.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while gw.stderr().count("unknown cluster 'mian'") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    log = gw.stderr()
    assert log.count("clusters.main.lbb: unknown key") == 2, log  # once per attempt: every error is logged
    assert log.count("keeps serving the previous config") == 2, log
    assert http_request(gw.port, "GET", "/fixed").header("x-config") == "v0"
    assert gw.children() == workers, "a failed reload must not touch the running workers"

    # A config the loader accepts but the new workers cannot serve (a listener
    # address already taken) fails too, and nothing changes.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        moved = versioned(upstream.url, 2)
        moved["admin"] = {"address": f"127.0.0.1:{taken.getsockname()[1]}"}
        gw.write_config(moved)
        resp = admin(gw, "POST", "/reload")
        assert resp.status == 500, resp.describe()
        assert resp.json()["error"]["code"] == "reload_failed"
        assert "cannot listen on" in resp.json()["error"]["errors"][0]
    finally:
        taken.close()
    assert http_request(gw.port, "GET", "/fixed").header("x-config") == "v0"

    gw.write_config(versioned(upstream.url, 3))
    resp = admin(gw, "POST", "/reload")
    assert resp.status == 200 and resp.json()["generation"] == 2, resp.describe()
    assert http_request(gw.port, "GET", "/fixed").header("x-config") == "v3"


@pytest.mark.timeout(60)
def test_reload_adds_and_removes_listeners(upstream, gateway_factory):
    from support import free_port
    gw = gateway_factory(versioned(upstream.url, 0), workers=1)
    extra = free_port()
    config = versioned(upstream.url, 1)
    gw.write_config(config)
    text = gw.config_path.read_text().replace(
        "listeners:\n", f"listeners:\n- name: extra\n  address: 127.0.0.1:{extra}\n", 1)
    gw.config_path.write_text(text)
    assert admin(gw, "POST", "/reload").status == 200
    assert http_request(extra, "GET", "/fixed").header("x-config") == "v1"
    assert http_request(gw.port, "GET", "/fixed").header("x-config") == "v1"

    gw.write_config(versioned(upstream.url, 2))  # without the extra listener
    assert admin(gw, "POST", "/reload").status == 200
    assert len(children_settle(gw, 1)) == 1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", extra), timeout=2).close()
    assert http_request(gw.port, "GET", "/fixed").header("x-config") == "v2"


@pytest.mark.timeout(60)
def test_rate_limit_counts_survive_a_reload(upstream, gateway_factory):
    def config(version: int, slots: int = 1024) -> dict:
        limited = versioned(upstream.url, version)
        limited["server"] = {"rate_limit_slots": slots}
        limited["routes"][0]["rate_limits"] = [{"key": "route", "rate": "3/m", "burst": 3}]
        return limited

    gw = gateway_factory(config(0), workers=2)
    for _ in range(3):
        assert http_request(gw.port, "GET", "/fixed").status == 200
    assert http_request(gw.port, "GET", "/fixed").status == 429
    gw.write_config(config(1))
    assert admin(gw, "POST", "/reload").json()["generation"] == 2
    # Same table size: the shared table is kept, the route is still out of allowance.
    resp = http_request(gw.port, "GET", "/fixed")
    assert resp.status == 429, resp.describe()
    gw.write_config(config(2, slots=2048))
    assert admin(gw, "POST", "/reload").status == 200
    # A new size is a new table: counting starts again.
    resp = http_request(gw.port, "GET", "/fixed")
    assert resp.status == 200 and resp.header("x-config") == "v2", resp.describe()


@pytest.mark.timeout(60)
def test_sse_stream_in_flight_completes_across_a_reload(upstream, gateway_factory):
    from support import RawClient
    gw = gateway_factory(versioned(upstream.url, 0), workers=1)
    with RawClient(gw.port, timeout=10) as client:
        client.request("GET", "/sse?hold=1.5")
        head = client.read_head()
        assert head.status == 200 and head.header("x-config") == "v0"
        assert b"data: first" in client.read_chunk()
        gw.write_config(versioned(upstream.url, 1))
        resp = admin(gw, "POST", "/reload")
        assert resp.status == 200, resp.describe()
        assert http_request(gw.port, "GET", "/fixed").header("x-config") == "v1"
        # The old worker finishes the stream it was sending, byte for byte.
        rest = client.read_body(head, timeout=10)
        assert rest.complete and rest.body == b"id: 2\ndata: last\n\n"
        client.assert_closed(timeout=3)  # then closes: the retiring worker keeps nothing open
    assert len(children_settle(gw, 1)) == 1


def scrape(gw) -> dict:
    """/metrics parsed by prometheus_client: {(name, labels...): value}."""
    from prometheus_client.parser import text_string_to_metric_families
    resp = admin(gw, "GET", "/metrics")
    assert resp.status == 200 and resp.header("content-type").startswith("text/plain"), resp.describe()
    values = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def requests_total(values: dict, route: str = "all") -> float:
    return sum(v for (name, labels), v in values.items()
               if name == "fastgw_requests_total" and ("route", route) in labels)


@pytest.mark.timeout(60)
def test_metrics_carry_on_across_reloads_and_count_them(upstream, gateway_factory):
    gw = gateway_factory(versioned(upstream.url, 0), workers=2)
    for _ in range(20):
        assert http_request(gw.port, "GET", "/fixed").status == 200
    before = scrape(gw)
    assert requests_total(before) == 20
    assert before[("fastgw_config_reloads_total", (("result", "ok"),))] == 0
    assert before[("fastgw_workers", ())] == 2 and before[("fastgw_config_generation", ())] == 1

    gw.write_config(versioned(upstream.url, 1))
    assert admin(gw, "POST", "/reload").status == 200
    bad = versioned(upstream.url, 2)
    bad["routes"][0]["cluster"] = "nope"
    gw.write_config(bad)
    assert admin(gw, "POST", "/reload").status == 400
    for _ in range(10):
        assert http_request(gw.port, "GET", "/fixed").status == 200
    after = scrape(gw)
    # Counted by two generations of workers, summed: nothing lost, nothing twice.
    assert requests_total(after) == 30
    assert after[("fastgw_config_reloads_total", (("result", "ok"),))] == 1
    assert after[("fastgw_config_reloads_total", (("result", "failed"),))] == 1
    assert after[("fastgw_config_last_reload_successful", ())] == 0
    assert after[("fastgw_config_generation", ())] == 2 and after[("fastgw_workers", ())] == 2
    assert after[("fastgw_config_last_reload_timestamp_seconds", ())] > time.time() - 60
