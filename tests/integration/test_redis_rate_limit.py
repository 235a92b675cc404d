"""Redis-scoped rate limits through the real gateway and a real redis-server:
one limit held by two gateway processes, 429 answers and RateLimit headers,
and what happens when Redis dies, hangs or comes back (fail open by default,
fail closed by config, never a 5xx from the outage itself)."""
from __future__ import annotations

import asyncio
import re
import time

import pytest

from support import RawClient, assert_gateway_error, cluster, http_request, route, simple_config

SECRET = "pw-6f1c"


def redis_config(upstream_url: str, redis_url: str, *, rate: str, burst: int, key: str = "route",
                 **redis_extra) -> dict:
    config = simple_config(upstream_url)
    config["redis"] = {"url": redis_url, **redis_extra}
    config["routes"][0]["rate_limits"] = [{"key": key, "rate": rate, "burst": burst, "scope": "redis"}]
    return config


async def _flood(ports: list[int], seconds: float, conns_per_port: int, log: list) -> None:
    """Keep-alive GETs on every port until `seconds` pass; appends
    (time answered, port, status, head, time sent) to log."""
    request = b"GET /echo/flood HTTP/1.1\r\nHost: t\r\n\r\n"
    stop = time.monotonic() + seconds

    async def one(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (sent := time.monotonic()) < stop:
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                await reader.readexactly(length)
                log.append((time.monotonic(), port, int(head[9:12]), head, sent))
        finally:
            writer.close()

    await asyncio.gather(*(one(port) for port in ports for _ in range(conns_per_port)))


def flood(ports: list[int], seconds: float, conns_per_port: int = 8) -> list:
    log: list = []
    asyncio.run(_flood(ports, seconds, conns_per_port, log))
    return log


def statuses(log, since: float = 0.0, until: float = float("inf")) -> dict[int, int]:
    counts: dict[int, int] = {}
    for t, _, status, *_ in log:
        if since <= t < until:
            counts[status] = counts.get(status, 0) + 1
    return counts


async def _flood_until_denied(ports: list[int], conns_per_port: int, denials: int, log: list) -> None:
    """Keep-alive GETs on every port, each connection until it has been
    answered `denials` 429s: bounded by count, not by time, so a stalled
    process only makes the flood longer. Appends (port, status, head) to log."""
    request = b"GET /echo/flood HTTP/1.1\r\nHost: t\r\n\r\n"

    async def one(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        denied = 0
        try:
            while denied < denials:
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                await reader.readexactly(length)
                status = int(head[9:12])
                denied += status == 429
                log.append((port, status, head))
        finally:
            writer.close()

    await asyncio.gather(*(one(port) for port in ports for _ in range(conns_per_port)))


def header_value(head: bytes, name: bytes) -> bytes | None:
    found = re.search(rb"(?im)^" + re.escape(name) + rb": *([^\r]*)\r$", head)
    return found.group(1) if found else None


def get_limited(port: int) -> tuple[int, bytes | None]:
    """One GET on a new connection: (status, RateLimit-Remaining)."""
    with RawClient(port) as client:
        client.request("GET", "/echo/step")
        answer = client.read_response()
    return answer.status, answer.header("ratelimit-remaining")


@pytest.mark.timeout(90)
def test_two_gateways_sharing_one_redis_hold_one_limit(upstream, gateway_factory, redis_server):
    """One atomic limit across two gateway processes, proven by counts alone:
    rate 1/h refills nothing during the test, so exactly `burst` requests may
    pass, whatever the machine's load does to the timing. A generous Redis
    timeout keeps a busy machine from turning decisions into fail-open
    passes, and every 200 must carry the limit's headers (a fail-open pass
    has none), so no pass is counted that the limit did not decide."""
    burst = 600
    config = redis_config(upstream.url, redis_server.url, rate="1/h", burst=burst, timeout="2s")
    first, second = gateway_factory(config), gateway_factory(config)   # two processes, one worker each

    # In turn: the second gateway sees what the first one took, and back.
    steps = [get_limited(port) for port in (first.port, first.port, second.port, first.port, second.port)]
    assert steps == [(200, str(burst - n)) for n in range(1, 6)], steps

    # Then both at once, 8 connections each, until every connection has been denied twice.
    log: list = []
    asyncio.run(_flood_until_denied([first.port, second.port], 8, 2, log))
    assert {status for _, status, _ in log} == {200, 429}, {status for _, status, _ in log}
    unlimited = [head for _, _, head in log if header_value(head, b"RateLimit-Limit") != str(burst).encode()]
    assert not unlimited, f"{len(unlimited)} answers the limit did not decide (fail-open?): {unlimited[:2]}"
    admitted = [(port, int(header_value(head, b"RateLimit-Remaining"))) for port, status, head in log
                if status == 200]
    # Exactly the tokens left after the 5 steps, each handed out once across
    # both gateways: every remaining count from burst-6 down to 0 exactly once.
    assert len(admitted) == burst - len(steps), (len(admitted), burst - len(steps))
    assert sorted(remaining for _, remaining in admitted) == list(range(burst - len(steps))), \
        "a token was handed out twice or skipped"
    per_gateway = {port: sum(1 for p, _ in admitted if p == port) for port in (first.port, second.port)}
    assert all(per_gateway.values()), per_gateway   # both gateways took from the one bucket at once
    # One key in Redis for the route, named by route, position and key value.
    assert redis_server.command("KEYS", "fastgw:rl:*") == [b"fastgw:rl:all:0:all"]
    # The gateways' own count of fail-open passes agrees (sampled once a second: wait past one sample).
    time.sleep(1.5)
    for gw in (first, second):
        metrics = http_request(gw.admin_port, "GET", "/metrics").body.decode()
        fallbacks = re.findall(r'(?m)^fastgw_redis_limit_fallbacks_total\{[^}]*\} (\S+)$', metrics)
        assert fallbacks and all(float(v) == 0 for v in fallbacks), fallbacks


@pytest.mark.timeout(30)
def test_429_answer_and_rate_limit_headers(upstream, gateway_factory, redis_server):
    gw = gateway_factory(redis_config(upstream.url, redis_server.url, rate="1/m", burst=3, key="client_ip"))
    with RawClient(gw.port) as client:
        for remaining in (2, 1, 0):
            client.request("GET", "/echo/ok")
            ok = client.read_response()
            assert ok.status == 200
            assert ok.header("ratelimit-limit") == ok.header("x-ratelimit-limit") == "3"
            assert ok.header("ratelimit-remaining") == ok.header("x-ratelimit-remaining") == str(remaining)
            assert 0 < int(ok.header("ratelimit-reset")) <= 60 * (3 - remaining)
        client.request("GET", "/echo/denied")
        denied = client.read_response()
        err = assert_gateway_error(denied, 429, "rate_limited")
        assert "rate limit exceeded: 1 requests per minute per client_ip; retry in" in err["message"]
        assert 55 <= int(denied.header("retry-after")) <= 60   # one token a minute
        assert denied.header("ratelimit-remaining") == denied.header("x-ratelimit-remaining") == "0"
        client.request("GET", "/echo/after")           # the connection stays usable
        assert client.read_response().status == 429
    assert [r.target for r in upstream.requests].count("/echo/denied") == 0
    assert redis_server.command("KEYS", "fastgw:rl:*") == [b"fastgw:rl:all:0:127.0.0.1"]


@pytest.mark.timeout(90)
def test_redis_dies_traffic_flows_and_the_limit_returns_with_it(upstream, gateway_factory, redis_factory):
    server = redis_factory(extra_args=("--requirepass", SECRET))
    rate, burst = 50, 5
    gw = gateway_factory(redis_config(upstream.url, f"redis://:{SECRET}@127.0.0.1:{server.port}",
                                      rate=f"{rate}/s", burst=burst, log_interval="1s"))
    log: list = []
    marks: dict[str, float] = {}
    redis_time: dict[str, float] = {}   # the limiter's clock, read from the Redis it uses

    def read_redis_time(what: str) -> None:
        sec, usec = server.command("TIME", password=SECRET)
        redis_time[what] = int(sec) + int(usec) / 1e6

    async def scenario():
        read_redis_time("start")
        flooding = asyncio.ensure_future(_flood([gw.port], 7.0, 8, log))
        await asyncio.sleep(2.0)
        read_redis_time("killed")
        marks["killed"] = time.monotonic()
        server.stop()
        await asyncio.sleep(2.0)
        server.start()
        read_redis_time("restarted")
        marks["restarted"] = time.monotonic()
        await flooding
        read_redis_time("end")

    asyncio.run(scenario())

    def limited_passes(entries) -> int:
        """200s the limit decided (a fail-open pass carries no RateLimit headers)."""
        return sum(1 for entry in entries if entry[2] == 200 and b"RateLimit-Limit" in entry[3])

    before = statuses(log, until=marks["killed"])
    during = statuses(log, since=marks["killed"] + 0.1, until=marks["restarted"])
    after = statuses(log, since=marks["restarted"] + 1.5)    # redialled within the 1 s backoff cap
    assert set(statuses(log)) <= {200, 429}, statuses(log)   # no 5xx, before, during or after
    # Bounds in the limiter's own clock (a token bucket admits at most burst +
    # rate x span in any span): answered before the kill means decided by the
    # first Redis between its "start" and "killed" TIMEs.
    passed = limited_passes(e for e in log if e[0] < marks["killed"])
    assert before.get(429, 0) > 0, before
    assert passed <= burst + rate * (redis_time["killed"] - redis_time["start"]) + 1, (passed, redis_time)
    # Fail open: everything passes while Redis is gone, many times the limit.
    assert during.get(429, 0) == 0 and during[200] > 3 * rate * 1.9, during
    unlimited = [e[3] for e in log if marks["killed"] + 0.1 <= e[0] < marks["restarted"]]
    assert all(b"RateLimit-Limit" not in head for head in unlimited)
    # The limit applies again once Redis is back (a new, empty Redis: the
    # limit starts full): sent after the restart means decided by the new
    # Redis between its "restarted" and "end" TIMEs.
    passed = limited_passes(e for e in log if e[4] >= marks["restarted"])
    assert after.get(429, 0) > 0, after
    assert passed <= burst + rate * (redis_time["end"] - redis_time["restarted"]) + 1, (passed, redis_time)
    stderr = gw.stderr()
    assert re.search(rf"redis at 127\.0\.0\.1:{server.port} unavailable \([^)]*\): \d+ requests to route 'all' "
                     r"admitted without the limit in the last 1s", stderr), stderr
    assert "connected again" in stderr
    assert SECRET not in stderr and SECRET not in gw.stdout()


@pytest.mark.timeout(60)
def test_fail_closed_answers_503_and_other_routes_keep_serving(upstream, gateway_factory, redis_server):
    config = redis_config(upstream.url, redis_server.url, rate="100/s", burst=100, failure_mode="closed")
    config["routes"] = [route("free", "main", prefix="/free")] + config["routes"]
    config["routes"][1]["name"] = "limited"
    gw = gateway_factory(config)
    with RawClient(gw.port) as client:
        client.request("GET", "/echo/up")
        assert client.read_response().status == 200
        redis_server.stop()
        time.sleep(0.2)
        for _ in range(3):
            client.request("GET", "/echo/down")
            refused = client.read_response()
            err = assert_gateway_error(refused, 503, "rate_limit_unavailable")
            assert refused.header("retry-after") == "1"
            assert "rate limit store is unavailable" in err["message"]
        client.request("GET", "/free/x")
        assert client.read_response().status == 200
        redis_server.start()
        deadline = time.monotonic() + 5
        while True:
            client.request("GET", "/echo/back")
            answer = client.read_response()
            if answer.status == 200:
                break
            assert answer.status == 503 and time.monotonic() < deadline, answer.status
            time.sleep(0.1)
        assert answer.header("ratelimit-limit") == "100"


@pytest.mark.timeout(60)
def test_a_slow_redis_times_out_and_fails_open_quickly(upstream, gateway_factory, redis_server):
    gw = gateway_factory(redis_config(upstream.url, redis_server.url, rate="100/s", burst=100, timeout="50ms"))
    with RawClient(gw.port) as client:
        client.request("GET", "/echo/warm")
        assert client.read_response().header("ratelimit-limit") == "100"
        blocker = redis_server.send_only("DEBUG", "SLEEP", "1.5")
        try:
            time.sleep(0.1)
            waits = []
            for _ in range(5):
                started = time.monotonic()
                client.request("GET", "/echo/slow")
                answer = client.read_response()
                waits.append(time.monotonic() - started)
                assert answer.status == 200 and answer.header("ratelimit-limit") is None
        finally:
            blocker.close()
        assert max(waits) < 0.4, waits          # the first waits 50 ms, then at once: never 1.5 s
        time.sleep(1.6)
        client.request("GET", "/echo/again")
        assert client.read_response().header("ratelimit-limit") == "100"


@pytest.mark.timeout(30)
def test_two_workers_each_with_a_connection(upstream, gateway_factory, redis_server):
    gw = gateway_factory(redis_config(upstream.url, redis_server.url, rate="1/h", burst=4), workers=2)
    gw.wait_children(2)
    log = flood([gw.port], 1.0, conns_per_port=8)
    assert statuses(log)[200] == 4, statuses(log)
    # CLIENT LIST over a fresh connection lists that connection too: its
    # line is the one running `client|list` (Redis 7; `client` before).
    lines = redis_server.command("CLIENT", "LIST").decode().splitlines()
    others = [line for line in lines if not re.search(r"\bcmd=client(\|list)?\b", line)]
    assert len(lines) - len(others) == 1, lines
    assert len(others) == 2, others   # one pipelined connection per worker, no more


@pytest.mark.timeout(30)
def test_several_redis_limits_on_one_route_the_most_restrictive_answers(upstream, gateway_factory, redis_server):
    config = redis_config(upstream.url, redis_server.url, rate="100/s", burst=100)
    config["routes"][0]["rate_limits"].append(
        {"key": "header:X-Api-Key", "rate": "1/m", "burst": 2, "scope": "redis"})
    gw = gateway_factory(config)
    with RawClient(gw.port) as client:
        answers = []
        for key in ("a", "a", "a", "b"):
            client.request("GET", "/echo/x", headers=[("X-Api-Key", key)])
            answers.append(client.read_response())
    assert [a.status for a in answers] == [200, 200, 429, 200]
    # The per-key limit is the lower one: its state answers.
    assert [a.header("ratelimit-limit") for a in answers] == ["2", "2", "2", "2"]
    assert [a.header("ratelimit-remaining") for a in answers] == ["1", "0", "0", "1"]
    assert "per header:x-api-key" in answers[2].json()["error"]["message"]
    assert sorted(redis_server.command("KEYS", "fastgw:rl:*")) == [
        b"fastgw:rl:all:0:all", b"fastgw:rl:all:1:a", b"fastgw:rl:all:1:b"]


@pytest.mark.timeout(90)
def test_sliding_window_in_redis_admits_exactly_n_across_two_gateways(upstream, gateway_factory, redis_server):
    """algorithm: sliding_window with scope: redis, end to end: N per window
    across two gateway processes (N/h: the window outlasts the test)."""
    n = 300
    config = simple_config(upstream.url)
    config["redis"] = {"url": redis_server.url, "timeout": "2s"}
    config["routes"][0]["rate_limits"] = [
        {"key": "route", "rate": f"{n}/h", "algorithm": "sliding_window", "scope": "redis"}]
    first, second = gateway_factory(config), gateway_factory(config)
    log: list = []
    asyncio.run(_flood_until_denied([first.port, second.port], 6, 2, log))
    assert {status for _, status, _ in log} == {200, 429}
    assert {header_value(head, b"RateLimit-Limit") for _, _, head in log} == {str(n).encode()}, \
        "an answer the limit did not decide (fail-open?)"
    admitted = [int(header_value(head, b"RateLimit-Remaining")) for _, status, head in log if status == 200]
    assert sorted(admitted) == list(range(n)), "a request was admitted twice on one count, or one skipped"
    assert {port for port, status, _ in log if status == 200} == {first.port, second.port}
    assert len(upstream.requests) == n
