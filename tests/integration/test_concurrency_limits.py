"""Concurrency limits through the real gateway (routes[].concurrency and
clusters.NAME.concurrency): at most N requests at the upstream at once, a
bounded FIFO queue with a timeout, 503s with Retry-After, places freed by
clients that leave, limits shared by two workers and by two routes of one
cluster, and slots that come back after every kind of failed exchange.

The upstream counts the requests it is answering at once (`peak_active`),
so "at most N in flight" is observed where it matters."""
from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.sync.client import connect

from support import (RawClient, assert_gateway_error, cluster, free_port, http_request, port_accepts, route,
                     simple_config)


def limited(upstream_url: str, **concurrency) -> dict:
    return simple_config(upstream_url, route_extra={"concurrency": concurrency})


def parallel(port: int, targets: list[str], *, stagger: float = 0.0, timeout: float = 20.0) -> list:
    """GET each target on its own connection, all at once (or `stagger`
    seconds apart, to fix the arrival order); responses in target order."""
    def one(index_target):
        index, target = index_target
        time.sleep(index * stagger)
        start = time.monotonic()
        resp = http_request(port, "GET", target, timeout=timeout)
        return resp, time.monotonic() - start
    with ThreadPoolExecutor(len(targets)) as pool:
        return list(pool.map(one, enumerate(targets)))


@pytest.mark.timeout(60)
def test_exactly_n_requests_reach_the_upstream_at_once(upstream, gateway_factory):
    gw = gateway_factory(limited(upstream.url, max_in_flight=3, max_queue=20, queue_timeout="20s"))
    results = parallel(gw.port, [f"/slow/{i}?delay=0.4" for i in range(9)])
    assert [resp.status for resp, _ in results] == [200] * 9
    assert upstream.peak_active == 3
    # Three rounds of 0.4 s: the last ones waited for two rounds.
    assert max(elapsed for _, elapsed in results) >= 1.1


@pytest.mark.timeout(60)
def test_queued_requests_are_served_in_arrival_order(upstream, gateway_factory):
    gw = gateway_factory(limited(upstream.url, max_in_flight=1, max_queue=10, queue_timeout="20s"))
    results = parallel(gw.port, [f"/slow/{i}?delay=0.25" for i in range(6)], stagger=0.05)
    assert [resp.status for resp, _ in results] == [200] * 6
    assert [r.path for r in upstream.requests] == [f"/slow/{i}" for i in range(6)]
    assert upstream.peak_active == 1


def hold(port: int, target: str) -> RawClient:
    """A request left in flight on its own connection (the caller closes it)."""
    client = RawClient(port, timeout=10)
    client.request("GET", target)
    return client


@pytest.mark.timeout(30)
def test_full_limit_without_queue_answers_503_at_once(upstream, gateway_factory):
    gw = gateway_factory(limited(upstream.url, max_in_flight=1))
    with hold(gw.port, "/hang"):
        upstream.wait_mark("hang-received")
        start = time.monotonic()
        resp = http_request(gw.port, "GET", "/echo/refused")
        assert time.monotonic() - start < 0.5
        err = assert_gateway_error(resp, 503, "concurrency_limited")
        assert resp.header("retry-after") == "1"
        assert "route 'all'" in err["message"]
    assert "/echo/refused" not in [r.path for r in upstream.requests]


@pytest.mark.timeout(30)
def test_full_queue_answers_503_queue_full_at_once(upstream, gateway_factory):
    gw = gateway_factory(limited(upstream.url, max_in_flight=1, max_queue=1, queue_timeout="10s"))
    with hold(gw.port, "/slow/first?delay=1.5") as first:
        upstream.wait_mark("slow-received")
        with hold(gw.port, "/echo/queued") as queued:
            time.sleep(0.4)  # it is in the queue now
            start = time.monotonic()
            resp = http_request(gw.port, "GET", "/echo/third")
            assert time.monotonic() - start < 0.5
            assert_gateway_error(resp, 503, "queue_full")
            assert resp.header("retry-after") == "1"
            # The queued one goes through when the first is done.
            assert first.read_response().status == 200
            assert queued.read_response().status == 200
    assert [r.path for r in upstream.requests] == ["/slow/first", "/echo/queued"]


