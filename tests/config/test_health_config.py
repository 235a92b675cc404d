"""Config for a cluster's health and discovery keys: defaults, values, and
errors naming the file, the key path and the problem."""
from __future__ import annotations

from fastgw.config import load
from fastgw.config.health_model import DnsDiscovery, EndpointsFile, HealthCheck, OutlierDetection


def _cluster(body: str) -> str:
    return f"""
clusters:
  users:
{body}
routes:
  - match: {{prefix: /}}
    cluster: users
"""


STATIC = "    endpoints: [http://127.0.0.1:9001, http://127.0.0.1:9002]\n"


def test_off_unless_configured(write_config, minimal):
    cluster = load(write_config(minimal), env={}).clusters["users"]
    assert (cluster.health_check, cluster.outlier_detection, cluster.dns, cluster.endpoints_file) == (None,) * 4
    assert cluster.panic_threshold == 0


def test_defaults(write_config):
    config = load(write_config(_cluster(STATIC + "    health_check: {path: /healthz}\n    outlier_detection: {}\n")),
                  env={})
    cluster = config.clusters["users"]
    assert cluster.health_check == HealthCheck(path="/healthz", interval=5.0, timeout=1.0, healthy_threshold=2,
                                               unhealthy_threshold=3, expected_statuses=((200, 399),), host=None)
    assert cluster.outlier_detection == OutlierDetection(consecutive_5xx=5, consecutive_connect_failures=5,
                                                         base_ejection=30.0, max_ejection=300.0,
                                                         max_ejected_percent=50.0)


def test_values(write_config):
    config = load(write_config(_cluster(STATIC + """\
    health_check:
      path: /health?deep=1
      interval: 2s
      timeout: 250ms
      healthy_threshold: 1
      unhealthy_threshold: 4
      expected_statuses: [200-299, 404]
      host: users.internal
    outlier_detection: {consecutive_5xx: 3, consecutive_connect_failures: 2, base_ejection: 10s,
                        max_ejection: 1m, max_ejected_percent: 34%}
    panic_threshold: 50%
""")), env={})
    cluster = config.clusters["users"]
    assert cluster.health_check == HealthCheck(path="/health?deep=1", interval=2.0, timeout=0.25,
                                               healthy_threshold=1, unhealthy_threshold=4,
                                               expected_statuses=((200, 299), (404, 404)), host="users.internal")
    assert cluster.outlier_detection == OutlierDetection(3, 2, 10.0, 60.0, 34.0)
    assert cluster.panic_threshold == 50.0


def test_health_errors(config_errors, find_error):
    source, errors = config_errors(_cluster(STATIC + """\
    health_check: {interval: soon, healthy_threshold: 0, expected_statuses: [200-199, 700, ok], host: 'a b',
                   paht: /x}
    outlier_detection: {consecutive_5xx: 0, base_ejection: 1m, max_ejection: 10s, max_ejected_percent: 150}
    panic_threshold: half
"""))
    prefix = "clusters.users."
    find_error(errors, source, prefix + "health_check.path", "missing", "/healthz")
    find_error(errors, source, prefix + "health_check.paht", "unknown key", "did you mean 'path'?")
    find_error(errors, source, prefix + "health_check.interval", "'soon' is not a duration")
    find_error(errors, source, prefix + "health_check.healthy_threshold", "must be 1 or more")
    find_error(errors, source, prefix + "health_check.expected_statuses", "ends before it starts", "199-200")
    find_error(errors, source, prefix + "health_check.host", "not a valid Host")
    find_error(errors, source, prefix + "outlier_detection.consecutive_5xx", "must be 1 or more")
    find_error(errors, source, prefix + "outlier_detection.max_ejection", "shorter than base_ejection (60s)")
    find_error(errors, source, prefix + "outlier_detection.max_ejected_percent", "between 0 and 100")
    find_error(errors, source, prefix + "panic_threshold", "'half' is not a percentage")
    assert len(errors) == 10, errors


def test_health_check_path_and_statuses(config_errors, find_error):
    source, errors = config_errors(_cluster(STATIC + "    health_check: {path: healthz, expected_statuses: 700}\n"))
    find_error(errors, source, "clusters.users.health_check.path", "does not start with '/'", "/healthz")
    find_error(errors, source, "clusters.users.health_check.expected_statuses", "statuses are 100 to 599")


