"""The shipped alert rules and Grafana dashboard: promtool accepts the rules
(when installed: scripts/test.sh installs Debian's `prometheus` for it), and
every metric they name is one a real gateway serves on /metrics."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support import cluster, http_request, route

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "packaging" / "prometheus" / "fastgw-alerts.yaml"
DASHBOARD = REPO / "packaging" / "grafana" / "fastgw-dashboard.json"
NAME = re.compile(r"\b((?:fastgw|process)_[a-z_]+)\b")


def rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_the_rules_cover_what_the_issue_asks():
    names = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert {"FastgwHighLatency", "FastgwHighErrorRate", "FastgwCircuitOpen", "FastgwRedisFallbacks",
            "FastgwRateLimiterSaturated"} <= names


def test_the_dashboard_is_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"]
    for panel in dash["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


@pytest.mark.timeout(60)
def test_every_metric_they_name_is_served(upstream, gateway_factory, redis_server):
    config = {
        "redis": {"url": redis_server.url},
        "clusters": {"users": cluster(upstream.url, circuit_breaker={"failures": 3},
                                      health_check={"path": "/fixed", "interval": "1s"})},
        "routes": [route("shared", "users", prefix="/shared", concurrency={"max_in_flight": 10},
                         rate_limits=[{"key": "route", "rate": "1000/s", "scope": "redis"}]),
                   route("all", "users", prefix="/", rate_limits=[{"key": "route", "rate": "1000/s"}])],
    }
    gw = gateway_factory(config)
    for path in ("/shared/a", "/x", "/status/500"):
        http_request(gw.port, "GET", path)
    import time
    time.sleep(1.2)   # policy figures are copied once a second
    text = http_request(gw.admin_port, "GET", "/metrics").body.decode()
    served = set(re.findall(r"(?m)^([a-z_]+)[{ ]", text))
    named = {n for expr in rule_exprs() + dashboard_exprs() for n in NAME.findall(expr)}
    assert named and not named - served, sorted(named - served)