@pytest.mark.timeout(30)
def test_queue_timeout_answers_503_after_the_timeout(upstream, gateway_factory):
    gw = gateway_factory(limited(upstream.url, max_in_flight=1, max_queue=5, queue_timeout="500ms"))
    with hold(gw.port, "/hang"):
        upstream.wait_mark("hang-received")
        start = time.monotonic()
        resp = http_request(gw.port, "GET", "/echo/waits")
        waited = time.monotonic() - start
        err = assert_gateway_error(resp, 503, "queue_timeout")
        assert resp.header("retry-after") == "1"
        assert "0.5s" in err["message"]
        assert 0.45 <= waited < 1.5, waited
        # The connection stays usable: a timeout is an answer, not a failure.
    assert "/echo/waits" not in [r.path for r in upstream.heads]


@pytest.mark.timeout(30)
def test_a_client_that_leaves_the_queue_frees_its_place(upstream, gateway_factory):
    gw = gateway_factory(limited(upstream.url, max_in_flight=1, max_queue=1, queue_timeout="10s"))
    with hold(gw.port, "/slow/first?delay=1.5") as first:
        upstream.wait_mark("slow-received")
        leaver = hold(gw.port, "/echo/leaver")
        time.sleep(0.4)
        leaver.close()  # gives up while queued
        time.sleep(0.4)
        # Its place is free again: this one queues instead of getting queue_full.
        with hold(gw.port, "/echo/next") as nxt:
            assert first.read_response().status == 200
            assert nxt.read_response().status == 200
    # The one that left never reached the upstream, nor held the slot.
    assert [r.path for r in upstream.heads] == ["/slow/first", "/echo/next"]
    assert upstream.peak_active == 1


