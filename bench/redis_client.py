#!/usr/bin/env python3
"""fastgw's Redis client against redis-py's asyncio client, in one run.

Both run the rate-limit script (fastgw/redis/ratelimit_lua.py) by EVALSHA
with a limit that never triggers, from N concurrent callers on one uvloop
loop, against one local redis-server (started here on a free port unless
--port is given), for --seconds each after a short warm-up. Printed per
client: ops/s, p50 and p99 latency in ms; then the ratio.

- fastgw:        RedisClient.evalsha (awaitable: a Future per call), one
                 connection, commands of concurrent callers pipelined.
- fastgw-cb:     RedisClient.send with a callback, as the gateway uses it.
- redis-py:      redis.asyncio.Redis.evalsha (hiredis parser when installed),
                 its default connection pool: one connection per concurrent
                 caller.

Usage: bench/redis_client.py [--callers 64] [--seconds 3] [--port PORT]
Needs: hiredis, redis>=5 (pip install '.[bench]'), uvloop, redis-server.
Bounded: each client runs --seconds (default 3) plus 0.5 s warm-up.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastgw.config.model import RateLimit  # noqa: E402
from fastgw.policy.redis_limit import script_args  # noqa: E402
from fastgw.redis import RedisClient  # noqa: E402
from fastgw.redis.ratelimit_lua import SOURCE  # noqa: E402

WARMUP = 0.5
# 1e8/s: never triggers, but every call runs the whole script (GET, math, SET PX).
ARGS = list(script_args(RateLimit(key=("client_ip",), requests=1e8, per=1.0, burst=1000)))
KEYS = 1000   # distinct keys, like distinct client addresses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, int]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


async def measure(call, callers: int, seconds: float) -> tuple[float, float, float]:
    """(ops/s, p50 ms, p99 ms) of `await call(i)` from `callers` loops."""
    latencies: list[float] = []

    async def caller(index: int, stop: float, record: bool):
        n = index
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                return
            await call(n % KEYS)
            if record:
                latencies.append(time.perf_counter() - t0)
            n += callers

    await asyncio.gather(*(caller(i, time.perf_counter() + WARMUP, False) for i in range(callers)))
    started = time.perf_counter()
    await asyncio.gather(*(caller(i, started + seconds, True) for i in range(callers)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return (len(latencies) / elapsed, latencies[len(latencies) // 2] * 1e3,
            latencies[int(len(latencies) * 0.99)] * 1e3)


async def run(port: int, callers: int, seconds: float) -> dict[str, tuple[float, float, float]]:
    loop = asyncio.get_running_loop()
    keys = [b"fastgw:rl:bench:0:10.0.%d.%d" % (i // 256, i % 256) for i in range(KEYS)]
    results = {}

    client = RedisClient(loop, port=port, timeout=5.0)
    script = client.register(SOURCE)
    client.start()
    while not client.connected:
        await asyncio.sleep(0.01)

    async def ours(i):
        reply = await client.evalsha(script, [keys[i]], ARGS)
        assert reply[0] == 1

    commands = [script.command([key], ARGS) for key in keys]

    async def ours_callback(i):
        future = loop.create_future()
        client.send(commands[i], _resolve, future, script)
        reply = await future
        assert reply[0] == 1

    import redis.asyncio as aioredis
    redispy = aioredis.Redis(host="127.0.0.1", port=port, max_connections=callers + 4)
    sha = await redispy.script_load(SOURCE)

    async def theirs(i):
        reply = await redispy.evalsha(sha, 1, keys[i], *ARGS)
        assert reply[0] == 1

    results["fastgw"] = await measure(ours, callers, seconds)
    results["redis-py"] = await measure(theirs, callers, seconds)
    results["fastgw-cb"] = await measure(ours_callback, callers, seconds)
    client.close()
    await redispy.aclose()
    return results


def _resolve(future, reply):
    future.set_result(reply)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--port", type=int, help="an already running redis-server (default: start one)")
    options = parser.parse_args()
    proc = None
    port = options.port
    if port is None:
        proc, port = start_redis()
    try:
        results = uvloop.run(run(port, options.callers, min(options.seconds, 30.0)))
    finally:
        if proc is not None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    import hiredis
    import redis
    print(f"EVALSHA of the rate-limit script, {options.callers} concurrent callers, one uvloop loop, "
          f"{options.seconds:g} s each (hiredis {hiredis.__version__}, redis-py {redis.__version__})")
    print(f"{'client':<10} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, (ops, p50, p99) in results.items():
        print(f"{name:<10} {ops:>9.0f} {p50:>8.2f} {p99:>8.2f}")
    ours, theirs = results["fastgw"], results["redis-py"]
    print(f"fastgw / redis-py: {ours[0] / theirs[0]:.2f}x ops/s, p99 {ours[2] / theirs[2]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
