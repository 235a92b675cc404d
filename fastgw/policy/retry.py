"""Retries (phase 11): what a route retries, how long it waits, and how much
retrying a cluster allows.

The exchange (fastgw/_native/proxy.pyx, `Exchange._retry*`) decides *whether* a
failed try may run again from facts only it knows: no response byte reached
the client yet, and either nothing reached the upstream (connect failure) or
the method is idempotent and every request byte sent so far is still held
(the replay log keeps up to 64 KiB). This module holds the configured part:

- `RetryRule` (one per route): which failures are retried, how many times,
  the backoff (full jitter: uniform in [0, min(max, base * 2^n)], as in the
  AWS architecture blog's analysis, so retries of many clients spread out)
  and the longest upstream `Retry-After` the gateway waits for itself.
- `RetryBudget` (one per cluster and worker): retries in flight may not
  exceed `ratio` of the cluster's requests in flight, or `min_concurrent`
  when larger. A failing upstream thus sees at most ~ratio extra load
  instead of (attempts + 1) times its traffic. An exchange holds one unit
  from its first retry until it ends.
"""
from __future__ import annotations

import random

from fastgw.config.model import RetryBudget as RetryBudgetConfig
from fastgw.config.model import RetryPolicy
from fastgw.pipeline.phases import Phase


class RetryRule:
    __slots__ = ("attempts", "statuses", "on_connect_failure", "on_reset", "on_timeout",
                 "base", "ceiling", "max_retry_after", "_random")

    def __init__(self, policy: RetryPolicy, rng: random.Random | None = None):
        self.attempts = policy.attempts
        self.statuses = policy.statuses
        self.on_connect_failure = "connect_failure" in policy.retry_on
        self.on_reset = "reset" in policy.retry_on
        # A per-try timeout exists to be retried: setting one implies `timeout`.
        self.on_timeout = "timeout" in policy.retry_on or policy.per_try_timeout is not None
        self.base = policy.backoff_base
        self.ceiling = policy.backoff_max
        self.max_retry_after = policy.max_retry_after
        self._random = (rng or random.Random()).random

    def backoff(self, retry: int) -> float:
        """Seconds before retry number `retry` (1 for the first)."""
        return self._random() * min(self.ceiling, self.base * (1 << min(retry - 1, 30)))

    @staticmethod
    def parse_retry_after(value: bytes) -> float:
        """Seconds an upstream asks us to wait; -1 when it names a date or is
        malformed (then the response is passed on rather than guessed at)."""
        value = value.strip()
        if value.isdigit() and len(value) <= 9:
            return float(int(value))
        return -1.0


def make_retry_rule(policy: RetryPolicy) -> RetryRule | None:
    return RetryRule(policy) if policy.attempts > 0 else None


class RetryBudget:
    __slots__ = ("ratio", "min_concurrent", "active", "granted", "refused", "sent")

    def __init__(self, config: RetryBudgetConfig):
        self.ratio = config.ratio
        self.min_concurrent = config.min_concurrent
        self.active = 0      # exchanges retrying now
        self.granted = 0     # first retries allowed, ever
        self.refused = 0     # retries refused by the budget, ever
        self.sent = 0        # retries scheduled, ever (each try after the first)

    def acquire(self, pools) -> bool:
        in_flight = 0
        for pool in pools:
            in_flight += pool.active
        if self.active >= max(self.min_concurrent, self.ratio * in_flight):
            self.refused += 1
            return False
        self.active += 1
        self.granted += 1
        return True

    def release(self) -> None:
        self.active -= 1


class RetryPolicyInstaller:
    """Retries as a policy: the route's RetryRule in the plan's native slot;
    the exchange takes the decision in one place (`Exchange._retry_after`,
    phase failure)."""
    name = "retries"
    phases = (Phase.FAILURE,)

    def prepare(self, gateway) -> None:
        pass

    def install(self, builder, route) -> None:
        builder.native.retry = make_retry_rule(route.retries)


POLICY = RetryPolicyInstaller()
