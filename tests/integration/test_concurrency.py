"""Item 11: 200 concurrent client connections, a few requests each."""
from __future__ import annotations

import asyncio
import json

import h11
import httpx
import pytest

from support import build_request

CLIENTS = 200
REQUESTS_EACH = 3


async def one_client(port: int, index: int) -> list[int]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    statuses: list[int] = []
    leftover = b""
    try:
        for n in range(REQUESTS_EACH):
            target = f"/echo/c{index}/r{n}"
            writer.write(build_request("GET", target))
            await writer.drain()
            h = h11.Connection(h11.CLIENT)
            h.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
            h.send(h11.EndOfMessage())
            if leftover:
                h.receive_data(leftover)
            status, body, seen = None, b"", bytearray(leftover)
            while True:
                try:
                    event = h.next_event()
                except h11.RemoteProtocolError as exc:
                    raise AssertionError(f"client {index} request {n}: {exc}; "
                                         f"received {bytes(seen)[:300]!r}") from None
                if event is h11.NEED_DATA:
                    try:
                        data = await asyncio.wait_for(reader.read(65536), 20)
                    except ConnectionResetError:
                        data = b""
                    seen += data
                    h.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            leftover = bytes(h.trailing_data[0])
            assert status == 200, f"client {index} request {n}: {status} {body[:200]!r}"
            assert json.loads(body)["target"] == target
            statuses.append(status)
    finally:
        writer.close()
    return statuses


@pytest.mark.timeout(90)
def test_200_concurrent_raw_connections(proxy):
    async def main():
        return await asyncio.gather(*(one_client(proxy.port, i) for i in range(CLIENTS)),
                                    return_exceptions=True)

    results = asyncio.run(main())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {CLIENTS} clients failed; first: {failures[:3]!r}"
    assert [len(r) for r in results] == [REQUESTS_EACH] * CLIENTS
    assert len(proxy.up.requests) == CLIENTS * REQUESTS_EACH


@pytest.mark.timeout(90)
def test_200_concurrent_httpx_requests(proxy):
    async def main():
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=proxy.gw.url, limits=limits, trust_env=False,
                                     timeout=20) as client:
            # One request per connection here (httpx itself is the slow
            # part at higher counts); the raw test above does several each.
            responses = await asyncio.gather(*(client.post(f"/echo/h{i}", content=f"body-{i}")
                                               for i in range(CLIENTS)))
        return responses

    responses = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses), \
        sorted({(r.status_code, r.text[:100]) for r in responses if r.status_code != 200})
    for i, r in enumerate(responses):
        assert r.json()["body"] == f"body-{i}"
