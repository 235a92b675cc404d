"""One HTTP GET without blocking the event loop: asyncio streams for the
connection, httptools (already the gateway's parser) for the answer.

Why not a client library: the gateway has no HTTP client dependency, and a
JWKS fetch is one small GET every few minutes; httpx or aiohttp would add a
dependency tree for that. This reads at most MAX_BODY bytes, follows no
redirects, and the whole exchange (connect, send, read) has one deadline.
"""
from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import httptools

MAX_BODY = 1 << 20   # a JWKS or discovery document is a few KiB


class FetchError(Exception):
    pass


class _Answer:
    def __init__(self):
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.done = False

    def on_header(self, name: bytes, value: bytes):
        self.headers[name.lower()] = value

    def on_body(self, body: bytes):
        self.body += body
        if len(self.body) > MAX_BODY:
            raise FetchError(f"answer larger than {MAX_BODY} bytes")

    def on_message_complete(self):
        self.done = True


class FetchTimeout(FetchError):
    pass


async def get(url: str, timeout: float, headers: tuple = ()) -> tuple[int, dict[bytes, bytes], bytes]:
    """(status, lower-case headers, body); FetchError (FetchTimeout when the
    deadline passed) on any failure. `headers`: extra (name, value) bytes."""
    try:
        return await asyncio.wait_for(_get(url, headers), timeout)
    except asyncio.TimeoutError:
        raise FetchTimeout(f"no answer within {timeout:g}s") from None
    except (OSError, httptools.HttpParserError, UnicodeError) as err:
        raise FetchError(f"{type(err).__name__}: {err}") from None


async def _get(url: str, extra: tuple = ()):
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host, port = parts.hostname, parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    reader, writer = await asyncio.open_connection(host, port, ssl=ssl.create_default_context() if secure else None)
    try:
        host_header = parts.netloc.rpartition("@")[2]
        lines = b"".join(name + b": " + value + b"\r\n" for name, value in extra)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nAccept: application/json\r\n"
                     "User-Agent: fastgw\r\nConnection: close\r\n".encode("ascii") + lines + b"\r\n")
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        while not answer.done:
            data = await reader.read(65536)
            if not data:
                break
            parser.feed_data(data)
        framed = b"content-length" in answer.headers or b"transfer-encoding" in answer.headers
        if not answer.done and (framed or not answer.headers):
            # (Without framing headers the body ends at EOF: what was read is it.)
            raise FetchError("the connection closed before the answer ended")
        return parser.get_status_code(), answer.headers, bytes(answer.body)
    finally:
        writer.close()
