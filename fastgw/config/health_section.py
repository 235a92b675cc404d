"""Readers for a cluster's health and discovery keys:

    health_check        active HTTP checks
    outlier_detection   passive ejection from request outcomes
    panic_threshold     below this share of healthy endpoints, balance over all
    dns                 endpoints from a DNS name, re-resolved on an interval
    endpoints_file      endpoints from a watched YAML/JSON file

`read_discovery` decides where a cluster's endpoints come from (exactly one
of `endpoints`, `dns`, `endpoints_file`); `read_health` reads the rest. Both
record errors with their key paths, like every other section reader.
"""
from __future__ import annotations

import ipaddress
import os
import re
from functools import partial

from fastgw.config import health_model as hm
from fastgw.config.endpoints_file import EndpointsFileError, read_endpoints_file
from fastgw.config.errors import Invalid
from fastgw.config.model import Endpoint
from fastgw.config.reader import Section
from fastgw.config.schema import _HOSTNAME_RE, config_dir, describe, parse_address, parse_duration, parse_int, parse_port

HEALTH_KEYS = ("health_check", "outlier_detection", "panic_threshold")
DISCOVERY_KEYS = ("dns", "endpoints_file")
HEALTH_CHECK_KEYS = ("path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold",
                     "expected_statuses", "host")
OUTLIER_KEYS = ("consecutive_5xx", "consecutive_connect_failures", "base_ejection", "max_ejection",
                "max_ejected_percent")
DNS_KEYS = ("name", "port", "interval", "resolver")
FILE_KEYS = ("path", "interval")

SOURCES_HINT = "give exactly one of endpoints (a static list), dns ({name, port}) or endpoints_file (a path)"


# --- value parsers ---------------------------------------------------------

PERCENT_HINT = "write a share from 0 to 100, as a number or a string like 50%"


def parse_percent(value: object) -> float:
    """`50`, `50%`, `12.5%` -> 50.0 / 12.5; 0 to 100."""
    text = value
    if isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        try:
            text = float(text)
        except ValueError:
            raise Invalid(f"{value!r} is not a percentage", PERCENT_HINT) from None
    if isinstance(text, bool) or not isinstance(text, (int, float)):
        raise Invalid(f"expected a percentage, got {describe(value)}", PERCENT_HINT)
    if not 0 <= text <= 100:
        raise Invalid(f"must be between 0 and 100, got {value}", PERCENT_HINT)
    return float(text)


CHECK_PATH_HINT = "write the path the endpoint answers health checks on, e.g. /healthz"
_BAD_PATH_CHARS = re.compile(r"[\s#\x00-\x1f\x7f]")


