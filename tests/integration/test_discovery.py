"""Endpoint discovery end to end: a watched endpoints file, and DNS names
re-resolved on an interval, changing the real gateway's endpoints without a
reload. Re-resolution is tested twice: with `dns.resolver` pointing at a
DNS server on loopback that the test controls (runs anywhere), and through
the system resolver with the gateway in its own mount namespace and a temp
file bind-mounted over /etc/hosts (root and unshare(1) needed; skipped
otherwise)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter

import pytest

from support import UpstreamServer, cluster, free_port, http_request, route, wait_until


def write_atomically(path, text: str) -> None:
    """As consul-template does: a temp file renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def counts(gw, n: int, ups) -> Counter:
    """Which upstream served each of `n` requests."""
    got = Counter()
    for _ in range(n):
        before = [len(up.requests) for up in ups]
        resp = http_request(gw.port, "GET", "/x")
        assert resp.status == 200, resp.describe()
        got[next(up.name for up, b in zip(ups, before) if len(up.requests) > b)] += 1
    return got


# --- endpoints_file ----------------------------------------------------------------

@pytest.mark.timeout(40)
def test_endpoints_file_add_remove_and_invalid_keeps_last_good(upstream_factory, gateway_factory, tmp_path):
    a, b = upstream_factory("a"), upstream_factory("b")
    eps = tmp_path / "eps.json"
    eps.write_text(json.dumps([a.url]))
    gw = gateway_factory({
        "clusters": {"c": {"endpoints_file": {"path": str(eps), "interval": "100ms"}}},
        "routes": [route("all", "c", prefix="/")],
    })
    assert counts(gw, 4, (a, b)) == {"a": 4}

    # Added by an atomic rename (YAML this time, with a weight).
    write_atomically(eps, f"- {a.url}\n- url: {b.url}\n  weight: 3\n")
    assert wait_until(lambda: "now has 2 endpoint(s); added 127.0.0.1:%d" % b.port in gw.stderr(), 5), gw.stderr()
    assert counts(gw, 8, (a, b)) == {"a": 2, "b": 6}

    # Invalid content, written in place: logged with file and entry, the last good set kept.
    eps.write_text(json.dumps([a.url, "http://127.0.0.1:99999"]))
    assert wait_until(lambda: "keeping the last good set (2 endpoints)" in gw.stderr(), 5), gw.stderr()
    line = next(l for l in gw.stderr().splitlines() if "keeping the last good set" in l)
    assert f"clusters.c.endpoints_file: {eps}: [1]: port 99999 is out of range" in line, line
    assert counts(gw, 8, (a, b)) == {"a": 2, "b": 6}
    eps.write_text("[")  # not even YAML
    assert wait_until(lambda: "invalid YAML/JSON" in gw.stderr(), 5), gw.stderr()
    eps.unlink()         # gone
    assert wait_until(lambda: "No such file or directory" in gw.stderr(), 5), gw.stderr()
    assert counts(gw, 4, (a, b)) == {"a": 1, "b": 3}

    # a removed: its pool is drained (the idle connection closed), traffic goes to b only.
    a_conns = len(a.connections)
    assert a_conns >= 1
    write_atomically(eps, json.dumps([b.url]))
    assert wait_until(lambda: "removed 127.0.0.1:%d" % a.port in gw.stderr(), 5), gw.stderr()
    assert "is good again" in gw.stderr()
    assert a.wait_for(lambda: all(c.closed_at is not None for c in a.connections), 5), \
        "the removed endpoint's idle connection was not closed"
    assert counts(gw, 5, (a, b)) == {"b": 5}
    assert len(a.connections) == a_conns


def test_endpoints_file_errors_at_load(tmp_path, run_check):
    eps = tmp_path / "eps.yaml"
    config = tmp_path / "gw.yaml"
    config.write_text("clusters:\n  c:\n    endpoints_file: eps.yaml\nroutes:\n  - match: {prefix: /}\n    cluster: c\n")
    result = run_check(config)
    assert result.returncode != 0
    assert f"{config}: clusters.c.endpoints_file: {eps}: file not found (write the file, or fix the path)" \
        in result.stderr, result.stderr
    eps.write_text("- http://127.0.0.1:9001\n- {url: 'http://127.0.0.1:9002', weigth: 2}\n")
    result = run_check(config)
    assert (f"{config}: clusters.c.endpoints_file: {eps}: [1].weigth: unknown key (did you mean 'weight'?)"
            in result.stderr), result.stderr
    eps.write_text("- http://127.0.0.1:9001\n")
    assert run_check(config).returncode == 0


