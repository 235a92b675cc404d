"""The validated form of a cluster's health and discovery keys (frozen
dataclasses, no behaviour), read by fastgw/config/health_section.py and used
by fastgw/upstream/ (health.py, outlier.py, discovery.py).

Durations are float seconds; shares are percents (0-100) as written.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HC_INTERVAL = 5.0
DEFAULT_HC_TIMEOUT = 1.0
DEFAULT_HC_HEALTHY_THRESHOLD = 2
DEFAULT_HC_UNHEALTHY_THRESHOLD = 3
DEFAULT_HC_EXPECTED_STATUSES = ((200, 399),)

DEFAULT_OD_CONSECUTIVE_5XX = 5
DEFAULT_OD_CONSECUTIVE_CONNECT_FAILURES = 5
DEFAULT_OD_BASE_EJECTION = 30.0
DEFAULT_OD_MAX_EJECTION = 300.0
DEFAULT_OD_MAX_EJECTED_PERCENT = 50.0

DEFAULT_DNS_INTERVAL = 30.0
DEFAULT_FILE_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active checks (fastgw/upstream/health.py): an HTTP/1.1 GET of `path`
    on a fresh connection every `interval`, answered within `timeout` with a
    status in `expected_statuses` (inclusive ranges) to pass."""
    path: str
    interval: float = DEFAULT_HC_INTERVAL
    timeout: float = DEFAULT_HC_TIMEOUT
    healthy_threshold: int = DEFAULT_HC_HEALTHY_THRESHOLD
    unhealthy_threshold: int = DEFAULT_HC_UNHEALTHY_THRESHOLD
    expected_statuses: tuple[tuple[int, int], ...] = DEFAULT_HC_EXPECTED_STATUSES
    host: str | None = None   # the Host header; None: the endpoint's host:port

    def expects(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.expected_statuses)


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Passive ejection (fastgw/upstream/outlier.py) from the outcomes of
    real requests: `consecutive_5xx` 5xx answers (or malformed responses),
    or `consecutive_connect_failures` connect failures, timeouts or resets in
    a row eject an endpoint for base_ejection x (its ejection count), at most
    max_ejection; never more than max_ejected_percent of the cluster at once."""
    consecutive_5xx: int = DEFAULT_OD_CONSECUTIVE_5XX
    consecutive_connect_failures: int = DEFAULT_OD_CONSECUTIVE_CONNECT_FAILURES
    base_ejection: float = DEFAULT_OD_BASE_EJECTION
    max_ejection: float = DEFAULT_OD_MAX_EJECTION
    max_ejected_percent: float = DEFAULT_OD_MAX_EJECTED_PERCENT


@dataclass(frozen=True, slots=True)
class DnsDiscovery:
    """Endpoints are the addresses `name` resolves to (port `port`, weight 1),
    re-resolved every `interval`."""
    name: str
    port: int
    interval: float = DEFAULT_DNS_INTERVAL
    resolver: tuple[str, int] | None = None    # a DNS server to ask instead of the system resolver


@dataclass(frozen=True, slots=True)
class EndpointsFile:
    """Endpoints are read from `path` (absolute; YAML or JSON, the shape of
    `endpoints`), checked for changes every `interval`."""
    path: str
    interval: float = DEFAULT_FILE_INTERVAL
