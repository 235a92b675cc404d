"""Local replies: every answer the gateway makes itself is a JSON error body
with a stable code, the request id, and the right status.

`{"error": {"code": "upstream_timeout", "message": "...", "request_id": "..."}}`

Here, in the native layer, because the request path (proxy.pyx) and the
admission stages (concurrency.pyx) raise and send these: fastgw/_native must
not import from fastgw.proxy. fastgw.proxy.errors re-exports the same objects.
"""
from __future__ import annotations

import orjson

from fastgw._native.headers import status_line


class ProxyError(Exception):
    """A failure that ends in a local reply: status, stable code, human message,
    and optional extra header lines for the reply (`b"Retry-After: 3\r\n"`)."""

    def __init__(self, status: int, code: str, message: str, headers: bytes = b""):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_reply(status: int, code: str, message: str, request_id: bytes,
                keep_alive: bool, extra_headers: bytes = b"") -> bytes:
    body = orjson.dumps({"error": {"code": code, "message": message,
                                   "request_id": request_id.decode("latin-1")}})
    return b"".join((
        status_line(status),
        b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body),
        b"X-Request-ID: ", request_id, b"\r\n",
        extra_headers,
        b"" if keep_alive else b"Connection: close\r\n",
        b"\r\n",
        body,
    ))


def answer_reply(status: int, header_lines: bytes, body: bytes, request_id: bytes,
                 keep_alive: bool, is_head: bool, extra_headers: bytes | None = None) -> bytes:
    """A stage's (a plugin's) own answer: its header lines, then the gateway's
    framing, request id and connection headers (a HEAD answer has no body)."""
    return b"".join((
        status_line(status),
        header_lines,
        b"Content-Length: %d\r\n" % len(body),
        b"X-Request-ID: ", request_id, b"\r\n",
        extra_headers or b"",
        b"" if keep_alive else b"Connection: close\r\n",
        b"\r\n",
        b"" if is_head else body,
    ))


CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
