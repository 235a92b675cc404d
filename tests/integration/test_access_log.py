"""The access log through the real gateway: one JSON line per request with
the documented fields, redaction of configured headers and query
parameters, sampling, flushing on a timer and at exit, stdout, and lines
from two workers that never interleave."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from support import RawClient, free_port, http_request, simple_config

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
FIELDS = {"time", "request_id", "trace_id", "client_ip", "method", "path", "route", "status", "bytes_in",
          "bytes_out", "duration_ms", "upstream_ms", "upstream", "retries", "rate_limit", "headers"}


def _lines(path, count, timeout=5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines()]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _log_config(upstream_url, path, **extra) -> dict:
    config = simple_config(upstream_url)
    config["access_log"] = {"path": str(path), "flush_interval": "100ms", **extra}
    return config


@pytest.mark.timeout(30)
def test_line_content_and_redaction(upstream, gateway_factory, tmp_path):
    path = tmp_path / "access.log"
    config = _log_config(upstream.url, path, headers=["user-agent", "authorization", "cookie"],
                         redact_query=["token", "sig"])
    config["routes"][0]["rate_limits"] = [{"key": "route", "rate": "1/m", "burst": 100}]
    dead = f"http://127.0.0.1:{free_port()}"
    config["clusters"]["dead"] = {"endpoints": [dead]}
    config["routes"].insert(0, {"name": "broken", "match": {"prefix": "/broken"}, "cluster": "dead"})
    gw = gateway_factory(config)
    resp = http_request(gw.port, "GET", "/echo/a?token=s3cret&page=2&sig=xyz",
                        [("User-Agent", "probe/1"), ("Authorization", "Bearer hunter2"),
                         ("Cookie", "session=abc"), ("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01")])
    assert resp.status == 200
    assert http_request(gw.port, "POST", "/echo/b", body=b"x" * 300).status == 200
    assert http_request(gw.port, "GET", "/broken/c").status == 502
    first, post, broken = _lines(path, 3)
    assert set(first) == FIELDS
    assert first["request_id"] == resp.header("x-request-id")
    assert first["trace_id"] == TRACE
    assert first["client_ip"] == "127.0.0.1"
    assert (first["method"], first["route"], first["status"]) == ("GET", "all", 200)
    assert first["path"] == "/echo/a?token=REDACTED&page=2&sig=REDACTED"
    assert first["headers"] == {"user-agent": "probe/1", "authorization": "REDACTED", "cookie": "REDACTED"}
    assert first["bytes_out"] == len(resp.body)
    assert first["upstream"] == upstream.url.removeprefix("http://")
    assert 0 < first["upstream_ms"] <= first["duration_ms"] < 5000
    assert first["retries"] == 0
    assert first["rate_limit"] == "allowed"
    assert time.strftime("%Y-%m-%dT", time.gmtime()) in first["time"] and first["time"].endswith("Z")
    assert (post["method"], post["bytes_in"], post["status"]) == ("POST", 300, 200)
    assert len(post["trace_id"]) == 32 and post["trace_id"] != TRACE   # the trace the gateway started
    assert (broken["route"], broken["status"], broken["rate_limit"]) == ("broken", 502, None)
    assert broken["upstream"] == dead.removeprefix("http://")
    raw = path.read_text()
    for secret in ("s3cret", "xyz", "hunter2", "session=abc"):
        assert secret not in raw


@pytest.mark.timeout(30)
def test_local_replies_are_logged(upstream, gateway_factory, tmp_path):
    path = tmp_path / "access.log"
    config = _log_config(upstream.url, path)
    config["routes"][0]["match"] = {"prefix": "/api"}
    gw = gateway_factory(config)
    assert http_request(gw.port, "GET", "/nowhere?token=1").status == 404
    [line] = _lines(path, 1)
    assert (line["route"], line["status"], line["upstream"], line["upstream_ms"]) == (None, 404, None, None)
    assert line["path"] == "/nowhere?token=REDACTED"


@pytest.mark.timeout(30)
def test_flushed_at_exit(upstream, gateway_factory, tmp_path):
    path = tmp_path / "access.log"
    # A witness with the default 1 s interval, started first: two of its
    # flushes after the 1h gateway's traffic prove that a full default
    # interval went by (timed by the same code), so a gateway that ignored
    # `flush_interval` would have written by then. No sleep to guess.
    witness_path = tmp_path / "witness.log"
    witness = gateway_factory(_log_config(upstream.url, witness_path, flush_interval="1s"))
    gw = gateway_factory(_log_config(upstream.url, path, flush_interval="1h"))
    for _ in range(5):
        assert http_request(gw.port, "GET", "/echo").status == 200
    for flushes in (1, 2):
        assert http_request(witness.port, "GET", "/echo/witness").status == 200
        assert len(_lines(witness_path, flushes, timeout=10)) == flushes
    assert not path.exists() or path.read_text() == "", "written before the flush interval"
    assert gw.stop() == 0
    assert len(_lines(path, 5, timeout=0)) == 5


async def _flood(port, requests, connections):
    async def one(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(n):
            writer.write(b"GET /echo/flood HTTP/1.1\r\nHost: t\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.close()
    await asyncio.gather(*(one(requests // connections) for _ in range(connections)))


@pytest.mark.timeout(60)
def test_sampling(upstream, gateway_factory, tmp_path):
    path = tmp_path / "access.log"
    gw = gateway_factory(_log_config(upstream.url, path, sampling=0.5))
    asyncio.run(_flood(gw.port, 800, 8))
    gw.stop()
    count = len(_lines(path, 800, timeout=0))
    # Binomial(800, 0.5): sd ~14; +-6 sd is far outside chance, well inside "not 0 or all".
    assert 316 <= count <= 484, count


async def _flood_both_workers(port, per_connection, per_worker):
    """Keep-alive connections, `per_worker` to each of two workers (told apart
    by the request-id prefix each process stamps), then all send at once."""
    by_worker: dict[bytes, list] = {}
    spare = []
    for _ in range(400):
        if len(by_worker) == 2 and all(len(c) >= per_worker for c in by_worker.values()):
            break
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /echo/probe HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        prefix = head.lower().split(b"x-request-id: ")[1].split(b"-")[0]
        conns = by_worker.setdefault(prefix, [])
        (conns if len(conns) < per_worker else spare).append((reader, writer))
    assert len(by_worker) == 2, "connections never reached the second worker"

    async def one(reader, writer):
        for _ in range(per_connection):
            writer.write(b"GET /echo/flood HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * 300 + b"\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.close()
    conns = [c for group in by_worker.values() for c in group]
    await asyncio.gather(*(one(*c) for c in conns))
    for _, writer in spare:
        writer.close()
    return sum(len(g) for g in by_worker.values()) + len(spare)


@pytest.mark.timeout(60)
def test_two_workers_lines_never_interleave_and_stdout(upstream, gateway_factory, tmp_path):
    path = tmp_path / "access.log"
    gw = gateway_factory(_log_config(upstream.url, path, headers=["x-pad"]), workers=2)
    gw.wait_children(2)
    probes = asyncio.run(_flood_both_workers(gw.port, 100, 6))
    gw.stop()
    lines = _lines(path, 1200 + probes, timeout=0)  # json.loads of every line: none is torn
    floods = [line for line in lines if line["path"] == "/echo/flood"]
    assert len(floods) == 1200 and len(lines) == 1200 + probes
    assert all(line["headers"] == {"x-pad": "p" * 300} for line in floods)
    assert len({line["request_id"] for line in lines}) == len(lines)
    assert len({line["request_id"].rsplit("-", 1)[0] for line in floods}) == 2

    config = simple_config(upstream.url)
    config["access_log"] = {"enabled": True}   # path: stdout
    gw2 = gateway_factory(config, workers=2)
    with RawClient(gw2.port) as client:
        for _ in range(3):
            client.request("GET", "/echo/out")
            assert client.read_response().status == 200
    gw2.stop()
    out = [json.loads(line) for line in gw2.stdout().splitlines() if line.startswith("{")]
    assert [line["path"] for line in out] == ["/echo/out"] * 3


@pytest.mark.timeout(30)
def test_off_by_default(upstream, gateway_factory, tmp_path):
    gw = gateway_factory(simple_config(upstream.url))
    assert http_request(gw.port, "GET", "/echo").status == 200
    gw.stop()
    assert gw.stdout().strip() == ""
