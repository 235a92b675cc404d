"""Backpressure: a client that doesn't read must not make the gateway buffer
the upstream's response. The worker's memory stays flat while a 256 MiB
response waits on a client that reads nothing, and the bytes all arrive
intact once it reads."""
from __future__ import annotations

import hashlib
import socket
import time

import pytest

from support import build_request, payload_sha256

TOTAL_MIB = 256


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.mark.timeout(120)
def test_slow_client_does_not_make_the_gateway_buffer(proxy):
    [worker] = proxy.gw.wait_children(1)
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    # A small receive buffer, so the kernel can't soak up the body for us.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        before = rss_kib(worker)
        sock.sendall(build_request("GET", f"/big?mib={TOTAL_MIB}"))
        time.sleep(3)  # the upstream keeps writing; nobody reads
        grown = rss_kib(worker) - before
        assert grown < 32 * 1024, f"worker RSS grew {grown} KiB while the client read nothing"

        data = bytearray()
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = bytes(data).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        digest = hashlib.sha256(body)
        received = len(body)
        want = TOTAL_MIB * 1024 * 1024
        while received < want:
            chunk = sock.recv(1 << 20)
            assert chunk, f"connection closed after {received} of {want} body bytes"
            digest.update(chunk)
            received += len(chunk)
        assert received == want
        assert digest.hexdigest() == payload_sha256(want, 1)
    finally:
        sock.close()