@pytest.fixture
def run_check():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def run(config):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASTGW_")}
        env["PYTHONPATH"] = root
        return subprocess.run([sys.executable, "-m", "fastgw", "check", "--config", str(config)],
                              capture_output=True, text=True, timeout=60, env=env, cwd=root)
    return run


# --- dns ---------------------------------------------------------------------------

def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


NAME = "svc.fastgw-test.internal"


@pytest.mark.skipif(not _namespaces_work(), reason="needs root and unshare -m for a private /etc/hosts")
@pytest.mark.timeout(40)
def test_dns_endpoints_follow_the_resolver(gateway_factory, tmp_path, monkeypatch):
    port = free_port()
    v4 = UpstreamServer("v4", "127.0.0.1", port).start()
    try:
        v6 = UpstreamServer("v6", "::1", port).start()
    except OSError:
        v4.stop()
        pytest.skip(f"port {port} is taken on ::1")
    try:
        hosts = tmp_path / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {NAME}\n")
        wrapper = tmp_path / "fastgw-in-namespace"
        # The gateway sees `hosts` as /etc/hosts; written in place, the change shows through the bind mount.
        wrapper.write_text("#!/bin/sh\nexec unshare -m -- sh -c 'mount --bind \"$0\" /etc/hosts && exec \"$@\"' "
                           f"{hosts} {sys.executable} -m fastgw \"$@\"\n")
        wrapper.chmod(0o755)
        monkeypatch.setenv("FASTGW_BIN", str(wrapper))
        gw = gateway_factory({
            "clusters": {"c": {"dns": {"name": NAME, "port": port, "interval": "100ms"}}},
            "routes": [route("all", "c", prefix="/")],
        })
        assert wait_until(lambda: "now has 1 endpoint(s); added 127.0.0.1:%d" % port in gw.stderr(), 5), gw.stderr()
        assert counts(gw, 4, (v4, v6)) == {"v4": 4}

        with open(hosts, "a") as f:          # in place: the bind mount keeps the inode
            f.write(f"::1 {NAME}\n")
        assert wait_until(lambda: f"added ::1:{port}" in gw.stderr(), 5), gw.stderr()
        assert counts(gw, 6, (v4, v6)) == {"v4": 3, "v6": 3}

        with open(hosts, "w") as f:
            f.write(f"127.0.0.1 localhost\n::1 {NAME}\n")
        assert wait_until(lambda: f"removed 127.0.0.1:{port}" in gw.stderr(), 5), gw.stderr()
        assert counts(gw, 4, (v4, v6)) == {"v6": 4}

        with open(hosts, "w") as f:          # the name no longer resolves: the last good set stays
            f.write("127.0.0.1 localhost\n")
        assert wait_until(lambda: f"resolving '{NAME}' failed" in gw.stderr(), 5), gw.stderr()
        assert "keeping the last good set (1 endpoints)" in gw.stderr()
        assert counts(gw, 3, (v4, v6)) == {"v6": 3}
    finally:
        v4.stop()
        v6.stop()


