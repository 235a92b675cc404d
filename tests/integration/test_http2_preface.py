"""An HTTP/2 client (prior knowledge: the connection preface) on an
HTTP/1.1 listener gets an answer in words, not a parser internal.

llhttp reports the preface as HPE_PAUSED_H2_UPGRADE ("Pause on PRI/Upgrade");
fastgw/_native/proxy_client.pxi (ClientConnection.data_received) answers it
505 `http2_not_supported` instead of 400 "malformed request: Pause on ...".
"""
from __future__ import annotations

import json
import socket

import pytest

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"   # an empty SETTINGS frame, as clients send next


def _answer(port: int, data: bytes) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        got = b""
        while chunk := sock.recv(65536):   # the gateway closes after answering
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.timeout(30)
def test_http2_preface_is_answered_in_words(proxy):
    head, body = _answer(proxy.port, PREFACE + SETTINGS)
    assert head.startswith(b"HTTP/1.1 505 "), head
    error = json.loads(body)["error"]
    assert error["code"] == "http2_not_supported"
    assert error["message"] == "HTTP/2 is not supported on this listener; use HTTP/1.1"
    assert b"connection: close" in head.lower()
    assert proxy.up.requests == []


@pytest.mark.timeout(30)
def test_a_preface_split_across_packets_gets_the_same_answer(proxy):
    """The preface in two writes (a slow client): the same 505, nothing forwarded."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(PREFACE[:7])
        sock.sendall(PREFACE[7:] + SETTINGS)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 505 "), got
    assert json.loads(got.partition(b"\r\n\r\n")[2])["error"]["code"] == "http2_not_supported"
    assert proxy.up.requests == []
