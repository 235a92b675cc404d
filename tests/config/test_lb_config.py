"""Cluster `lb` and `hash_on`: what loads, what is refused (with key paths and
hints), and what `fastgw routes` shows."""
from __future__ import annotations

import pytest

from fastgw.config import load


def cluster_config(extra: str) -> str:
    return f"""
clusters:
  users:
{extra}    endpoints: [http://127.0.0.1:9001, http://127.0.0.1:9002]
routes:
  - {{match: {{prefix: /}}, cluster: users}}
"""


@pytest.mark.parametrize("extra, lb, hash_on", [
    ("", "round_robin", None),
    ("    lb: least_request\n", "least_request", None),
    ("    lb: p2c\n", "p2c", None),
    ("    lb: ring_hash\n    hash_on: header:X-User\n", "ring_hash", "header:x-user"),
    ("    lb: ring_hash\n    hash_on: cookie:Session\n", "ring_hash", "cookie:Session"),
    ("    lb: ring_hash\n    hash_on: client_ip\n", "ring_hash", "client_ip"),
])
def test_lb_policies_load(write_config, extra, lb, hash_on):
    cluster = load(write_config(cluster_config(extra)), env={}).clusters["users"]
    assert (cluster.lb, cluster.hash_on) == (lb, hash_on)


def test_ring_hash_needs_hash_on(config_errors, find_error):
    source, errors = config_errors(cluster_config("    lb: ring_hash\n"))
    find_error(errors, source, "clusters.users.hash_on", "missing", "header:NAME, cookie:NAME or client_ip")


def test_hash_on_only_with_ring_hash(config_errors, find_error):
    source, errors = config_errors(cluster_config("    lb: p2c\n    hash_on: client_ip\n"))
    find_error(errors, source, "clusters.users.hash_on", "only used with lb: ring_hash", "set lb: ring_hash")
    # The default policy too.
    source, errors = config_errors(cluster_config("    hash_on: client_ip\n"))
    find_error(errors, source, "clusters.users.hash_on", "only used with lb: ring_hash (this cluster has lb: round_robin)")


def test_misspelt_lb_is_the_only_error(config_errors, find_error):
    source, errors = config_errors(cluster_config("    lb: ringhash\n    hash_on: client_ip\n"))
    find_error(errors, source, "clusters.users.lb", "unknown load-balancing policy 'ringhash'",
               "did you mean 'ring_hash'?")
    assert not [e for e in errors if "hash_on" in e], errors


@pytest.mark.parametrize("value, fragments", [
    ("headr:X-User", ("unknown hash key 'headr:X-User'", "did you mean 'header:X-User'?")),
    ("clientip", ("unknown hash key 'clientip'", "did you mean 'client_ip'?")),
    ("path", ("unknown hash key 'path'", "header:NAME, cookie:NAME or client_ip")),
    ("'header:'", ("'' is not a valid header name",)),
    ("'cookie:a b'", ("'a b' is not a valid cookie name", "cookie:session")),
    ("7", ("expected a request key, got",)),
])
def test_bad_hash_on(config_errors, find_error, value, fragments):
    source, errors = config_errors(cluster_config(f"    lb: ring_hash\n    hash_on: {value}\n"))
    find_error(errors, source, "clusters.users.hash_on", *fragments)


def test_routes_shows_lb_and_hash_on(run_cli, write_config):
    path = write_config(cluster_config("    lb: ring_hash\n    hash_on: header:X-User\n"))
    result = run_cli("routes", "--config", str(path), "GET", "http://h/x")
    assert result.returncode == 0, result.stderr
    assert ("cluster:  users, lb ring_hash on header:x-user (requests without it: round_robin)"
            in result.stdout.splitlines()), result.stdout
    path = write_config(cluster_config("    lb: p2c\n"), name="p2c.yaml")
    result = run_cli("routes", "--config", str(path), "GET", "http://h/x")
    assert "cluster:  users, lb p2c" in result.stdout.splitlines(), result.stdout
