"""Config for concurrency limits: routes[].concurrency and
clusters.NAME.concurrency; defaults, errors with key paths, `fastgw routes`."""
from __future__ import annotations

from fastgw.config import load
from fastgw.config.model import Concurrency


def _config(route_block: str = "", cluster_block: str = "") -> str:
    return f"""
clusters:
  infer:
    endpoints: [http://127.0.0.1:9001]
    {cluster_block}
routes:
  - name: generate
    match: {{prefix: /v1/generate}}
    cluster: infer
    {route_block}
  - match: {{prefix: /}}
    cluster: infer
"""


def test_off_unless_configured(write_config, minimal):
    config = load(write_config(minimal), env={})
    assert all(route.concurrency is None for route in config.routes)
    assert all(cluster.concurrency is None for cluster in config.clusters.values())


def test_defaults_no_queue(write_config):
    config = load(write_config(_config("concurrency: {max_in_flight: 4}")), env={})
    assert config.routes[0].concurrency == Concurrency(max_in_flight=4, max_queue=0, queue_timeout=10.0)
    assert config.routes[1].concurrency is None


def test_route_and_cluster_blocks(write_config):
    config = load(write_config(_config(
        "concurrency: {max_in_flight: 2, max_queue: 16, queue_timeout: 30s}",
        "concurrency: {max_in_flight: 8, max_queue: 100}")), env={})
    assert config.routes[0].concurrency == Concurrency(2, 16, 30.0)
    assert config.clusters["infer"].concurrency == Concurrency(8, 100, 10.0)


def test_value_errors_name_the_key_path(config_errors, find_error):
    source, errors = config_errors(_config(
        "concurrency: {max_in_flight: 0, max_queue: -1, queue_timeout: soon, max_inflight: 3}"))
    find_error(errors, source, "routes[0].concurrency.max_in_flight", "must be 1 or more")
    find_error(errors, source, "routes[0].concurrency.max_queue", "must be 0 or more")
    find_error(errors, source, "routes[0].concurrency.queue_timeout", "'soon' is not a duration")
    find_error(errors, source, "routes[0].concurrency.max_inflight", "unknown key", "max_in_flight")
    assert len(errors) == 4, errors


def test_max_in_flight_is_required(config_errors, find_error):
    source, errors = config_errors(_config(cluster_block="concurrency: {max_queue: 5}"))
    find_error(errors, source, "clusters.infer.concurrency.max_in_flight", "missing", "max_in_flight: 4")
    source, errors = config_errors(_config("concurrency:"))
    find_error(errors, source, "routes[0].concurrency.max_in_flight", "missing")


def test_not_a_mapping(config_errors, find_error):
    source, errors = config_errors(_config("concurrency: 10"))
    find_error(errors, source, "routes[0].concurrency", "expected a mapping, got the number 10",
               "concurrency: {max_in_flight: 4")


def test_queue_timeout_needs_a_queue(config_errors, find_error):
    source, errors = config_errors(_config("concurrency: {max_in_flight: 2, queue_timeout: 5s}"))
    find_error(errors, source, "routes[0].concurrency.queue_timeout", "only used with max_queue")
    source, errors = config_errors(_config(
        cluster_block="concurrency: {max_in_flight: 2, max_queue: 0, queue_timeout: 5s}"))
    find_error(errors, source, "clusters.infer.concurrency.queue_timeout", "only used when max_queue is above 0")


def test_misplaced_keys_point_to_the_block(config_errors, find_error):
    source, errors = config_errors(_config("max_in_flight: 2", "max_queue: 4"))
    find_error(errors, source, "routes[0].max_in_flight", "unknown key", "move it under concurrency:")
    find_error(errors, source, "clusters.infer.max_queue", "unknown key", "move it under concurrency:")


def test_routes_shows_both_limits(run_cli, write_config):
    path = write_config(_config("concurrency: {max_in_flight: 2, max_queue: 16, queue_timeout: 30s}",
                                "concurrency: {max_in_flight: 8}"))
    result = run_cli("routes", "--config", str(path), "POST", "/v1/generate")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("concurrency: (host-wide, all workers; the route's slot first, then the cluster's)")
    assert lines[start + 1:start + 3] == [
        "            route generate: 2 in flight, then up to 16 wait in order for at most 30s "
        "(503 queue_full, queue_timeout)",
        "            cluster infer: 8 in flight, no queue (503 concurrency_limited when full)",
    ]
    result = run_cli("routes", "--config", str(write_config(_config())), "GET", "/x")
    assert "concurrency: no limit" in result.stdout.splitlines()
