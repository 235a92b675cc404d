"""The policies' series in /metrics (fastgw/observe/policy_metrics.py) after
known traffic: retries, budget, outlier ejections, endpoint states, Redis
fallbacks and concurrency gauges. Workers copy these once a second, so the
test polls the scrape until the figures arrive (or fails after a deadline)."""
from __future__ import annotations

import threading
import time

import pytest

from support import cluster, free_port, http_request, route
from support.metrics import enable_dump, scrape


def wait_for_scrape(gw, dump, check, timeout=6.0):
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(gw, dump)
        try:
            check(samples)
            return samples
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.timeout(60)
def test_policy_series_after_known_traffic(upstream, gateway_factory, monkeypatch, tmp_path):
    dump = enable_dump(monkeypatch, tmp_path)
    dead = f"127.0.0.1:{free_port()}"        # refuses connections
    redis_port = free_port()                 # no Redis there: the limit fails open
    gw = gateway_factory({
        "redis": {"url": f"redis://127.0.0.1:{redis_port}", "timeout": "50ms"},
        "clusters": {
            "two": cluster(f"http://{dead}", upstream.url,
                           outlier_detection={"consecutive_connect_failures": 1, "base_ejection": "30s",
                                              "max_ejected_percent": 50}),
            "one": cluster(upstream.url),
        },
        "routes": [
            route("retried", "two", prefix="/retried", retries={"backoff": {"base": "5ms", "max": "10ms"}}),
            route("limited", "one", prefix="/limited",
                  rate_limits=[{"key": "client_ip", "rate": "1000/s", "scope": "redis"}]),
            route("slow", "one", prefix="/slow",
                  concurrency={"max_in_flight": 1, "max_queue": 5, "queue_timeout": "10s"}),
        ],
    }, workers=1)

    for i in range(4):
        assert http_request(gw.port, "GET", f"/retried/{i}").status == 200
    for i in range(3):
        assert http_request(gw.port, "GET", f"/limited/{i}").status == 200

    # One request holding the slot and two waiting for it.
    results = []
    callers = [threading.Thread(target=lambda: results.append(
        http_request(gw.port, "GET", "/slow?delay=3", timeout=15).status)) for _ in range(3)]
    for caller in callers:
        caller.start()
        time.sleep(0.1)

    def check(m):
        assert m.get_value("fastgw_retries_total", cluster="two") == 1  # only the first try met the dead one
        assert m.get_value("fastgw_retry_budget_exhausted_total", cluster="two") == 0
        assert m.get_value("fastgw_outlier_ejections_total", cluster="two") == 1
        assert m.get_value("fastgw_endpoint_state", cluster="two", endpoint=dead, state="ejected") == 1
        assert m.get_value("fastgw_endpoint_state", cluster="two", endpoint=dead, state="healthy") == 0
        live = upstream.url.removeprefix("http://")
        assert m.get_value("fastgw_endpoint_state", cluster="two", endpoint=live, state="healthy") == 1
        assert m.get_value("fastgw_redis_limit_fallbacks_total", route="limited",
                           result="admitted_unlimited") == 3
        assert m.get_value("fastgw_redis_limit_fallbacks_total", route="limited", result="refused") == 0
        assert m.get_value("fastgw_concurrency_in_flight", scope="route", limit="slow") == 1
        assert m.get_value("fastgw_concurrency_queued", scope="route", limit="slow") == 2

    wait_for_scrape(gw, dump, check, timeout=2.5)
    for caller in callers:
        caller.join(20)
    assert results == [200, 200, 200]

    def drained(m):
        assert m.get_value("fastgw_concurrency_in_flight", scope="route", limit="slow") == 0
        assert m.get_value("fastgw_concurrency_queued", scope="route", limit="slow") == 0
    wait_for_scrape(gw, dump, drained)