def client_sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def connections_on_both_workers(port: int, workers: list[int], count: int) -> list[RawClient]:
    """`count` idle connections, alternating between the two workers. The
    kernel hands a shared listening socket's connections to whichever worker
    accepts first, often all to one; so connect until each worker has half
    (seen in its socket count) and close the spares."""
    kept: dict[int, list[RawClient]] = {pid: [] for pid in workers}
    spare = []
    for _ in range(30 * count):
        if all(len(c) >= count // 2 for c in kept.values()):
            break
        before = {pid: client_sockets(pid) for pid in workers}
        client = RawClient(port, timeout=10)
        deadline = time.monotonic() + 1
        owner = None
        while owner is None and time.monotonic() < deadline:
            time.sleep(0.005)
            owner = next((pid for pid in workers if client_sockets(pid) > before[pid]), None)
        if owner is not None and len(kept[owner]) < count // 2:
            kept[owner].append(client)
        else:
            spare.append(client)
    for client in spare:
        client.close()
    assert all(len(c) == count // 2 for c in kept.values()), \
        f"could not place connections on both workers: { {p: len(c) for p, c in kept.items()} }"
    a, b = kept.values()
    return [client for pair in zip(a, b) for client in pair]


@pytest.mark.timeout(60)
def test_one_limit_for_two_workers(upstream, gateway_factory):
    gw = gateway_factory(limited(upstream.url, max_in_flight=2, max_queue=40, queue_timeout="20s"), workers=2)
    workers = gw.wait_children(2)
    assert len(workers) == 2
    clients = connections_on_both_workers(gw.port, workers, 16)
    try:
        for i, client in enumerate(clients):
            client.request("GET", f"/slow/{i}?delay=0.3")
            time.sleep(0.01)
        statuses = [client.read_response().status for client in clients]
    finally:
        for client in clients:
            client.close()
    assert statuses == [200] * 16
    # Each worker had waiters, yet the upstream never saw more than 2 at once.
    assert upstream.peak_active == 2
    assert len(upstream.requests) == 16


@pytest.mark.timeout(60)
def test_cluster_limit_counts_requests_from_every_route(upstream, gateway_factory):
    config = {
        "clusters": {"main": cluster(upstream.url, concurrency={"max_in_flight": 2, "max_queue": 20,
                                                                 "queue_timeout": "20s"})},
        "routes": [route("a", "main", prefix="/slow/a"), route("b", "main", prefix="/slow/b")],
    }
    gw = gateway_factory(config)
    targets = [f"/slow/{name}/{i}?delay=0.3" for i in range(4) for name in "ab"]
    results = parallel(gw.port, targets)
    assert [resp.status for resp, _ in results] == [200] * 8
    assert upstream.peak_active == 2
    # Without a queue, the limit's 503 names the cluster.
    config["clusters"]["main"]["concurrency"] = {"max_in_flight": 1}
    gw2 = gateway_factory(config)
    with hold(gw2.port, "/slow/a/held?delay=1"):
        assert upstream.wait_for(lambda: upstream.active == 1), f"active at the upstream: {upstream.active}"
        err = assert_gateway_error(http_request(gw2.port, "GET", "/slow/b/refused"), 503, "concurrency_limited")
        assert "cluster 'main'" in err["message"]


@pytest.mark.timeout(60)
def test_route_and_cluster_limits_both_apply(upstream, gateway_factory):
    config = {
        "clusters": {"main": cluster(upstream.url, concurrency={"max_in_flight": 3, "max_queue": 20})},
        "routes": [route("a", "main", prefix="/slow/a", concurrency={"max_in_flight": 1, "max_queue": 20}),
                   route("b", "main", prefix="/slow/b")],
    }
    gw = gateway_factory(config)
    targets = [f"/slow/a/{i}?delay=0.3" for i in range(3)] + [f"/slow/b/{i}?delay=0.3" for i in range(6)]
    results = parallel(gw.port, targets)
    assert [resp.status for resp, _ in results] == [200] * 9
    assert upstream.peak_active == 3
    # Route a never had two at the upstream at once.
    a_times = sorted((r.received_at, r.path) for r in upstream.requests if r.path.startswith("/slow/a"))
    gaps = [b[0] - a[0] for a, b in zip(a_times, a_times[1:])]
    assert all(gap >= 0.25 for gap in gaps), gaps


@pytest.mark.timeout(60)
def test_failed_and_aborted_exchanges_give_their_slots_back(upstream, gateway_factory):
    config = {  # one limit on the cluster; /hang times out fast on its own route
        "clusters": {"main": cluster(upstream.url, concurrency={"max_in_flight": 2})},
        "routes": [route("hang", "main", prefix="/hang", timeouts={"response_header": "300ms"}),
                   route("all", "main", prefix="/")],
    }
    gw = gateway_factory(config)
    for _ in range(3):
        assert_gateway_error(http_request(gw.port, "GET", "/reset"), 502, "upstream_reset")
        assert_gateway_error(http_request(gw.port, "GET", "/garbage"), 502, "upstream_bad_response")
        assert_gateway_error(http_request(gw.port, "GET", "/hang"), 504, "upstream_timeout")
        assert http_request(gw.port, "GET", "/status/500").status == 500
        with RawClient(gw.port) as client:  # the response is cut short: the exchange is aborted
            client.request("GET", "/die")
            resp = client.read_response(allow_incomplete=True)
            assert resp.status == 200 and not resp.complete
        with hold(gw.port, "/slow/abandoned?delay=0.5") as client:  # the client leaves mid-exchange
            assert upstream.wait_for(lambda: upstream.active >= 1), f"active at the upstream: {upstream.active}"
    assert upstream.wait_for(lambda: upstream.active == 0), "abandoned requests still at the upstream"
    # Both slots are free again (none leaked), and there are still only two
    # (none released twice): two go through, a third at the same time is refused.
    with hold(gw.port, "/slow/one?delay=1") as one, hold(gw.port, "/slow/two?delay=1") as two:
        assert upstream.wait_for(lambda: upstream.active == 2), f"active at the upstream: {upstream.active}"
        assert_gateway_error(http_request(gw.port, "GET", "/echo/third"), 503, "concurrency_limited")
        assert one.read_response().status == 200
        assert two.read_response().status == 200
    assert http_request(gw.port, "GET", "/echo/after").status == 200


@pytest.mark.timeout(30)
def test_a_websocket_tunnel_gives_its_slot_back_at_the_upgrade(ws_upstream, gateway_factory):
    config = {
        "clusters": {"ws": cluster(f"http://127.0.0.1:{ws_upstream.port}", concurrency={"max_in_flight": 1})},
        "routes": [route("ws", "ws", prefix="/")],
    }
    gw = gateway_factory(config)
    with connect(f"ws://127.0.0.1:{gw.port}/ws/one", proxy=None, open_timeout=5, close_timeout=5) as first:
        first.send("hello")
        assert first.recv(timeout=5) == "hello"
        # The first tunnel is open, yet a second upgrade gets the slot.
        with connect(f"ws://127.0.0.1:{gw.port}/ws/two", proxy=None, open_timeout=5, close_timeout=5) as second:
            second.send("again")
            assert second.recv(timeout=5) == "again"


@pytest.mark.timeout(60)
def test_slots_of_a_killed_worker_come_back(upstream, gateway_factory):
    gw = gateway_factory(limited(upstream.url, max_in_flight=1))
    (worker,) = gw.wait_children(1)
    with hold(gw.port, "/hang"):
        upstream.wait_mark("hang-received")
        os.kill(worker, signal.SIGKILL)  # dies holding the only slot
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        replacements = [pid for pid in gw.children() if pid != worker]
        if replacements and port_accepts(gw.port):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the master did not restart the worker")
    # The replacement took over the dead worker's row and zeroed it.
    resp = http_request(gw.port, "GET", "/echo/after-crash")
    assert resp.status == 200, resp.describe()


@pytest.mark.timeout(60)
def test_waiters_in_two_workers_are_served_in_one_arrival_order(upstream, gateway_factory):
    gw = gateway_factory(limited(upstream.url, max_in_flight=1, max_queue=40, queue_timeout="30s"), workers=2)
    workers = gw.wait_children(2)
    assert len(workers) == 2
    clients = connections_on_both_workers(gw.port, workers, 10)
    try:
        for i, client in enumerate(clients):
            client.request("GET", f"/slow/{i}?delay=0.15")
            time.sleep(0.06)  # arrival order = ticket order (the poll is 10 ms)
        statuses = [client.read_response().status for client in clients]
    finally:
        for client in clients:
            client.close()
    assert statuses == [200] * 10
    # One queue for the host: a waiter is never overtaken by a later one,
    # whichever worker either of them is on.
    assert [r.path for r in upstream.requests] == [f"/slow/{i}" for i in range(10)]
    assert upstream.peak_active == 1


@pytest.mark.timeout(60)
def test_a_retried_request_holds_one_slot_through_its_tries(upstream, gateway_factory):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connect refused, then retried
    config = {
        "clusters": {"main": cluster(dead, upstream.url, concurrency={"max_in_flight": 1})},
        "routes": [route("all", "main", prefix="/")],
    }
    gw = gateway_factory(config)
    for i in range(6):  # round robin: every other first try goes to the dead endpoint
        resp = http_request(gw.port, "GET", f"/echo/{i}")
        assert resp.status == 200, resp.describe()
    # Exactly one slot still: taken once per request whatever its tries, given back once.
    with hold(gw.port, "/slow/held?delay=1") as held:
        assert upstream.wait_for(lambda: upstream.active == 1), f"active at the upstream: {upstream.active}"
        assert_gateway_error(http_request(gw.port, "GET", "/echo/refused"), 503, "concurrency_limited")
        assert held.read_response().status == 200
    assert http_request(gw.port, "GET", "/echo/after").status == 200