@pytest.mark.timeout(40)
def test_dns_endpoints_follow_a_resolver_on_loopback(gateway_factory):
    """The same re-resolution on any runner: `dns.resolver` names a DNS
    server, here one on loopback whose answers the test changes."""
    from support.dns_server import DnsServer
    port = free_port()
    v4 = UpstreamServer("v4", "127.0.0.1", port).start()
    v4b = UpstreamServer("v4b", "127.0.0.2", port).start()
    dns = DnsServer().start()
    try:
        dns.records[NAME] = ["127.0.0.1"]
        gw = gateway_factory({
            "clusters": {"c": {"dns": {"name": NAME, "port": port, "interval": "100ms",
                                       "resolver": dns.address}}},
            "routes": [route("all", "c", prefix="/")],
        })
        assert wait_until(lambda: f"now has 1 endpoint(s); added 127.0.0.1:{port}" in gw.stderr(), 5), gw.stderr()
        assert counts(gw, 4, (v4, v4b)) == {"v4": 4}
        assert dns.queries[(NAME, 1)] >= 1 and dns.queries[(NAME, 28)] >= 1   # A and AAAA asked

        dns.records[NAME] = ["127.0.0.1", "127.0.0.2"]
        assert wait_until(lambda: f"added 127.0.0.2:{port}" in gw.stderr(), 5), gw.stderr()
        assert counts(gw, 6, (v4, v4b)) == {"v4": 3, "v4b": 3}

        dns.records[NAME] = ["127.0.0.2"]
        assert wait_until(lambda: f"removed 127.0.0.1:{port}" in gw.stderr(), 5), gw.stderr()
        assert counts(gw, 4, (v4, v4b)) == {"v4b": 4}

        del dns.records[NAME]                # NXDOMAIN: the last good set stays
        assert wait_until(lambda: f"resolving '{NAME}' failed: no such name" in gw.stderr(), 5), gw.stderr()
        assert "keeping the last good set (1 endpoints)" in gw.stderr()
        assert counts(gw, 3, (v4, v4b)) == {"v4b": 3}

        dns.records[NAME] = []               # the name exists, no address: also kept
        assert wait_until(lambda: f"'{NAME}' resolved to no address" in gw.stderr(), 5), gw.stderr()
        assert counts(gw, 2, (v4, v4b)) == {"v4b": 2}
    finally:
        dns.stop()
        v4.stop()
        v4b.stop()


@pytest.mark.timeout(30)
def test_dns_localhost_resolves_without_namespaces(upstream_factory, gateway_factory):
    """What runs everywhere: `localhost` resolves (to 127.0.0.1, and ::1 where
    /etc/hosts says so) and the cluster serves through what it resolved."""
    up = upstream_factory("up")
    gw = gateway_factory({
        "clusters": {"c": {"dns": {"name": "localhost", "port": up.port, "interval": "1s"}}},
        "routes": [route("all", "c", prefix="/")],
    })
    assert wait_until(lambda: f"added 127.0.0.1:{up.port}" in gw.stderr(), 5), gw.stderr()
    # Only 127.0.0.1 listens: with ::1 resolved too, some requests would fail; require the v4 one to serve.
    for _ in range(4):
        resp = http_request(gw.port, "GET", "/x", version="1.0", host=None)
        if resp.status == 200:
            # HTTP/1.0 without Host: the gateway sends the DNS name as Host.
            assert up.requests[-1].header("host") == f"localhost:{up.port}"
            break
    else:
        pytest.fail("no request reached the upstream through the resolved endpoint")


@pytest.mark.timeout(30)
def test_a_removed_endpoint_finishes_its_requests_in_flight(upstream_factory, gateway_factory, tmp_path):
    """Drain, not cut: a slow request to an endpoint removed meanwhile gets its
    whole response, and its connection is closed afterwards, not pooled."""
    import threading

    a, b = upstream_factory("a"), upstream_factory("b")
    eps = tmp_path / "eps.json"
    eps.write_text(json.dumps([a.url]))
    gw = gateway_factory({
        "clusters": {"c": {"endpoints_file": {"path": str(eps), "interval": "100ms"}}},
        "routes": [route("all", "c", prefix="/", retries="off")],
    })
    result = {}
    slow = threading.Thread(target=lambda: result.setdefault(
        "resp", http_request(gw.port, "GET", "/slow?delay=1.5", timeout=10)))
    slow.start()
    assert a.wait_for(lambda: any(r.path == "/slow" for r in a.heads), 5)
    write_atomically(eps, json.dumps([b.url]))
    assert wait_until(lambda: "removed 127.0.0.1:%d" % a.port in gw.stderr(), 5), gw.stderr()
    assert http_request(gw.port, "GET", "/x").status == 200 and len(b.requests) == 1
    assert a.connections[-1].closed_at is None, "the request in flight was cut when its endpoint was removed"
    slow.join(10)
    assert result["resp"].status == 200, result["resp"].describe()
    assert a.wait_for(lambda: all(c.closed_at is not None for c in a.connections), 5), \
        "the drained endpoint's connection went back to a pool"
