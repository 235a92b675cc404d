#!/usr/bin/env python3
"""Send exactly N small GET requests (or POSTs with a BODY-byte body) over
C keep-alive connections and exit.

The driver for bench/callgrind.sh: instruction counts per request need a fixed
request count, which wrk can't give. Fails (exit 1) on any non-200 answer.

Usage: python3 bench/fixed_requests.py PORT N [C] [PATH] [BODY]
   BODY > 0: POST PATH with a Content-Length body of BODY bytes (S2: 1024 to /echo)
   FIXED_HEADER="Name: value" in the environment: one more header on every
   request (a JWT route: FIXED_HEADER="Authorization: Bearer $TOKEN")
"""
import asyncio
import os
import sys

EXTRA = "".join(f"{line}\r\n" for line in [os.environ.get("FIXED_HEADER", "")] if line)


async def one_connection(port: int, count: int, path: str, body: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if body:
        request = (f"POST {path} HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: fixed\r\n"
                   f"Content-Type: application/octet-stream\r\nContent-Length: {body}\r\n{EXTRA}\r\n").encode()
        request += b"x" * body
    else:
        request = f"GET {path} HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: fixed\r\n{EXTRA}\r\n".encode()
    for _ in range(count):
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected answer: {head[:80]!r}")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
    writer.close()


async def main() -> None:
    port, total = int(sys.argv[1]), int(sys.argv[2])
    conns = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    path = sys.argv[4] if len(sys.argv) > 4 else "/"
    body = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    each, extra = divmod(total, conns)
    await asyncio.gather(*(one_connection(port, each + (i < extra), path, body) for i in range(conns)))


asyncio.run(main())
