"""Config for routes[].retries and clusters.NAME.retry_budget: defaults, off, errors with key paths."""
from __future__ import annotations

import random

from fastgw.config import load
from fastgw.config.model import RetryBudget, RetryPolicy
from fastgw.policy.retry import RetryBudget as RuntimeBudget
from fastgw.policy.retry import RetryRule


def _config(retries: str = "", budget: str = "") -> str:
    route_line = f"\n    retries: {retries}" if retries else ""
    budget_line = f"\n    retry_budget: {budget}" if budget else ""
    return f"""
clusters:
  users:
    endpoints: [http://127.0.0.1:9001]{budget_line}
routes:
  - match: {{prefix: /}}
    cluster: users{route_line}
"""


def test_on_by_default_for_idempotent_failures(write_config):
    config = load(write_config(_config()), env={})
    assert config.routes[0].retries == RetryPolicy()
    assert RetryPolicy().attempts == 2 and RetryPolicy().statuses == {502, 503, 504}
    assert config.clusters["users"].retry_budget == RetryBudget(ratio=0.2, min_concurrent=3)


def test_off(write_config):
    for off in ("off", "false", "{attempts: 0}"):
        assert load(write_config(_config(off)), env={}).routes[0].retries.attempts == 0


def test_every_key(write_config):
    config = load(write_config(_config(
        "{attempts: 3, retry_on: [reset, 500, '503'], per_try_timeout: 2s, backoff: {base: 10ms, max: 1s}, "
        "max_retry_after: 5s}", "{ratio: 0.5, min_concurrent: 10}")), env={})
    assert config.routes[0].retries == RetryPolicy(
        attempts=3, retry_on=("reset", "500", "503"), per_try_timeout=2.0, backoff_base=0.01, backoff_max=1.0,
        max_retry_after=5.0)
    assert config.clusters["users"].retry_budget == RetryBudget(ratio=0.5, min_concurrent=10)


def test_errors_name_the_key(config_errors, find_error, write_config):
    source, errors = config_errors(_config("{retry_on: [connect_failure, 404]}"))
    find_error(errors, source, "routes[0].retries.retry_on", "404 is not a 5xx status")
    source, errors = config_errors(_config("{retry_on: [conect_failure]}"))
    find_error(errors, source, "routes[0].retries.retry_on", "unknown retry condition", "did you mean 'connect_failure'?")
    source, errors = config_errors(_config("{on: [503]}"))
    find_error(errors, source, "routes[0].retries.True", "unknown key", "reads as a boolean in YAML",
               "retry_on")
    source, errors = config_errors(_config("{retry_on: 503}"))
    find_error(errors, source, "routes[0].retries.retry_on", "expected a list")
    source, errors = config_errors(_config("{backoff: {base: 1s, max: 100ms}}"))
    find_error(errors, source, "routes[0].retries.backoff.max", "less than base")
    source, errors = config_errors(_config("{base: 1s}"))
    find_error(errors, source, "routes[0].retries.base", "unknown key", "move it under backoff:")
    source, errors = config_errors(_config("{attempts: -1}"))
    find_error(errors, source, "routes[0].retries.attempts")
    source, errors = config_errors(_config("3"))
    find_error(errors, source, "routes[0].retries", "expected a mapping or off")
    source, errors = config_errors(_config(budget="{ratio: 2}"))
    find_error(errors, source, "clusters.users.retry_budget.ratio", "at most 1")


def test_backoff_is_full_jitter_under_a_growing_cap():
    rule = RetryRule(RetryPolicy(backoff_base=0.1, backoff_max=0.5), random.Random(7))
    for retry, cap in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (40, 0.5)):
        delays = [rule.backoff(retry) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays) and max(delays) > cap * 0.8


def test_retry_after_parsing():
    assert RetryRule.parse_retry_after(b" 3 ") == 3.0
    assert RetryRule.parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT") == -1.0


def test_budget_counts_retries_against_requests_in_flight():
    class Pool:
        def __init__(self, active):
            self.active = active

    budget = RuntimeBudget(RetryBudget(ratio=0.2, min_concurrent=1))
    pools = [Pool(30), Pool(20)]  # 50 in flight: up to 10 retries at once
    assert all(budget.acquire(pools) for _ in range(10))
    assert not budget.acquire(pools) and budget.refused == 1
    budget.release()
    assert budget.acquire(pools)
    idle = RuntimeBudget(RetryBudget(ratio=0.2, min_concurrent=1))
    assert idle.acquire([Pool(0)]) and not idle.acquire([Pool(0)])  # the floor
