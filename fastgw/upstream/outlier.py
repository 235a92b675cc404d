"""Passive outlier detection: eject an endpoint that keeps failing real
requests, for a time that grows each time it happens again.

Fed by the outcome of every use of an endpoint (`ClusterRuntime.report`,
codes in fastgw._native.proxy):

    STATUS_5XX, BAD_RESPONSE           count towards consecutive_5xx (the
                                       client got a 5xx either way)
    CONNECT_FAILURE, TIMEOUT, RESET    count towards consecutive_connect_failures
                                       (refused or unreachable, no answer in
                                       time, closed before answering)
    OK                                 resets both counts
    CANCELLED                          counts neither way (the client left)

An endpoint whose count reaches its threshold is ejected (taken out of the
balancer) for `base_ejection x n`, n being its ejection count, capped at
`max_ejection`; then it returns on its own and gets real traffic again. n
decays by one for each `base_ejection` an endpoint spends back in service
without being ejected, so a flap long ago does not keep doubling the
penalty. At most `max_ejected_percent` of the cluster's endpoints (rounded
down) are ejected at once: an endpoint over the limit stays in service, and
is ejected on its next failure if room was made meanwhile. So a one-endpoint
cluster is never ejected below 100%.

State is per worker process, as for the circuit breaker: each worker counts
the outcomes it sees and ejects on its own. Outcomes of requests that were
already in flight when their endpoint was ejected are ignored.

The detector is pure bookkeeping on an injected clock; `ClusterRuntime`
schedules `expire()` at `next_return()` and rebuilds its balancer when
`record` or `expire` report a change.
"""
from __future__ import annotations

import logging
import math
import time

from fastgw._native.codes import BAD_RESPONSE, CONNECT_FAILURE, OK, RESET, STATUS_5XX, TIMEOUT

log = logging.getLogger("fastgw")

SERVER_ERRORS = frozenset((STATUS_5XX, BAD_RESPONSE))
CONNECT_ERRORS = frozenset((CONNECT_FAILURE, TIMEOUT, RESET))


class _Record:
    __slots__ = ("errors_5xx", "errors_connect", "ejections", "ejected_until", "returned_at")

    def __init__(self):
        self.errors_5xx = 0
        self.errors_connect = 0
        self.ejections = 0          # n: the next ejection lasts base * (n + 1), decayed
        self.ejected_until = 0.0    # 0: in service
        self.returned_at = None     # when the last ejection ended


def ejection_seconds(config, ejections: int) -> float:
    """How long the `ejections`-th ejection (1-based) lasts."""
    return min(config.base_ejection * ejections, config.max_ejection)


def max_ejected(config, total: int) -> int:
    """How many of `total` endpoints may be ejected at once (rounded down)."""
    return math.floor(total * config.max_ejected_percent / 100 + 1e-9)


class OutlierDetector:
    """One cluster's ejections in one worker. Endpoints are keys (the
    cluster's pools); `add`/`remove` follow discovery."""

    __slots__ = ("config", "name", "clock", "records", "ejected", "ejections_total")

    def __init__(self, config, cluster_name: str, clock=time.monotonic):
        self.config = config
        self.name = cluster_name
        self.clock = clock
        self.records: dict[object, _Record] = {}
        self.ejected = 0
        self.ejections_total = 0    # ejections ever (metrics)

    def add(self, endpoint) -> None:
        self.records.setdefault(endpoint, _Record())

    def remove(self, endpoint) -> None:
        record = self.records.pop(endpoint, None)
        if record is not None and record.ejected_until:
            self.ejected -= 1

    def is_ejected(self, endpoint) -> bool:
        record = self.records.get(endpoint)
        return record is not None and record.ejected_until != 0.0

    def record(self, endpoint, outcome: int) -> bool:
        """Count one outcome; True when it ejected the endpoint."""
        record = self.records.get(endpoint)
        if record is None or record.ejected_until:
            return False  # removed by discovery, or already out: news from before
        if outcome == OK:
            record.errors_5xx = record.errors_connect = 0
            return False
        config = self.config
        if outcome in SERVER_ERRORS:
            record.errors_5xx += 1
            if record.errors_5xx >= config.consecutive_5xx:
                return self._eject(endpoint, record, f"{record.errors_5xx} consecutive 5xx responses")
        elif outcome in CONNECT_ERRORS:
            record.errors_connect += 1
            if record.errors_connect >= config.consecutive_connect_failures:
                return self._eject(endpoint, record,
                                   f"{record.errors_connect} consecutive connect failures or timeouts")
        return False

    def _eject(self, endpoint, record: _Record, reason: str) -> bool:
        if self.ejected + 1 > max_ejected(self.config, len(self.records)):
            return False  # over the share: keeps serving; counts stay, so the next failure tries again
        now = self.clock()
        base = self.config.base_ejection
        if record.returned_at is not None:
            record.ejections = max(0, record.ejections - int((now - record.returned_at) // base))
        record.ejections += 1
        seconds = ejection_seconds(self.config, record.ejections)
        record.ejected_until = now + seconds
        record.errors_5xx = record.errors_connect = 0
        self.ejected += 1
        self.ejections_total += 1
        log.warning("outlier detection: cluster '%s' endpoint %s ejected for %gs (%s; ejection %d; this worker)",
                    self.name, _address(endpoint), seconds, reason, record.ejections)
        return True

    def next_return(self) -> float | None:
        """The clock time at which the next ejected endpoint returns."""
        times = [r.ejected_until for r in self.records.values() if r.ejected_until]
        return min(times) if times else None

    def expire(self) -> bool:
        """Return the endpoints whose ejection is over; True if any did."""
        now = self.clock()
        returned = False
        for endpoint, record in self.records.items():
            if record.ejected_until and record.ejected_until <= now:
                record.ejected_until = 0.0
                record.returned_at = now
                self.ejected -= 1
                returned = True
                log.info("outlier detection: cluster '%s' endpoint %s back in service (this worker)",
                         self.name, _address(endpoint))
        return returned


def _address(endpoint) -> str:
    inner = getattr(endpoint, "endpoint", None)  # a pool carries its endpoint
    return getattr(inner, "address", None) or getattr(endpoint, "address", None) or str(endpoint)
