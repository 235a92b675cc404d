#!/usr/bin/env python3
"""Bounded keep-alive HTTP/1.1 load loop in Python: the fallback for bench/smoke.sh
where wrk is not installed. Far slower than wrk (one uvloop thread), so its rate
says little about the gateway; its error counts are what the smoke needs.

Each of CONNS connections sends one request, reads the whole response
(httptools parses it: Content-Length or chunked), and repeats until DURATION
has passed. Prints one line in the format of the bench/wrk/*.lua scripts:
  BENCH requests=N duration_us=N bytes=N status_err=N connect=N read=N write=N
        timeout=N p50_us=N p90_us=N p99_us=N non2xx=N
status_err counts responses >= 400 (as wrk does), non2xx every status outside 2xx.
Exit status 0 whatever the counts: the caller judges them.

Usage: python3 bench/pyload.py http://127.0.0.1:PORT/path [-c 32] [-d 3]
           [--method POST --body-size 1024] [--timeout 5]
Needs: uvloop, httptools.
"""
import argparse
import asyncio
import sys
import time
import urllib.parse

import httptools
import uvloop


class Stats:
    def __init__(self):
        self.requests = self.bytes = self.status_err = self.non2xx = 0
        self.connect = self.read = self.write = self.timeout = 0
        self.latencies = []


class Response:
    """httptools callbacks for one connection; status and keep-alive are read
    when the head is complete (llhttp resets its flags at message end)."""
    __slots__ = ("parser", "status", "keep_alive", "done")

    def __init__(self):
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.keep_alive = True
        self.done = False

    def on_headers_complete(self):
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self):
        self.done = True


async def one_conn(host, port, request, deadline, timeout, stats):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        stats.connect += 1
        return
    resp = Response()
    try:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                writer.write(request)
                await writer.drain()
            except OSError:
                stats.write += 1
                return
            resp.done = False
            try:
                while not resp.done:
                    data = await asyncio.wait_for(reader.read(65536), timeout)
                    if not data:
                        stats.read += 1
                        return
                    stats.bytes += len(data)
                    resp.parser.feed_data(data)
            except asyncio.TimeoutError:
                stats.timeout += 1
                return
            except (OSError, httptools.HttpParserError):
                stats.read += 1
                return
            stats.latencies.append(time.perf_counter() - t0)
            stats.requests += 1
            if resp.status >= 400:
                stats.status_err += 1
            if not 200 <= resp.status <= 299:
                stats.non2xx += 1
            if not resp.keep_alive:
                return  # the server closes: this connection is done
    finally:
        writer.close()


async def run(args):
    url = urllib.parse.urlsplit(args.url)
    host, port = url.hostname, url.port or 80
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    body = b"a" * args.body_size
    head = f"{args.method} {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
    if body or args.method in ("POST", "PUT"):
        head += f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
    request = head.encode() + b"\r\n" + body
    stats = Stats()
    start = time.monotonic()
    deadline = start + args.duration
    await asyncio.gather(*(one_conn(host, port, request, deadline, args.timeout, stats)
                           for _ in range(args.conns)))
    elapsed = time.monotonic() - start
    lat = sorted(stats.latencies) or [0.0]

    def pct(p):
        return int(lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1e6)

    print(f"BENCH requests={stats.requests} duration_us={int(elapsed * 1e6)} bytes={stats.bytes} "
          f"status_err={stats.status_err} connect={stats.connect} read={stats.read} "
          f"write={stats.write} timeout={stats.timeout} p50_us={pct(50)} p90_us={pct(90)} "
          f"p99_us={pct(99)} non2xx={stats.non2xx}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("-c", "--conns", type=int, default=32)
    ap.add_argument("-d", "--duration", type=float, default=3.0, help="seconds")
    ap.add_argument("--method", default="GET")
    ap.add_argument("--body-size", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=5.0, help="per read / connect, seconds")
    args = ap.parse_args()
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