def test_dns(write_config, config_errors, find_error):
    cluster = load(write_config(_cluster("    dns: {name: Users.Internal, port: 8080}\n")), env={}).clusters["users"]
    assert cluster.dns == DnsDiscovery(name="users.internal", port=8080, interval=30.0)
    assert cluster.endpoints == ()
    source, errors = config_errors(_cluster("    dns: {name: 'bad name', port: 70000, intervall: 1s}\n"))
    find_error(errors, source, "clusters.users.dns.name", "not a valid host name")
    find_error(errors, source, "clusters.users.dns.port", "out of range")
    find_error(errors, source, "clusters.users.dns.intervall", "unknown key", "interval")
    source, errors = config_errors(_cluster("    dns: {port: 80}\n"))
    find_error(errors, source, "clusters.users.dns.name", "missing")


def test_dns_resolver(write_config, config_errors, find_error):
    text = _cluster("    dns: {name: users.internal, port: 8080, resolver: '[::1]:5353'}\n")
    assert load(write_config(text), env={}).clusters["users"].dns.resolver == ("::1", 5353)
    for bad, fragment in (("dns.local:53", "'dns.local' is not an IP address"), ("127.0.0.1", "port")):
        source, errors = config_errors(_cluster(f"    dns: {{name: u.internal, port: 80, resolver: '{bad}'}}\n"))
        line = find_error(errors, source, "clusters.users.dns.resolver", fragment)
        assert "e.g. 127.0.0.1:53" in line, line


def test_one_source_of_endpoints(config_errors, find_error):
    source, errors = config_errors(_cluster(STATIC + "    dns: {name: users.internal, port: 80}\n"
                                            "    endpoints_file: eps.json\n"))
    find_error(errors, source, "clusters.users.dns", "can't be combined with endpoints", "exactly one of")
    find_error(errors, source, "clusters.users.endpoints_file", "can't be combined with endpoints")
    source, errors = config_errors(_cluster("    lb: round_robin\n"))
    find_error(errors, source, "clusters.users.endpoints", "missing")


def test_endpoints_file_is_read_at_load(write_config, tmp_path):
    (tmp_path / "eps.yaml").write_text("endpoints:\n  - http://127.0.0.1:9001\n  - {url: http://10.0.0.2:80, weight: 2}\n")
    config = load(write_config(_cluster("    endpoints_file: eps.yaml\n")), env={})
    cluster = config.clusters["users"]
    assert cluster.endpoints_file == EndpointsFile(path=str(tmp_path / "eps.yaml"), interval=1.0)
    assert [(e.host, e.port, e.weight) for e in cluster.endpoints] == [("127.0.0.1", 9001, 1), ("10.0.0.2", 80, 2)]
    (tmp_path / "eps.json").write_text('["http://127.0.0.1:9001"]')
    config = load(write_config(_cluster("    endpoints_file: {path: eps.json, interval: 250ms}\n")), env={})
    assert config.clusters["users"].endpoints_file.interval == 0.25


def test_endpoints_file_errors(config_errors, find_error, tmp_path):
    eps = tmp_path / "eps.json"
    for content, fragment in [
        ("[]", f"{eps}: (top level): the list is empty"),
        ("{\"a\": 1}", f"{eps}: (top level): expected a list of endpoints, got a mapping"),
        ("[\"http://127.0.0.1:9001\", \"http://127.0.0.1:9001\"]", f"{eps}: [1]: 127.0.0.1:9001 is listed twice"),
        ("[\"ftp://x\"]", f"{eps}: [0]: scheme 'ftp' is not supported"),
        ("[1", f"{eps}: line 1, column 3: invalid YAML/JSON"),
    ]:
        eps.write_text(content)
        source, errors = config_errors(_cluster("    endpoints_file: eps.json\n"))
        find_error(errors, source, "clusters.users.endpoints_file", fragment)


def test_routes_shows_health_and_discovery(write_config, run_cli):
    path = write_config(_cluster("    dns: {name: users.internal, port: 8080, interval: 10s}\n"
                                 "    health_check: {path: /healthz}\n"
                                 "    outlier_detection: {consecutive_5xx: 3}\n    panic_threshold: 50\n"))
    result = run_cli("routes", "--config", str(path), "GET", "/x")
    assert result.returncode == 0, result.stderr
    assert "(from DNS: users.internal:8080, re-resolved every 10s)" in result.stdout
    assert ("health check: GET /healthz every 5s, timeout 1s, expects 200-399; unhealthy after 3 failures, "
            "healthy after 2 passes; per worker") in result.stdout
    assert "outlier detection: eject after 3 consecutive 5xx or 5 connect failures, for 30s x n" in result.stdout
    assert "no healthy endpoint: panic mode below 50% healthy (balance over all)" in result.stdout
