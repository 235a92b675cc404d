"""Local rate limiting through the real gateway: one limit shared by all
workers (shared memory), 429 answers with Retry-After and RateLimit-*
headers, and the limit's state on admitted responses."""
from __future__ import annotations

import asyncio
import time

import pytest

from support import RawClient, assert_gateway_error, simple_config

RATE = 250     # per second
BURST = 25
FLOOD_SECONDS = 4.0
CONNECTIONS = 32


def limited_config(upstream_url: str, **limit) -> dict:
    config = simple_config(upstream_url)
    config["routes"][0]["rate_limits"] = [
        {"key": "route", "rate": f"{RATE}/s", "burst": BURST, **limit}]
    return config


def tokens_lost_to_stalls(times: list[float], start: float, end: float) -> float:
    """Tokens the bucket refilled while nobody asked for them, from the times
    the flood's responses came back. On a busy machine the client (or the
    gateway) stalls now and then; the bucket holds at most BURST, so a stall
    of g seconds wastes RATE * g - BURST tokens, and the idle stretch before
    the first and after the last answer wastes all its refill (the bucket is
    full at the start). Without this the lower bound measures the machine's
    luck, not the limiter."""
    if not times:
        return RATE * (end - start)
    times = sorted(times)
    lost = RATE * (times[0] - start) + RATE * max(0.0, end - times[-1])
    for before, after in zip(times, times[1:]):
        lost += max(0.0, RATE * (after - before) - BURST)
    return lost


async def flood(port: int, seconds: float, times: list[float] | None = None) -> tuple[dict[int, int], float]:
    counts: dict[int, int] = {}
    request = b"GET /echo/flood HTTP/1.1\r\nHost: t\r\n\r\n"
    start = time.monotonic()
    stop = start + seconds

    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < stop:
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                counts[status] = counts.get(status, 0) + 1
                if times is not None:
                    times.append(time.monotonic())
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(CONNECTIONS)))
    return counts, time.monotonic() - start


@pytest.mark.timeout(60)
def test_one_limit_holds_across_two_workers(upstream, gateway_factory):
    gw = gateway_factory(limited_config(upstream.url), workers=2)
    gw.wait_children(2)
    times: list[float] = []
    started = time.monotonic()
    counts, elapsed = asyncio.run(flood(gw.port, FLOOD_SECONDS, times))
    assert set(counts) <= {200, 429}, counts
    expected = BURST + RATE * elapsed
    lost = tokens_lost_to_stalls(times, started, started + elapsed)
    # Requests spread over both workers, yet admissions follow the one limit:
    # never more than it allows (two separate limits would admit twice as
    # many), and no fewer than it allows minus what stalls wasted.
    assert counts[200] <= expected * 1.02 + 2, (counts, elapsed, expected)
    assert counts[200] >= (expected - lost) * 0.98 - 2, (counts, elapsed, expected, lost)
    assert counts.get(429, 0) > counts[200], "the flood never exceeded the limit"


@pytest.mark.timeout(30)
def test_429_answer_and_rate_limit_headers(upstream, gateway_factory):
    gw = gateway_factory(limited_config(upstream.url))
    with RawClient(gw.port) as client:
        client.request("GET", "/echo/first")
        ok = client.read_response()
        assert ok.status == 200
        assert ok.header("ratelimit-limit") == str(BURST)
        assert ok.header("x-ratelimit-limit") == str(BURST)
        assert int(ok.header("ratelimit-remaining")) == BURST - 1
        admitted = 0
        for _ in range(BURST * 4):
            client.request("GET", "/echo/more")
            resp = client.read_response()
            if resp.status == 429:
                break
            admitted += 1
        else:
            pytest.fail("no 429 after twice the burst")
        err = assert_gateway_error(resp, 429, "rate_limited")
        assert int(resp.header("retry-after")) >= 1
        assert resp.header("ratelimit-remaining") == "0"
        assert resp.header("x-ratelimit-remaining") == "0"
        assert "limit" in err["message"]
        # The connection stays usable after a 429.
        time.sleep(1.1)
        client.request("GET", "/echo/after")
        assert client.read_response().status == 200
    # The denied request never reached the upstream.
    assert [r.target for r in upstream.requests].count("/echo/more") == admitted
