"""A route's `timeouts.connect` bounds the dials made for that route; a route
without one gets its cluster's (issue 9, item 5: the route's value was
accepted, shown, and ignored).

The upstream is a loopback listener whose accept queue is full: Linux drops
SYNs to it, so a connect neither succeeds nor fails until the client gives
up, which is what a blackholed address does, without leaving 127.0.0.1.
"""
from __future__ import annotations

import select
import socket
import time

import pytest

from support import assert_gateway_error, cluster, http_request, route

CLUSTER_CONNECT = 2.0


@pytest.fixture
def stalled_listener():
    """(port) of a listener that never completes another TCP handshake."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # room for one connection waiting to be accepted
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # the first fills the queue; the next ones must stall
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        _, writable, _ = select.select([], fillers[1:], [], 0.5)
        if writable:
            pytest.skip("this kernel completes handshakes beyond the accept queue")
        yield port
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


@pytest.mark.timeout(60)
def test_route_connect_timeout_overrides_the_clusters(stalled_listener, gateway_factory):
    gw = gateway_factory({
        "clusters": {"stalled": cluster(f"http://127.0.0.1:{stalled_listener}",
                                        timeouts={"connect": f"{CLUSTER_CONNECT:g}s"})},
        "routes": [
            route("quick", "stalled", prefix="/quick", timeouts={"connect": "300ms"}, retries="off"),
            route("patient", "stalled", prefix="/patient", retries="off"),
        ],
    })
    started = time.monotonic()
    quick = assert_gateway_error(http_request(gw.port, "GET", "/quick", timeout=30), 504, "upstream_timeout")
    quick_took = time.monotonic() - started
    assert quick["message"] == f"connect to 127.0.0.1:{stalled_listener} timed out after 0.3s", quick
    # Had the cluster's value been used, the answer could not have come before it.
    assert quick_took < CLUSTER_CONNECT, f"the route's 300ms connect timeout answered after {quick_took:.2f}s"

    started = time.monotonic()
    patient = assert_gateway_error(http_request(gw.port, "GET", "/patient", timeout=30), 504, "upstream_timeout")
    assert patient["message"] == f"connect to 127.0.0.1:{stalled_listener} timed out after 2s", patient
    assert time.monotonic() - started >= CLUSTER_CONNECT * 0.9
