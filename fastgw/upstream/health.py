"""Active health checks: every `interval`, an HTTP/1.1 GET of the check path
to each endpoint on a fresh, short connection (never one of the request
pool's), which passes when a status line in `expected_statuses` arrives
within `timeout`.

An endpoint becomes unhealthy after `unhealthy_threshold` failed checks in a
row and healthy again after `healthy_threshold` passes in a row. Endpoints
start healthy, so a restart or a reload does not refuse traffic while the
first checks are in flight, but that first check decides alone: a failing
one marks the endpoint unhealthy at once instead of waiting for
`unhealthy_threshold` checks (an endpoint that is down at start-up is out
within FIRST_CHECK_SPREAD plus one timeout). Endpoints added by discovery are treated the same way.

Where checks run: in every worker's event loop, each worker checking every
endpoint for itself (as HAProxy did in its multi-process mode). Checking
once per host would need a checker process or a leader worker and a shared
state table written by one and read by all; per-worker checks need neither,
their state is where the balancer reads it, and a worker restarted by the
master starts checking at once. The price is N workers x checks: with 8
workers, 50 endpoints and the default 5 s interval, 80 small GETs a second
for the host, at 0.11-0.14 ms of checker CPU each (bench/health_check_cost.py
on the 2-core dev machine), about 1% of one core; each endpoint sees
N / interval checks a second (1.6/s here), which is what an upstream
behind N single-process gateways would see anyway. Each endpoint's first check is delayed by
a random fraction of the interval (at most 0.5 s) so that workers started
together don't check in lockstep. Two workers may disagree for up to one
interval; each balances on what it saw.
"""
from __future__ import annotations

import asyncio
import logging
import random
import re

from fastgw.config.schema import format_address

log = logging.getLogger("fastgw")

# The first check of an endpoint waits a random share of this (or of the interval if shorter).
FIRST_CHECK_SPREAD = 0.5
MAX_STATUS_LINE = 8192
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: |\r?\n|$)")


def check_request(check, host: str, port: int) -> bytes:
    """The bytes of one check: a GET that closes its connection."""
    authority = check.host or format_address(host, port)
    return (f"GET {check.path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: fastgw-health-check\r\n"
            f"Accept: */*\r\nConnection: close\r\n\r\n").encode("ascii")


async def probe(check, host: str, port: int) -> tuple[bool, str]:
    """One check: (passed, what happened) for logs."""
    try:
        return await asyncio.wait_for(_probe(check, host, port), check.timeout)
    except TimeoutError:
        return False, f"no answer within {check.timeout:g}s"
    except OSError as err:
        return False, f"connect failed: {err.strerror or err}"


async def _probe(check, host: str, port: int) -> tuple[bool, str]:
    reader, writer = await asyncio.open_connection(host, port, limit=MAX_STATUS_LINE)
    try:
        writer.write(check_request(check, host, port))
        try:
            line = await reader.readline()
        except ValueError:  # longer than the limit
            return False, "status line too long"
        match = _STATUS_LINE.match(line)
        if match is None:
            return False, "closed without a response" if not line else f"not an HTTP response: {line[:60]!r}"
        status = int(match.group(1))
        if check.expects(status):
            return True, f"status {status}"
        return False, f"status {status}"
    finally:
        writer.close()


class HealthChecker:
    """One cluster's active checks in one worker. `on_change()` is called
    when an endpoint's health changes; `is_healthy(endpoint)` answers."""

    __slots__ = ("loop", "config", "name", "on_change", "tasks", "states")

    def __init__(self, loop, config, cluster_name: str, on_change):
        self.loop = loop
        self.config = config
        self.name = cluster_name
        self.on_change = on_change
        self.tasks: dict[object, asyncio.Task] = {}
        # endpoint -> [healthy, checked yet, passes in a row, failures in a row]
        self.states: dict[object, list] = {}

    def add(self, pool) -> None:
        if pool in self.tasks:
            return
        self.states[pool] = [True, False, 0, 0]
        self.tasks[pool] = self.loop.create_task(self._watch(pool))

    def remove(self, pool) -> None:
        task = self.tasks.pop(pool, None)
        if task is not None:
            task.cancel()
        self.states.pop(pool, None)

    def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()

    def is_healthy(self, pool) -> bool:
        state = self.states.get(pool)
        return state is None or state[0]

    async def _watch(self, pool) -> None:
        check = self.config
        await asyncio.sleep(random.uniform(0, min(FIRST_CHECK_SPREAD, check.interval)))
        endpoint = pool.endpoint
        while True:
            try:
                passed, detail = await probe(check, endpoint.host, endpoint.port)
            except Exception as err:  # a bug must not end the checks silently
                log.error("health check: cluster '%s' endpoint %s: internal error %r",
                          self.name, endpoint.address, err, exc_info=err)
                passed, detail = False, f"internal error {err!r}"
            if pool not in self.states:
                return  # removed while the check was in flight
            self.result(pool, passed, detail)
            await asyncio.sleep(check.interval)

    def result(self, pool, passed: bool, detail: str) -> None:
        """Count one check's result; calls on_change when health flips."""
        state = self.states[pool]
        healthy, checked = state[0], state[1]
        state[1] = True
        check = self.config
        if passed:
            state[2] += 1
            state[3] = 0
            if not healthy and state[2] >= check.healthy_threshold:
                state[0] = True
                log.info("health check: cluster '%s' endpoint %s is healthy again (%d passed checks; %s; this worker)",
                         self.name, pool.endpoint.address, state[2], detail)
                self.on_change()
        else:
            state[3] += 1
            state[2] = 0
            if healthy and (state[3] >= check.unhealthy_threshold or not checked):
                state[0] = False
                why = "the first check failed" if not checked else f"{state[3]} failed checks"
                log.warning("health check: cluster '%s' endpoint %s is unhealthy (%s; last: %s; this worker)",
                            self.name, pool.endpoint.address, why, detail)
                self.on_change()
