"""Forward auth through the real binary, against an auth service written
here: allowed (headers copied, forged copies removed), refused (its answer
passed back), slow (504), down (503), failure_mode open, decision cache."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support import assert_gateway_error, cluster, http_request, route


class AuthService:
    def __init__(self):
        self.calls = []
        self.delay = 0.0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                service.calls.append(dict(self.headers))
                if service.delay:
                    time.sleep(service.delay)
                token = self.headers.get("Authorization", "")
                if token == "Bearer good":
                    self.send_response(200)
                    self.send_header("X-Auth-User", "alice")
                    self.send_header("X-Other", "not copied")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b'{"error": "who are you"}'
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("WWW-Authenticate", 'Bearer realm="auth"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/check"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service():
    svc = AuthService()
    yield svc
    svc.stop()


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/check"


def gateway(gateway_factory, upstream, **forward):
    return gateway_factory({
        "clusters": {"app": cluster(upstream.url)},
        "routes": [route("guarded", "app", prefix="/", forward_auth=forward)],
    })


@pytest.mark.timeout(60)
def test_allowed_copies_headers_and_refused_passes_the_answer_back(upstream, service, gateway_factory):
    gw = gateway(gateway_factory, upstream, url=service.url, copy_headers=["X-Auth-User"])
    resp = http_request(gw.port, "GET", "/orders?id=7",
                        [("Authorization", "Bearer good"), ("X-Auth-User", "root"), ("Cookie", "a=b")])
    assert resp.status == 200, resp.describe()
    seen = upstream.requests[-1]
    assert seen.header_all("x-auth-user") == ["alice"] and seen.header_all("x-other") == []
    asked = service.calls[-1]
    assert asked["X-Forwarded-Method"] == "GET" and asked["X-Forwarded-Uri"] == "/orders?id=7"
    assert asked["Authorization"] == "Bearer good" and asked["Cookie"] == "a=b"
    resp = http_request(gw.port, "GET", "/orders", [("Authorization", "Bearer bad")])
    assert resp.status == 401 and resp.json() == {"error": "who are you"}
    assert resp.header("www-authenticate") == 'Bearer realm="auth"'
    assert len(upstream.requests) == 1


@pytest.mark.timeout(60)
def test_slow_is_504_down_is_503_and_open_mode_lets_through(upstream, service, gateway_factory):
    service.delay = 2.0
    slow = gateway(gateway_factory, upstream, url=service.url, timeout="200ms")
    started = time.monotonic()
    assert_gateway_error(http_request(slow.port, "GET", "/a", [("Authorization", "Bearer good")]),
                         504, "auth_timeout")
    assert time.monotonic() - started < 2.0
    down = gateway(gateway_factory, upstream, url=dead_url())
    resp = http_request(down.port, "GET", "/a", [("Authorization", "Bearer good")])
    assert_gateway_error(resp, 503, "auth_unavailable")
    assert upstream.requests == []
    opened = gateway(gateway_factory, upstream, url=dead_url(), failure_mode="open")
    assert http_request(opened.port, "GET", "/a").status == 200


@pytest.mark.timeout(60)
def test_cache_reuses_an_allowed_decision_for_the_same_headers(upstream, service, gateway_factory):
    gw = gateway(gateway_factory, upstream, url=service.url, cache="30s", headers=["Authorization"],
                 copy_headers=["X-Auth-User"])
    for _ in range(3):
        assert http_request(gw.port, "GET", "/a", [("Authorization", "Bearer good")]).status == 200
        assert upstream.requests[-1].header_all("x-auth-user") == ["alice"]
    assert len(service.calls) == 1
    for _ in range(2):   # a refusal is never cached
        assert http_request(gw.port, "GET", "/a", [("Authorization", "Bearer bad")]).status == 401
    assert len(service.calls) == 3
