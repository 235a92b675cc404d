"""Item 12: graceful drain on SIGTERM. Item 13: a killed worker is replaced."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from support import RawClient, http_request, simple_config


@pytest.mark.timeout(60)
def test_sigterm_drains_in_flight_requests(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.url, server={"timeouts": {"drain": "20s"}}))
    # An idle keep-alive connection: drain must not wait for it to time out.
    idle = RawClient(gw.port, timeout=10)
    idle.request("GET", "/fixed")
    assert idle.read_response().status == 200

    result: dict = {}

    def slow_request() -> None:
        try:
            result["resp"] = http_request(gw.port, "GET", "/slow?delay=1.5", timeout=15)
        except BaseException as exc:  # reported by the main thread
            result["error"] = exc

    worker = threading.Thread(target=slow_request)
    worker.start()
    upstream.wait_mark("slow-received", timeout=5)
    sigterm_at = time.monotonic()
    gw.signal(signal.SIGTERM)

    worker.join(20)
    assert not worker.is_alive(), "in-flight request never completed"
    assert "error" not in result, f"in-flight request failed during drain: {result['error']!r}"
    assert result["resp"].status == 200, result["resp"].describe()
    assert result["resp"].json()["target"] == "/slow?delay=1.5"

    code = gw.wait(15)
    assert code is not None, "master did not exit within 15s of SIGTERM"
    assert code == 0, f"master exited with {code}"
    assert time.monotonic() - sigterm_at < 8, "drain waited on an idle keep-alive connection"
    idle.assert_closed(timeout=1)
    idle.close()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gw.port), timeout=2).close()


@pytest.mark.timeout(60)
def test_killed_worker_is_replaced(proxy_factory_2_workers):
    gw = proxy_factory_2_workers
    before = gw.wait_children(2, timeout=10)
    assert len(before) == 2, f"expected 2 workers under master {gw.pid}, found {before}"
    victim = before[0]
    os.kill(victim, signal.SIGKILL)

    deadline = time.monotonic() + 5
    after: list[int] = []
    while time.monotonic() < deadline:
        after = gw.children()
        if victim not in after and len(after) == 2:
            break
        time.sleep(0.05)
    assert victim not in after and len(after) == 2, f"worker not replaced within 5s: {before} -> {after}"
    assert set(after) - set(before), "no new worker PID appeared"
    assert gw.proc.poll() is None, "master died with its worker"

    # New connections land on both workers; all of them must succeed.
    for i in range(20):
        resp = http_request(gw.port, "GET", f"/echo/after-restart/{i}")
        assert resp.status == 200, resp.describe()


@pytest.fixture
def proxy_factory_2_workers(upstream, gateway_factory):
    return gateway_factory(simple_config(upstream.url), workers=2)
