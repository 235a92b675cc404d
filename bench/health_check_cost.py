#!/usr/bin/env python3
"""What one active health check costs the worker that runs it: CPU time per
check (fastgw/upstream/health.py `probe`: connect, GET, status line, close)
in a uvloop loop like a worker's, against bench/upstream.py in its own
process, so only the checker's side is counted.

It backs the choice of checking from every worker (health.py docstring,
README): the host-wide check rate is workers x endpoints / interval, and
this gives the CPU each of those checks costs.

Usage: python3 bench/health_check_cost.py [CHECKS=2000] [CONCURRENCY=20]
"""
import asyncio
import os
import subprocess
import sys
import time

import uvloop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fastgw.config.health_model import HealthCheck  # noqa: E402
from fastgw.upstream.health import probe  # noqa: E402


async def run(port: int, checks: int, concurrency: int) -> tuple[float, float, int]:
    check = HealthCheck(path="/healthz", timeout=2.0)
    passed = 0

    async def one_lane(count: int) -> None:
        nonlocal passed
        for _ in range(count):
            ok, _ = await probe(check, "127.0.0.1", port)
            passed += ok

    await one_lane(50)  # warm up
    passed = 0
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one_lane(checks // concurrency) for _ in range(concurrency)))
    return time.process_time() - cpu, time.perf_counter() - wall, passed


def main() -> None:
    checks = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    upstream = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "upstream.py"), "--port", "0"],
                                stdout=subprocess.PIPE, text=True)
    try:
        line = upstream.stdout.readline().split()
        assert line and line[0] == "READY", line
        port = int(line[1])
        cpu, wall, passed = uvloop.run(run(port, checks, concurrency))
        done = checks // concurrency * concurrency
        assert passed == done, f"only {passed} of {done} checks passed"
        print(f"{done} checks: {cpu / done * 1e6:.0f} us CPU per check in the checker "
              f"({wall:.2f}s wall, {concurrency} at a time)")
    finally:
        upstream.terminate()
        upstream.wait(5)


if __name__ == "__main__":
    main()
