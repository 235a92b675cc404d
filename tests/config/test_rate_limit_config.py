"""Config for rate limits: routes[].rate_limits, server.trusted_proxies, server.rate_limit_slots."""
from __future__ import annotations

import ipaddress

from fastgw.config import load
from fastgw.config.model import DEFAULT_RATE_LIMIT_SLOTS, RateLimit

CLUSTERS = """
clusters:
  users:
    endpoints: [http://127.0.0.1:9001]
"""


def _with_limits(limits: str, server: str = "") -> str:
    return server + CLUSTERS + """
routes:
  - match: {prefix: /}
    cluster: users
    rate_limits:
""" + "".join(f"      {line}\n" for line in limits.strip().splitlines())


def test_defaults(write_config, minimal):
    config = load(write_config(minimal), env={})
    assert config.server.trusted_proxies == ()
    assert config.server.rate_limit_slots == DEFAULT_RATE_LIMIT_SLOTS == 65536
    assert config.routes[0].rate_limits == ()


def test_limits_are_read_with_their_defaults(write_config):
    config = load(write_config(_with_limits("""
- {key: client_ip, rate: 100/s}
- {key: "client_ip+header:X-Tenant", rate: 0.5/s}
- {key: route, rate: 1000/h, algorithm: sliding_window, scope: local}
- {key: "header:X-Api-Key", rate: 30/m, burst: 7}
""", server="server: {trusted_proxies: [10.0.0.0/8, 127.0.0.1, '::1'], rate_limit_slots: 1024}\n")), env={})
    assert config.server.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"),
                                             ipaddress.ip_network("::1/128"))
    assert config.server.rate_limit_slots == 1024
    assert config.routes[0].rate_limits == (
        RateLimit(key=("client_ip",), requests=100.0, per=1.0, burst=100),
        RateLimit(key=("client_ip", "header:x-tenant"), requests=0.5, per=1.0, burst=1),
        RateLimit(key=("route",), requests=1000.0, per=3600.0, burst=1, algorithm="sliding_window"),
        RateLimit(key=("header:x-api-key",), requests=30.0, per=60.0, burst=7),
    )
    assert config.routes[0].rate_limits[3].rate_per_second == 0.5


def test_each_rate_limit_error(config_errors, find_error):
    source, errors = config_errors(_with_limits("""
- {key: client_ip, rate: 100/s, burst: 0}
- {key: client_ipp, rate: 100/x}
- {key: "client_ip+client_ip", rate: 100}
- {key: "header:X Bad", rate: 0/s}
- {key: route, rate: 1.5/h, algorithm: sliding_window, burst: 3}
- {key: route, rate: 10/s, algorithm: sliding_windo, scopes: local}
- {key: route, rate: 10/s, scope: redis}
- {rate: 10/s}
- {key: route}
- 5
""", server="server: {trusted_proxies: [10.0.0.1/8, nope], rate_limit_slots: 4}\n"))
    find_error(errors, source, "server.trusted_proxies[0]", "'10.0.0.1/8' has host bits set", "did you mean '10.0.0.0/8'?")
    find_error(errors, source, "server.trusted_proxies[1]", "'nope' is not an IP address or network")
    find_error(errors, source, "server.rate_limit_slots", "must be between 8 and 16777216, got 4", "40 bytes each")
    path = "routes[0].rate_limits"
    find_error(errors, source, f"{path}[0].burst", "must be 1 or more, got 0")
    find_error(errors, source, f"{path}[1].key", "unknown key part 'client_ipp'", "did you mean 'client_ip'?")
    find_error(errors, source, f"{path}[1].rate", "unknown unit 'x'", "s, m or h")
    find_error(errors, source, f"{path}[2].key", "names 'client_ip' twice")
    find_error(errors, source, f"{path}[2].rate", "expected a rate like '100/s', got the number 100",
               "give it a unit: 100/s")
    find_error(errors, source, f"{path}[3].key", "'header:X Bad' does not name a valid header")
    find_error(errors, source, f"{path}[3].rate", "rate must be greater than 0")
    find_error(errors, source, f"{path}[4].rate", "a sliding window counts whole requests, got 1.5")
    find_error(errors, source, f"{path}[4].burst", "burst applies only to algorithm token_bucket")
    find_error(errors, source, f"{path}[5].algorithm", "unknown rate-limit algorithm 'sliding_windo'",
               "did you mean 'sliding_window'?")
    find_error(errors, source, f"{path}[5].scopes", "unknown key", "did you mean 'scope'?")
    find_error(errors, source, f"{path}[6].scope", "scope 'redis' needs a top-level redis: section",
               "add redis: {url: redis://127.0.0.1:6379}, or use scope: local")
    find_error(errors, source, f"{path}[7].key", "missing")
    find_error(errors, source, f"{path}[8].rate", "missing", "rate: 100/s")
    find_error(errors, source, f"{path}[9]", "expected a mapping, got the number 5")
    assert len(errors) == 18, "\n".join(errors)


def test_rate_limits_must_be_a_list(config_errors, find_error):
    source, errors = config_errors(CLUSTERS + """
routes:
  - match: {prefix: /}
    cluster: users
    rate_limits: {key: client_ip, rate: 1/s}
  - match: {prefix: /x}
    cluster: users
    rate: 1/s
""")
    find_error(errors, source, "routes[0].rate_limits", "expected a list", "rate_limits: [{key: client_ip")
    find_error(errors, source, "routes[1].rate", "unknown key", "move it under rate_limits, as a list entry:")


def test_misplaced_server_keys(config_errors, find_error, minimal):
    source, errors = config_errors("trusted_proxies: [10.0.0.0/8]\n" + minimal)
    find_error(errors, source, "trusted_proxies", "unknown key", "move it under server:")


def test_routes_command_prints_limits(run_cli, write_config):
    path = write_config(_with_limits("""
- {key: "client_ip+header:X-Tenant", rate: 100/s, burst: 200}
- {key: route, rate: 1000/h, algorithm: sliding_window}
"""))
    result = run_cli("routes", "--config", str(path), "GET", "/x")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("rate limits: (all must allow; a denial answers 429)")
    assert lines[start + 1:start + 3] == [
        "            key client_ip+header:x-tenant: 100/s, token_bucket, burst 200, scope local",
        "            key route: 1000/h, sliding_window of 1h, scope local",
    ]


def test_routes_command_without_limits(run_cli, write_config, minimal):
    result = run_cli("routes", "--config", str(write_config(minimal)), "GET", "/x")
    assert "rate limits: none" in result.stdout.splitlines()
