#!/usr/bin/env python3
"""Tiny HTTP/1.1 upstream for the benchmarks when nginx is not installed.

Serves the same three resources as the upstream nginx of ../shared/bench/peers.sh:
  GET  /      -> 200 "hello world\\n"             (text/plain)
  GET  /big   -> 200 1 MiB of bytes (BIG_SIZE)   (application/octet-stream)
  POST /echo  -> 200 "ok\\n" after reading the whole body (Content-Length or chunked)
anything else -> 200 "hello world\\n", so any route of bench/features.yaml answers.

Keep-alive and pipelining are supported; one process, one uvloop event loop.
It prints "READY <port>" on stdout once listening (with --port 0 the kernel
picks the port). It is a load target, not a reference implementation: no
timeouts, no limits.

Usage: python3 bench/upstream.py [--host 127.0.0.1] [--port 0]
Needs: uvloop, httptools (the gateway's own dependencies).
"""
import argparse
import asyncio
import signal
import sys

import httptools
import uvloop

BIG_SIZE = 1024 * 1024
_BIG = (bytes(range(256)) * (BIG_SIZE // 256))[:BIG_SIZE]


def _head(body_len, ctype):
    """Status line and headers, without the blank line that ends the head."""
    return (b"HTTP/1.1 200 OK\r\nServer: bench-upstream\r\nContent-Type: " + ctype +
            b"\r\nContent-Length: " + str(body_len).encode() + b"\r\n")


HELLO_BODY = b"hello world\n"
OK_BODY = b"ok\n"
# path -> (head without the final CRLF, body)
RESOURCES = {
    b"/big": (_head(BIG_SIZE, b"application/octet-stream"), _BIG),
    b"/echo": (_head(len(OK_BODY), b"text/plain"), OK_BODY),
}
DEFAULT = (_head(len(HELLO_BODY), b"text/plain"), HELLO_BODY)
# small responses pre-joined: one bytes object per keep-alive answer
JOINED = {path: head + b"\r\n" + body for path, (head, body) in RESOURCES.items()
          if len(body) < 4096}
DEFAULT_JOINED = DEFAULT[0] + b"\r\n" + DEFAULT[1]


class Upstream(asyncio.Protocol):
    __slots__ = ("transport", "parser", "url", "out")

    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.out = []

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
            self.transport.close()
            return
        if self.out:
            self.transport.writelines(self.out)
            self.out = []

    def on_url(self, url):
        self.url += url

    def on_message_complete(self):
        path = self.url.split(b"?", 1)[0]
        self.url = b""
        if self.parser.should_keep_alive():
            joined = JOINED.get(path, DEFAULT_JOINED if path not in RESOURCES else None)
            if joined is not None:
                self.out.append(joined)
            else:
                head, body = RESOURCES[path]
                self.out += (head, b"\r\n", body)
            return
        head, body = RESOURCES.get(path, DEFAULT)
        self.out += (head, b"Connection: close\r\n\r\n", body)
        self.transport.writelines(self.out)
        self.out = []
        self.transport.close()


async def serve(host, port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, host, port, backlog=4096, reuse_address=True)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    await stop
    server.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