def parse_check_path(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a path string, got {describe(value)}", CHECK_PATH_HINT)
    if not value.startswith("/"):
        raise Invalid(f"{value!r} does not start with '/'", f"write it like /{value.lstrip('/')}")
    bad = _BAD_PATH_CHARS.search(value)
    if bad or not value.isascii():
        raise Invalid(f"{value!r} contains {bad.group() if bad else 'non-ASCII characters'!r}",
                      "a request target is ASCII without spaces or control characters; percent-encode the rest")
    return value


STATUSES_HINT = "write statuses or ranges, e.g. 200-399, [200, 204] or ['200-299', 404]"
_RANGE_RE = re.compile(r"\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?", re.ASCII)


def parse_expected_statuses(value: object) -> tuple[tuple[int, int], ...]:
    """`200-399`, `200`, or a list of those -> inclusive (low, high) ranges."""
    parts = value if isinstance(value, list) else [value]
    if not parts:
        raise Invalid("the list is empty", STATUSES_HINT)
    ranges = []
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            low = high = part
        elif isinstance(part, str) and (match := _RANGE_RE.fullmatch(part)):
            low = int(match.group(1))
            high = int(match.group(2) or low)
        else:
            raise Invalid(f"{describe(part)} is not a status or a range", STATUSES_HINT)
        if not (100 <= low <= 599 and 100 <= high <= 599):
            raise Invalid(f"{part!r}: statuses are 100 to 599", STATUSES_HINT)
        if low > high:
            raise Invalid(f"range {part!r} ends before it starts", f"write it as {high}-{low}")
        ranges.append((low, high))
    return tuple(ranges)


HOST_HEADER_HINT = "write the Host the endpoint expects, e.g. api.internal or api.internal:8080"


def parse_host_header(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a host name, got {describe(value)}", HOST_HEADER_HINT)
    text = value.strip()
    if re.search(r"[\s\x00-\x1f\x7f/?#@]", text) or not text.isascii():
        raise Invalid(f"{value!r} is not a valid Host header value", HOST_HEADER_HINT)
    return text


DNS_NAME_HINT = "write a host name, e.g. users.service.consul"


def parse_dns_name(value: object) -> str:
    if not isinstance(value, str) or not _HOSTNAME_RE.fullmatch(value.strip()):
        raise Invalid(f"{describe(value)} is not a valid host name", DNS_NAME_HINT)
    return value.strip().lower()


PORT_HINT = "write a port number, 1 to 65535, e.g. 8080"


def parse_dns_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise Invalid(f"expected a port number, got {describe(value)}", PORT_HINT)
    return parse_port(str(value).strip(), PORT_HINT)


RESOLVER_HINT = "write the DNS server's IP address and port, e.g. 127.0.0.1:53 or [::1]:5353"


def parse_dns_resolver(value: object) -> tuple[str, int]:
    """`dns.resolver`: a DNS server's `ip:port` (an IP: resolving the resolver
    would need a resolver)."""
    try:
        host, port = parse_address(value)
    except Invalid as invalid:
        raise Invalid(invalid.problem, RESOLVER_HINT) from None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise Invalid(f"{host!r} is not an IP address", RESOLVER_HINT) from None
    return host, port


FILE_PATH_HINT = "write the path of a YAML or JSON list of endpoints, e.g. /etc/fastgw/users-endpoints.json"


def parse_file_path(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a file path, got {describe(value)}", FILE_PATH_HINT)
    return value.strip()


# --- readers ---------------------------------------------------------------

def read_discovery(cluster: Section, read_static) -> tuple[tuple[Endpoint, ...], dict]:
    """(the cluster's endpoints at load, its discovery fields for `Cluster`).

    `read_static(cluster)` reads `endpoints:` (sections.py). A file's
    endpoints are read now, so `fastgw check` reports a bad file; a DNS
    cluster starts empty and each worker resolves the name when it starts.
    """
    given = [key for key in ("endpoints", "dns", "endpoints_file") if cluster.has(key)]
    if len(given) > 1:
        for key in given[1:]:
            cluster.errors.add(cluster.path(key), f"can't be combined with {given[0]}", SOURCES_HINT)
    source = given[0] if given else "endpoints"
    if source == "endpoints":
        return read_static(cluster), {}
    if source == "dns":
        return (), {"dns": _read_dns(cluster)}
    endpoints_file = _read_endpoints_file(cluster)
    if endpoints_file is None:
        return (), {}
    try:
        endpoints = read_endpoints_file(endpoints_file.path)
    except EndpointsFileError as error:
        for where, problem, hint in error.problems:
            cluster.errors.add(cluster.path("endpoints_file"),
                               f"{error.path}: {where + ': ' if where else ''}{problem}", hint)
        endpoints = ()
    return endpoints, {"endpoints_file": endpoints_file}


def _read_dns(cluster: Section) -> hm.DnsDiscovery | None:
    section = cluster.section("dns", DNS_KEYS, hint="write dns: {name: users.internal, port: 8080}")
    name = section.require("name", parse_dns_name, "", DNS_NAME_HINT)
    port = section.require("port", parse_dns_port, 0, PORT_HINT)
    interval = section.parse("interval", parse_duration, hm.DEFAULT_DNS_INTERVAL)
    resolver = section.parse("resolver", parse_dns_resolver, None)
    if not name or not port:
        return None
    return hm.DnsDiscovery(name=name, port=port, interval=interval, resolver=resolver)


def _read_endpoints_file(cluster: Section) -> hm.EndpointsFile | None:
    """`endpoints_file: PATH`, or `{path: PATH, interval: 1s}`; a relative
    path is relative to the config file's directory."""
    raw = cluster.get("endpoints_file")
    if isinstance(raw, dict):
        section = cluster.section("endpoints_file", FILE_KEYS)
        path = section.require("path", parse_file_path, "", FILE_PATH_HINT)
        interval = section.parse("interval", parse_duration, hm.DEFAULT_FILE_INTERVAL)
    else:
        path = cluster.parse("endpoints_file", parse_file_path, "")
        interval = hm.DEFAULT_FILE_INTERVAL
    if not path:
        return None
    path = os.path.normpath(os.path.join(config_dir(cluster), os.path.expanduser(path)))
    return hm.EndpointsFile(path=path, interval=interval)


def read_health(cluster: Section) -> dict:
    """The Cluster fields for health_check, outlier_detection and panic_threshold."""
    fields: dict = {}
    if "health_check" in cluster.raw:
        fields["health_check"] = _read_health_check(cluster)
    if "outlier_detection" in cluster.raw:
        fields["outlier_detection"] = _read_outlier_detection(cluster)
    if cluster.has("panic_threshold"):
        fields["panic_threshold"] = cluster.parse("panic_threshold", parse_percent, 0.0)
    return fields


def _read_health_check(cluster: Section) -> hm.HealthCheck | None:
    section = cluster.section("health_check", HEALTH_CHECK_KEYS, hint="write health_check: {path: /healthz}")
    path = section.require("path", parse_check_path, "", CHECK_PATH_HINT)
    whole = partial(parse_int, minimum=1, example=2)
    check = hm.HealthCheck(
        path=path or "/",
        interval=section.parse("interval", parse_duration, hm.DEFAULT_HC_INTERVAL),
        timeout=section.parse("timeout", parse_duration, hm.DEFAULT_HC_TIMEOUT),
        healthy_threshold=section.parse("healthy_threshold", whole, hm.DEFAULT_HC_HEALTHY_THRESHOLD),
        unhealthy_threshold=section.parse("unhealthy_threshold", whole, hm.DEFAULT_HC_UNHEALTHY_THRESHOLD),
        expected_statuses=section.parse("expected_statuses", parse_expected_statuses,
                                        hm.DEFAULT_HC_EXPECTED_STATUSES),
        host=section.parse("host", parse_host_header, None),
    )
    return check if path else None


def _read_outlier_detection(cluster: Section) -> hm.OutlierDetection:
    section = cluster.section("outlier_detection", OUTLIER_KEYS)
    whole = partial(parse_int, minimum=1, example=5)
    base = section.parse("base_ejection", parse_duration, hm.DEFAULT_OD_BASE_EJECTION)
    longest = section.parse("max_ejection", parse_duration, max(base, hm.DEFAULT_OD_MAX_EJECTION))
    if longest < base:
        section.errors.add(section.path("max_ejection"), f"{longest:g}s is shorter than base_ejection ({base:g}s)",
                           "max_ejection caps the growing ejection time; make it at least base_ejection")
    return hm.OutlierDetection(
        consecutive_5xx=section.parse("consecutive_5xx", whole, hm.DEFAULT_OD_CONSECUTIVE_5XX),
        consecutive_connect_failures=section.parse("consecutive_connect_failures", whole,
                                                   hm.DEFAULT_OD_CONSECUTIVE_CONNECT_FAILURES),
        base_ejection=base,
        max_ejection=longest,
        max_ejected_percent=section.parse("max_ejected_percent", parse_percent, hm.DEFAULT_OD_MAX_EJECTED_PERCENT),
    )
