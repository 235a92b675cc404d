"""Prometheus metrics through the real gateway: figures summed over two
workers after known traffic, parsed with prometheus_client's parser; stream
gauges; bounded labels; counters that survive a worker's death."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import pytest
from websockets.sync.client import connect

from support import RawClient, cluster, free_port, http_request, route
from support.metrics import connections_on_each_worker, enable_dump, scrape

WORKERS = 2


def traffic_config(upstream_url: str, dead_url: str) -> dict:
    return {
        "clusters": {"users": cluster(upstream_url), "dead": cluster(dead_url)},
        "routes": [route("users", "users", prefix="/users"),
                   route("orders", "users", prefix="/orders", methods=["GET", "POST"]),
                   route("broken", "dead", prefix="/broken", retries="off"),  # one try each
                   # The upstream's behaviours, by the path's first segment.
                   route("slow", "users", prefix="/slow"), route("hang", "users", prefix="/hang"),
                   route("sse", "users", prefix="/sse")],
    }


async def _requests(port: int, plan: list[bytes], connections: int, workers: int = 1,
                    body_bytes: dict | None = None) -> tuple[list[int], int]:
    """Send every request of `plan` over keep-alive connections spread over
    `workers` workers (`connections` per worker); the statuses, and how many
    connections were opened (each answered one probe GET /users/probe first).
    `body_bytes`, when given, gets the body bytes of the 2xx answers (the
    upstream's: local replies are 4xx/5xx here) the client read, per first
    path segment ("users" for /users/...), probes included."""
    queue = list(plan)
    statuses: list[int] = []
    probes: list[int] = []
    conns, opened = await connections_on_each_worker(port, workers, connections, "/users/probe",
                                                     body_bytes=probes)
    if body_bytes is not None:
        body_bytes["users"] = body_bytes.get("users", 0) + sum(probes)

    async def one(reader, writer):
        try:
            while queue:
                request = queue.pop()
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                statuses.append(int(head[9:12]))
                if body_bytes is not None and 200 <= statuses[-1] < 300:
                    segment = request.split(b" ", 2)[1].split(b"/")[1].decode()
                    body_bytes[segment] = body_bytes.get(segment, 0) + length
        finally:
            writer.close()

    await asyncio.gather(*(one(*c) for c in conns))
    return statuses, opened


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def _post(path: str, body: bytes) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


@pytest.mark.timeout(60)
def test_figures_after_known_traffic_across_two_workers(upstream, gateway_factory, monkeypatch, tmp_path):
    dump = enable_dump(monkeypatch, tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    launched = time.time()
    gw = gateway_factory(traffic_config(upstream.url, dead), workers=WORKERS)
    workers = gw.wait_children(WORKERS)
    assert len(workers) == WORKERS
    body = b"x" * 1000
    plan = ([_get(f"/users/{i}") for i in range(120)]
            + [_post("/orders", body) for _ in range(30)]
            + [b"DELETE /orders/1 HTTP/1.1\r\nHost: t\r\n\r\n"] * 5             # 405
            + [_get(f"/no/such/path/{i}") for i in range(25)]                    # 404
            + [b"PROPFIND /users/pot HTTP/1.1\r\nHost: t\r\n\r\n"] * 3       # "other" method
            + [_get("/broken/x")] * 4)                                           # 502 connect
    received: dict[str, int] = {}
    statuses, opened = asyncio.run(_requests(gw.port, plan, connections=6, workers=WORKERS,
                                             body_bytes=received))
    assert len(statuses) == len(plan)
    # Both workers served: each process stamps its own request-id prefix.
    prefixes = {r.header("x-request-id").rsplit("-", 1)[0] for r in upstream.requests
                if r.path != "/users/probe"}
    assert len(prefixes) == WORKERS
    probes = opened
    time.sleep(1.3)  # pool gauges are sampled once a second
    m = scrape(gw, dump)

    assert m.get_value("fastgw_requests_total", route="users", method="GET", status="2xx") == 120 + probes
    assert m.get_value("fastgw_requests_total", route="users", method="other", status="2xx") == 3
    assert m.get_value("fastgw_requests_total", route="orders", method="POST", status="2xx") == 30
    assert m.get_value("fastgw_requests_total", route="(none)", method="DELETE", status="4xx") == 5
    assert m.get_value("fastgw_requests_total", route="(none)", method="GET", status="4xx") == 25
    assert m.get_value("fastgw_requests_total", route="broken", method="GET", status="5xx") == 4
    assert m.total("fastgw_requests_total") == len(plan) + probes
    assert m.get_value("fastgw_request_bytes_total", route="orders") == 30 * len(body)
    # The echo upstream's bodies: what the upstream sent is what the metrics say went out.
    # Upstream answers only (no local error reply on this route): every body
    # byte the client read is one the metric counted, no more.
    assert received["users"] > 123 * 50
    assert m.get_value("fastgw_response_bytes_total", route="users") == received["users"]
    assert m.get_value("fastgw_response_bytes_total", route="orders") == received["orders"]
    assert m.get_value("fastgw_response_bytes_total", route="broken") == 0   # local 502s only
    assert m.get_value("fastgw_request_duration_seconds_count", route="users") == 123 + probes
    assert m.get_value("fastgw_request_duration_seconds_bucket", route="users", le="+Inf") == 123 + probes
    assert m.get_value("fastgw_upstream_duration_seconds_count", route="orders") == 30
    assert 0 < m.get_value("fastgw_request_duration_seconds_sum", route="users") < 123 + probes

    ep = upstream.url.removeprefix("http://")
    assert m.get_value("fastgw_upstream_requests_total", cluster="users", endpoint=ep) == 153 + probes
    dead_ep = dead.removeprefix("http://")
    assert m.get_value("fastgw_upstream_errors_total", cluster="dead", endpoint=dead_ep, kind="connect") == 4
    assert m.get_value("fastgw_upstream_errors_total", cluster="users", endpoint=ep, kind="connect") == 0
    created = m.get_value("fastgw_upstream_connections_opened_total", cluster="users", endpoint=ep)
    assert 1 <= created <= 12 * 2
    assert m.get_value("fastgw_upstream_connections", cluster="users", endpoint=ep, state="busy") == 0
    assert m.get_value("fastgw_upstream_connections", cluster="users", endpoint=ep, state="idle") == created

    assert m.get_value("fastgw_requests_in_flight") == 0
    assert m.get_value("fastgw_client_connections_active") == 0
    assert m.get_value("fastgw_client_connections_total") == opened + 1  # + the harness's readiness probe
    assert m.get_value("fastgw_workers") == WORKERS
    uptime = m.get_value("fastgw_uptime_seconds")
    assert 0 < uptime <= time.time() - launched, (uptime, time.time() - launched)
    assert launched <= m.get_value("fastgw_start_time_seconds") <= time.time()
    assert len(m.matching("fastgw_build_info")) == 1
    # Both workers' resources, summed: each has at least tens of MiB resident and a few fds.
    assert m.get_value("process_resident_memory_bytes") > WORKERS * 10 * 2**20
    assert m.get_value("process_open_fds") >= WORKERS * 4
    # CPU time is read in clock ticks (10 ms): two workers that served a few
    # hundred requests may not have used one yet. More traffic, bounded.
    deadline = time.monotonic() + 20
    while m.get_value("process_cpu_seconds_total") == 0 and time.monotonic() < deadline:
        for _ in range(50):
            http_request(gw.port, "GET", "/users/cpu")
        m = scrape(gw, dump)
    # Never more than the workers really used (read from /proc after the scrape).
    ticks = os.sysconf("SC_CLK_TCK")
    used = sum(sum(int(v) for v in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[11:13])
               for pid in workers) / ticks
    assert 0 < m.get_value("process_cpu_seconds_total") <= used + 0.01, used


@pytest.mark.timeout(60)
def test_duration_histogram_buckets_and_in_flight(upstream, gateway_factory, monkeypatch, tmp_path):
    dump = enable_dump(monkeypatch, tmp_path)
    gw = gateway_factory(traffic_config(upstream.url, upstream.url), workers=WORKERS)
    started = time.monotonic()
    assert http_request(gw.port, "GET", "/slow?delay=0.3").status == 200
    # The gateway's own figure lies between the upstream's delay and what the
    # client saw: on a busy machine the latter may be well past 0.5 s, so the
    # buckets are checked against it rather than against a fixed guess.
    elapsed = time.monotonic() - started
    slow = RawClient(gw.port)
    slow.request("GET", "/hang")
    assert upstream.wait_for(lambda: any(r.path == "/hang" for r in upstream.heads))
    m = scrape(gw, dump)
    assert m.get_value("fastgw_requests_in_flight") == 1
    assert m.get_value("fastgw_client_connections_active") == 1
    for family in ("fastgw_request_duration_seconds", "fastgw_upstream_duration_seconds"):
        for bound in ("0.1", "0.25"):  # below the 0.3 s delay: empty
            assert m.get_value(f"{family}_bucket", route="slow", le=bound) == 0, (family, bound)
        for bound in ("0.5", "1", "2.5", "5", "10", "30", "+Inf"):  # cumulative: 1 from elapsed on
            if float(bound) >= elapsed:
                assert m.get_value(f"{family}_bucket", route="slow", le=bound) == 1, (family, bound, elapsed)
        assert m.get_value(f"{family}_count", route="slow") == 1
    assert 0.3 <= m.get_value("fastgw_request_duration_seconds_sum", route="slow") <= elapsed
    slow.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = scrape(gw, dump)
        if m.get_value("fastgw_requests_in_flight") == 0 and m.get_value("fastgw_client_connections_active") == 0:
            break
        time.sleep(0.05)
    assert m.get_value("fastgw_requests_in_flight") == 0
    assert m.get_value("fastgw_client_connections_active") == 0
    # The client went away before a response: status "none".
    assert m.get_value("fastgw_requests_total", route="hang", method="GET", status="none") == 1


@pytest.mark.timeout(60)
def test_unknown_paths_add_no_series(upstream, gateway_factory, monkeypatch, tmp_path):
    dump = enable_dump(monkeypatch, tmp_path)
    gw = gateway_factory(traffic_config(upstream.url, upstream.url))
    http_request(gw.port, "GET", "/nothing-here")
    http_request(gw.port, "GET", "/users/probe")  # the series the connection probes below add
    before = set(scrape(gw, dump))
    plan = [_get(f"/random/{os.urandom(8).hex()}?q={i}") for i in range(200)]
    webdav = ["PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "PURGE", "LINK", "REPORT"]
    plan += [f"{webdav[i % len(webdav)]} /x/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(50)]
    statuses, opened = asyncio.run(_requests(gw.port, plan, connections=4))
    assert set(statuses) <= {404}
    after = scrape(gw, dump)
    new = set(after) - before
    assert new == {("fastgw_requests_total",
                    frozenset({("route", "(none)"), ("method", "other"), ("status", "4xx")}))}, new
    assert after.get_value("fastgw_requests_total", route="(none)", method="GET", status="4xx") == 201


@pytest.mark.timeout(60)
def test_sse_stream_gauges(upstream, gateway_factory, monkeypatch, tmp_path):
    dump = enable_dump(monkeypatch, tmp_path)
    gw = gateway_factory(traffic_config(upstream.url, upstream.url), workers=WORKERS)
    clients = []
    for _ in range(3):
        client = RawClient(gw.port)
        client.request("GET", "/sse?hold=20")
        assert client.read_head(timeout=5).status == 200
        clients.append(client)
    m = scrape(gw, dump)
    assert m.get_value("fastgw_streams_active", kind="sse") == 3
    assert m.get_value("fastgw_streams_opened_total", kind="sse") == 3
    assert m.get_value("fastgw_streams_closed_total", kind="sse") == 0
    for client in clients:
        client.close()
    deadline = time.monotonic() + 5
    while scrape(gw, dump).get_value("fastgw_streams_active", kind="sse") != 0:
        assert time.monotonic() < deadline, "SSE streams still counted active after their clients left"
        time.sleep(0.05)
    m = scrape(gw, dump)
    assert m.get_value("fastgw_streams_closed_total", kind="sse") == 3
    assert m.get_value("fastgw_streams_opened_total", kind="websocket") == 0


@pytest.mark.timeout(60)
def test_websocket_stream_gauges(upstream, ws_upstream, gateway_factory, monkeypatch, tmp_path):
    dump = enable_dump(monkeypatch, tmp_path)
    config = {"clusters": {"ws": cluster(f"http://127.0.0.1:{ws_upstream.port}")},
              "routes": [route("ws", "ws", prefix="/ws")]}
    gw = gateway_factory(config, workers=WORKERS)
    with connect(f"ws://127.0.0.1:{gw.port}/ws/a", proxy=None, open_timeout=5, close_timeout=5) as one, \
            connect(f"ws://127.0.0.1:{gw.port}/ws/b", proxy=None, open_timeout=5, close_timeout=5) as two:
        one.send("hi")
        assert one.recv(timeout=5) == "hi"
        two.send("ho")
        assert two.recv(timeout=5) == "ho"
        m = scrape(gw, dump)
        assert m.get_value("fastgw_streams_active", kind="websocket") == 2
        assert m.get_value("fastgw_requests_total", route="ws", method="GET", status="1xx") == 2
    deadline = time.monotonic() + 5
    while True:
        m = scrape(gw, dump)
        if m.get_value("fastgw_streams_closed_total", kind="websocket") == 2:
            break
        assert time.monotonic() < deadline, "WebSocket tunnels not counted closed"
        time.sleep(0.05)
    assert m.get_value("fastgw_streams_active", kind="websocket") == 0
    assert m.get_value("fastgw_streams_opened_total", kind="websocket") == 2


@pytest.mark.timeout(60)
def test_a_dead_workers_counters_stay_and_its_gauges_clear(upstream, gateway_factory, monkeypatch, tmp_path):
    dump = enable_dump(monkeypatch, tmp_path)
    gw = gateway_factory(traffic_config(upstream.url, upstream.url), workers=1)
    for _ in range(7):
        assert http_request(gw.port, "GET", "/users/x").status == 200
    sse = RawClient(gw.port)
    sse.request("GET", "/sse?hold=20")
    assert sse.read_head(timeout=5).status == 200
    [worker] = gw.wait_children(1)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        kids = [k for k in gw.children() if k != worker]
        if kids:
            break
        assert time.monotonic() < deadline, "worker was not restarted"
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while http_request(gw.port, "GET", "/users/after").status != 200:
        assert time.monotonic() < deadline
    # The probe's connection closes on the client side first: wait until the
    # new worker has seen it close (bounded) before reading its gauges.
    deadline = time.monotonic() + 10
    m = scrape(gw, dump)
    while m.get_value("fastgw_client_connections_active") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        m = scrape(gw, dump)
    # Counters went on from the dead worker's figures (its slot was reused).
    assert m.get_value("fastgw_requests_total", route="users", method="GET", status="2xx") == 8
    # Its open stream and connection died with it: closed, not active forever.
    assert m.get_value("fastgw_streams_active", kind="sse") == 0
    assert m.get_value("fastgw_streams_closed_total", kind="sse") == 1
    assert m.get_value("fastgw_requests_in_flight") == 0
    assert m.get_value("fastgw_client_connections_active") == 0
    sse.close()


@pytest.mark.timeout(60)
def test_rate_limit_decisions_and_circuit_state(upstream, gateway_factory, monkeypatch, tmp_path):
    dump = enable_dump(monkeypatch, tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    config = {
        "clusters": {"users": cluster(upstream.url),
                     "dead": cluster(dead, circuit_breaker={"failures": 2, "open_for": "30s"})},
        "routes": [route("limited", "users", prefix="/limited",
                         rate_limits=[{"key": "route", "rate": "1/m", "burst": 3}]),
                   route("broken", "dead", prefix="/broken")],
    }
    gw = gateway_factory(config, workers=1)
    statuses = [http_request(gw.port, "GET", "/limited/x").status for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    for _ in range(3):
        http_request(gw.port, "GET", "/broken/x")
    time.sleep(1.3)  # breaker state is sampled once a second
    m = scrape(gw, dump)
    assert m.get_value("fastgw_rate_limit_decisions_total", route="limited", result="allowed") == 3
    assert m.get_value("fastgw_rate_limit_decisions_total", route="limited", result="denied") == 2
    assert m.get_value("fastgw_requests_total", route="limited", method="GET", status="4xx") == 2
    assert m.get_value("fastgw_circuit_state", cluster="dead", state="open") == 1
    assert m.get_value("fastgw_circuit_state", cluster="dead", state="closed") == 0


@pytest.mark.timeout(30)
def test_metrics_off(upstream, gateway_factory, monkeypatch, tmp_path):
    dump = enable_dump(monkeypatch, tmp_path)
    config = traffic_config(upstream.url, upstream.url)
    config["metrics"] = {"enabled": False}
    gw = gateway_factory(config)
    assert http_request(gw.port, "GET", "/users/x").status == 200
    gw.signal(signal.SIGUSR1)
    time.sleep(0.5)
    assert not dump.exists()
    assert "metrics are off" in gw.stderr()
    assert http_request(gw.port, "GET", "/users/x").status == 200


@pytest.mark.timeout(60)
def test_every_family_name_reads_the_same_to_openmetrics_parsers(upstream, gateway_factory, redis_server):
    """/metrics of a gateway that declares every kind of family (circuit,
    outlier, health, retries, concurrency, local and Redis limits, streams,
    reloads): no name clash once counters lose `_total`, no reserved suffix,
    the standard process_* names, and the status label's documented values."""
    config = {
        "redis": {"url": redis_server.url},
        "clusters": {"users": cluster(upstream.url, circuit_breaker={"failures": 3},
                                      outlier_detection={"consecutive_5xx": 3},
                                      health_check={"path": "/fixed", "interval": "1s"},
                                      concurrency={"max_in_flight": 50})},
        "routes": [route("local", "users", prefix="/local",
                         rate_limits=[{"key": "route", "rate": "1000/s"}]),
                   route("shared", "users", prefix="/shared",
                         rate_limits=[{"key": "route", "rate": "1000/s", "scope": "redis"}],
                         concurrency={"max_in_flight": 10}),
                   route("all", "users", prefix="/")],
    }
    gw = gateway_factory(config)
    for path in ("/local/a", "/shared/b", "/status/404", "/status/500"):
        http_request(gw.port, "GET", path)
    time.sleep(1.2)   # policy figures are copied once a second
    from support.metrics import check_names
    text = http_request(gw.admin_port, "GET", "/metrics").body.decode()
    names = {f.name for f in check_names(text)}
    for standard in ("process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds",
                     "process_start_time_seconds"):
        assert standard in names, standard
    assert not {n for n in names if n.startswith("fastgw_process_")}
    assert {"fastgw_client_connections", "fastgw_client_connections_active",
            "fastgw_upstream_connections", "fastgw_upstream_connections_opened"} <= names
    statuses = set(re.findall(r'fastgw_requests_total\{[^}]*status="([^"]+)"', text))
    assert statuses <= {"none", "1xx", "2xx", "3xx", "4xx", "5xx"} and {"2xx", "4xx", "5xx"} <= statuses
