"""An upstream that answers before it has read the request body (a 413 from
the service, say) and closes: the client gets that answer, the rest of its
body is read and dropped, and the connection serves the next request.

Guards a flow-control case: the gateway had paused reading from the client
because the upstream wasn't taking the body; once the upstream is gone,
nothing may stay paused."""
from __future__ import annotations

import socket
import threading

import pytest

from support import RawClient, build_request
from support.gateway import cluster, route

BODY = 8 * 1024 * 1024


class EarlyAnswerUpstream:
    """Reads a request head, answers 413 at once, closes without reading the
    body. Every other request (`GET /ok`) gets a 200."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            if head.startswith(b"GET /ok"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            else:
                conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n"
                             b"Connection: close\r\n\r\ntoo big\n")
                # Lingering close, as real servers do: closing with unread
                # body bytes would send a reset that can destroy the answer
                # in flight.
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(10)
                try:
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass

    def close(self):
        self.sock.close()


@pytest.mark.timeout(60)
def test_upstream_answering_before_the_body_ends(gateway_factory):
    up = EarlyAnswerUpstream()
    try:
        gw = gateway_factory({
            "clusters": {"main": cluster(f"http://127.0.0.1:{up.port}")},
            "routes": [route("all", "main", prefix="/")],
        })
        with RawClient(gw.port, timeout=20) as client:
            client.send(build_request("POST", "/upload", [("Content-Length", str(BODY))]))
            sender = threading.Thread(target=client.sock.sendall, args=(b"x" * BODY,))
            sender.start()
            resp = client.read_response("POST", timeout=20)
            assert resp.status == 413
            assert resp.body == b"too big\n"
            sender.join(30)
            assert not sender.is_alive(), "the gateway stopped reading the rest of the body"
            client.request("GET", "/ok")
            resp = client.read_response(timeout=20)
            assert (resp.status, resp.body) == (200, b"ok")
    finally:
        up.close()
