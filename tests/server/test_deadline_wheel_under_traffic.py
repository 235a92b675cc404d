"""Issue 17, finding 6: a worker's deadline wheel returns to its baseline after traffic.

A real Gateway (fastgw/proxy/gateway.py) runs in this process on a uvloop loop,
in front of a minimal upstream on the same loop, so the test can look at the
wheel (`gateway.deadlines`) directly. Every request arms deadlines well ahead
(response_header 60 s, the body idle timeout and the client's keepalive, 300 s
here) and cancels them a moment later. Before the fix each of those left an
empty set in the wheel until its tick, minutes later: the worker's memory grew
for `keepalive` seconds under load and stayed there. The test asserts counts:
after the clients leave and a second passes, the wheel holds no slot and no
owner, and the gateway no connection.
"""
from __future__ import annotations

import asyncio
import textwrap

import uvloop

from fastgw._native.proxy import ClientConnection
from fastgw.config.loader import load
from fastgw.proxy.gateway import Gateway

BODY = b"ok\n"


class Upstream(asyncio.Protocol):
    """Answers every request head (no bodies are sent to it) with 200 "ok"."""

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))


async def read_response(reader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    assert head.startswith(b"HTTP/1.1 200 "), head
    return body


async def keep_alive_client(port: int, requests: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(requests):
        writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        assert await read_response(reader) == BODY
        await asyncio.sleep(0.01)  # spread the requests over many ticks of the wheel
    writer.close()
    await writer.wait_closed()


async def one_shot_client(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert await read_response(reader) == BODY
    writer.close()
    await writer.wait_closed()


def test_wheel_and_connections_return_to_baseline_after_traffic(tmp_path):
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_scenario(loop, tmp_path))
    finally:
        loop.close()


async def _scenario(loop, tmp_path):
    upstream = await loop.create_server(Upstream, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    config_path = tmp_path / "gw.yaml"
    config_path.write_text(textwrap.dedent(f"""\
        server:
          timeouts: {{keepalive: 300s}}
        admin: {{enabled: false}}
        clusters:
          main:
            endpoints: [{{url: "http://127.0.0.1:{up_port}"}}]
        routes:
          - {{name: all, match: {{prefix: /}}, cluster: main}}
        """))
    gateway = Gateway(load(config_path, env={}), loop)
    server = await loop.create_server(lambda: ClientConnection(gateway), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    wheel = gateway.deadlines
    try:
        assert (wheel.slot_count, wheel.armed_count, len(gateway.connections)) == (0, 0, 0)
        # 8 keep-alive connections x 40 requests over ~0.5-1 s, then 60 one-request connections.
        await asyncio.gather(*(keep_alive_client(port, 40) for _ in range(8)))
        await asyncio.gather(*(one_shot_client(port) for _ in range(60)))
        for _ in range(100):
            if not gateway.connections:
                break
            await asyncio.sleep(0.02)
        assert len(gateway.connections) == 0
        assert wheel.armed_count == 0
        await asyncio.sleep(1.2)  # past the next whole second: the wheel's sweep
        assert wheel.slot_count == 0
    finally:
        server.close()
        await gateway.drain(loop.time())
        upstream.close()
