"""Config for clusters.NAME.circuit_breaker: defaults, both trip models, errors with key paths."""
from __future__ import annotations

from fastgw.config import load
from fastgw.config.model import CircuitBreaker


def _cluster(breaker: str) -> str:
    return f"""
clusters:
  users:
    endpoints: [http://127.0.0.1:9001]
    circuit_breaker: {breaker}
routes:
  - match: {{prefix: /}}
    cluster: users
"""


def test_off_unless_configured(write_config, minimal):
    assert all(c.circuit_breaker is None for c in load(write_config(minimal), env={}).clusters.values())


def test_defaults_and_consecutive_model(write_config):
    config = load(write_config(_cluster("{}")), env={})
    assert config.clusters["users"].circuit_breaker == CircuitBreaker(
        failures=5, failure_ratio=None, open_for=10.0, half_open_probes=1)
    config = load(write_config(_cluster("{failures: 3, open_for: 500ms, half_open_probes: 2}")), env={})
    assert config.clusters["users"].circuit_breaker == CircuitBreaker(failures=3, open_for=0.5, half_open_probes=2)


def test_ratio_model(write_config):
    config = load(write_config(_cluster("{failure_ratio: 0.5, window: 50, min_requests: 20, open_for: 30s}")), env={})
    assert config.clusters["users"].circuit_breaker == CircuitBreaker(
        failure_ratio=0.5, window=50, min_requests=20, open_for=30.0)
    # min_requests defaults to 10, or the window when it is smaller.
    assert load(write_config(_cluster("{failure_ratio: 1, window: 4}")), env={}) \
        .clusters["users"].circuit_breaker.min_requests == 4


def test_each_value_error(config_errors, find_error):
    source, errors = config_errors(_cluster(
        "{failures: 0, open_for: soon, half_open_probes: x, fail: 1}"))
    find_error(errors, source, "clusters.users.circuit_breaker.failures", "must be 1 or more")
    find_error(errors, source, "clusters.users.circuit_breaker.open_for", "soon")
    find_error(errors, source, "clusters.users.circuit_breaker.half_open_probes", "whole number")
    find_error(errors, source, "clusters.users.circuit_breaker.fail", "unknown key", "failures")
    assert len(errors) == 4, errors


def test_ratio_errors(config_errors, find_error):
    source, errors = config_errors(_cluster("{failure_ratio: 1.5, window: 0}"))
    find_error(errors, source, "clusters.users.circuit_breaker.failure_ratio", "at most 1", "between 0 and 1")
    find_error(errors, source, "clusters.users.circuit_breaker.window", "must be 1 or more")
    source, errors = config_errors(_cluster("{failure_ratio: '50%'}"))
    find_error(errors, source, "clusters.users.circuit_breaker.failure_ratio", "expected a number")
    source, errors = config_errors(_cluster("{failure_ratio: 0.5, window: 5, min_requests: 6}"))
    find_error(errors, source, "clusters.users.circuit_breaker.min_requests", "more than window")


def test_one_model_per_breaker(config_errors, find_error):
    source, errors = config_errors(_cluster("{failures: 5, failure_ratio: 0.5}"))
    find_error(errors, source, "clusters.users.circuit_breaker.failures", "can't be combined with failure_ratio")
    source, errors = config_errors(_cluster("{failures: 5, window: 10, min_requests: 5}"))
    find_error(errors, source, "clusters.users.circuit_breaker.window", "only used with failure_ratio")
    find_error(errors, source, "clusters.users.circuit_breaker.min_requests", "only used with failure_ratio")


def test_not_a_mapping(config_errors, find_error):
    source, errors = config_errors(_cluster("yes"))
    find_error(errors, source, "clusters.users.circuit_breaker", "expected a mapping")


def test_routes_shows_the_breaker(write_config, run_cli):
    path = write_config(_cluster("{failures: 3, open_for: 500ms}"))
    result = run_cli("routes", "--config", str(path), "GET", "/x")
    assert result.returncode == 0, result.stderr
    assert ("circuit breaker: opens after 3 consecutive failures, open for 500ms, "
            "then 1 half-open probe(s); per worker") in result.stdout
    path = write_config(_cluster("{failure_ratio: 0.5, window: 20}"))
    assert "opens when 0.5 of the last 20 requests fail (at least 10 counted)" in \
        run_cli("routes", "--config", str(path), "GET", "/x").stdout


def test_routes_says_nothing_without_a_breaker(write_config, run_cli, minimal):
    result = run_cli("routes", "--config", str(write_config(minimal)), "GET", "/x")
    assert "circuit breaker" not in result.stdout
