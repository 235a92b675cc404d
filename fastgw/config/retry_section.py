"""Readers for retries: a route's `retries` block and a cluster's `retry_budget`.

    retries:                 # on every route by default; `retries: off` turns it off
      attempts: 2            # retries after the first try
      retry_on: [connect_failure, reset, 502, 503, 504]   # also: timeout
      per_try_timeout: 2s    # a try without a response head by then is retried
      backoff: {base: 25ms, max: 250ms}             # full jitter
      max_retry_after: 1s    # an upstream's Retry-After above this: no retry
"""
from __future__ import annotations

from functools import partial

from fastgw.config import model
from fastgw.config.errors import Invalid
from fastgw.config.model import RetryBudget, RetryPolicy
from fastgw.config.reader import Section
from fastgw.config.schema import describe, is_digits, parse_duration, parse_int, parse_ratio, suggestion

RETRY_KEYS = ("attempts", "retry_on", "per_try_timeout", "backoff", "max_retry_after")
BACKOFF_KEYS = ("base", "max")
RETRY_BUDGET_KEYS = ("ratio", "min_concurrent")
RETRY_CONDITIONS = ("connect_failure", "reset", "timeout")
RETRY_ON_HINT = ("write a list of connect_failure, reset, timeout and 5xx status codes, "
                 "e.g. retry_on: [connect_failure, 503]")
RETRIES_HINT = "write a mapping like {attempts: 2}, or off"


def read_retries(route: Section) -> RetryPolicy:
    raw = route.get("retries")
    if raw is None:
        return RetryPolicy()
    if raw is False or raw == "off":
        return RetryPolicy(attempts=0)
    if not isinstance(raw, dict):
        route.errors.add(route.path("retries"), f"expected a mapping or off, got {describe(raw)}",
                         RETRIES_HINT)
        return RetryPolicy()
    retries = route.section("retries", RETRY_KEYS, misplaced=dict.fromkeys(BACKOFF_KEYS, "backoff"))
    backoff = retries.section("backoff", BACKOFF_KEYS)
    base = backoff.parse("base", parse_duration, model.DEFAULT_RETRY_BACKOFF_BASE)
    ceiling = backoff.parse("max", parse_duration, max(model.DEFAULT_RETRY_BACKOFF_MAX, base))
    if ceiling < base:
        backoff.errors.add(backoff.path("max"), f"{ceiling:g}s is less than base ({base:g}s)",
                           "the backoff grows from base up to max; use max >= base")
        ceiling = base
    return RetryPolicy(
        attempts=retries.parse("attempts", partial(parse_int, minimum=0, example=2),
                               model.DEFAULT_RETRY_ATTEMPTS),
        retry_on=retries.parse("retry_on", parse_retry_on, model.DEFAULT_RETRY_ON),
        per_try_timeout=retries.parse("per_try_timeout", parse_duration, None),
        backoff_base=base,
        backoff_max=ceiling,
        max_retry_after=retries.parse("max_retry_after", partial(parse_duration, allow_zero=True), 1.0),
    )


def parse_retry_on(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid(f"expected a list, got {describe(value)}", RETRY_ON_HINT)
    conditions = []
    for entry in value:
        if isinstance(entry, int) and not isinstance(entry, bool):
            entry = str(entry)
        if not isinstance(entry, str):
            raise Invalid(f"expected a condition or a status code, got {describe(entry)}", RETRY_ON_HINT)
        if is_digits(entry):
            if len(entry) != 3 or not 500 <= int(entry) <= 599:
                raise Invalid(f"{entry} is not a 5xx status",
                              "only server errors are retried: 500-599, e.g. 503")
        elif entry not in RETRY_CONDITIONS:
            raise Invalid(f"unknown retry condition {entry!r}",
                          suggestion(entry, RETRY_CONDITIONS, "conditions") + "; or a 5xx status code")
        if entry not in conditions:
            conditions.append(entry)
    return tuple(conditions)


def read_retry_budget(cluster: Section) -> RetryBudget:
    budget = cluster.section("retry_budget", RETRY_BUDGET_KEYS)
    return RetryBudget(
        ratio=budget.parse("ratio", parse_ratio, model.DEFAULT_RETRY_BUDGET_RATIO),
        min_concurrent=budget.parse("min_concurrent", partial(parse_int, minimum=0, example=3),
                                    model.DEFAULT_RETRY_BUDGET_MIN),
    )
