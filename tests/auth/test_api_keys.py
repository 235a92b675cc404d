"""API keys through the real binary: hashed in a keys file, scopes, expiry,
rotation and revocation by reload, the key never in GET /config or the
access log, `fastgw keys hash`, and limits per consumer and per key."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from support import assert_gateway_error, cluster, http_request, route, wait_until

from fastgw.auth.api_keys import hash_key

KEY_A = "fgw_key_a_0123456789abcdefghijkl"
KEY_B = "fgw_key_b_0123456789abcdefghijkl"
KEY_OLD = "fgw_key_old_0123456789abcdefghij"


def write_keys(path, *entries):
    path.write_text(yaml.safe_dump({"keys": list(entries)}))


def entry(key_id, key, consumer="team-a", **extra):
    return {"id": key_id, "consumer": consumer, "hash": hash_key(key), **extra}


def config(upstream, keys_file, *, scopes=None, rate_limits=None, **top):
    auth = {"api_keys": {"file": str(keys_file), "header": "X-Api-Key"}}
    if scopes:
        auth["scopes"] = scopes
    extra = {"rate_limits": rate_limits} if rate_limits else {}
    return {"clusters": {"app": cluster(upstream.url)},
            "routes": [route("orders", "app", prefix="/orders/", auth=auth, **extra),
                       route("open", "app", prefix="/")], **top}


def with_key(key):
    return [("X-Api-Key", key)]


def admin(gw, method, path):
    return http_request(gw.admin_port, method, path)


@pytest.mark.timeout(60)
def test_keys_scopes_expiry_and_the_key_never_upstream(upstream, gateway_factory, tmp_path):
    keys = tmp_path / "keys.yaml"
    write_keys(keys, entry("a", KEY_A, scopes=["orders:read"]),
               entry("b", KEY_B, consumer="team-b", scopes=["orders:write"]),
               entry("old", KEY_OLD, scopes=["orders:read"], expires="2001-01-01T00:00:00Z"))
    log_path = tmp_path / "access.log"
    gw = gateway_factory(config(upstream, keys, scopes=["orders:read"],
                                access_log={"path": str(log_path), "flush_interval": "100ms"}))
    resp = http_request(gw.port, "GET", "/orders/1", with_key(KEY_A))
    assert resp.status == 200, resp.describe()
    assert upstream.requests[-1].header_all("x-api-key") == []   # the key stays at the gateway
    resp = http_request(gw.port, "GET", "/orders/2", with_key(KEY_B))
    assert_gateway_error(resp, 403, "insufficient_scope")
    for path, headers in (("/orders/3", with_key(KEY_OLD)), ("/orders/4", with_key("fgw_nope")),
                          ("/orders/5", [])):
        resp = http_request(gw.port, "GET", path, headers)
        assert_gateway_error(resp, 401, "invalid_token")
        assert resp.header("www-authenticate").startswith("ApiKey ")
    assert wait_until(lambda: log_path.exists() and len(log_path.read_text().splitlines()) >= 5, 10)
    text = log_path.read_text()
    assert KEY_A not in text and KEY_B not in text
    lines = {json.loads(line)["path"]: json.loads(line) for line in text.splitlines()}
    assert lines["/orders/1"]["auth"] == "api_key" and lines["/orders/1"]["consumer"] == "team-a"
    assert lines["/orders/1"]["api_key"] == "a"
    assert lines["/orders/2"]["auth"] == "insufficient_scope"
    assert lines["/orders/3"]["auth"] == "key_expired"
    assert lines["/orders/4"]["auth"] == "unknown_key"
    assert lines["/orders/5"]["auth"] == "missing"
    shown = admin(gw, "GET", "/config")
    assert shown.status == 200
    body = shown.body.decode()
    assert hash_key(KEY_A).split(":")[1] not in body and KEY_A not in body
    assert "keys.yaml" in body


@pytest.mark.timeout(90)
def test_rotation_and_revocation_by_reload(upstream, gateway_factory, tmp_path):
    keys = tmp_path / "keys.yaml"
    write_keys(keys, entry("a1", KEY_A))
    gw = gateway_factory(config(upstream, keys))
    assert http_request(gw.port, "GET", "/orders/1", with_key(KEY_A)).status == 200
    assert http_request(gw.port, "GET", "/orders/1", with_key(KEY_B)).status == 401
    # Rotation: the consumer's second key is added; both work.
    write_keys(keys, entry("a1", KEY_A), entry("a2", KEY_B))
    assert admin(gw, "POST", "/reload").json()["generation"] == 2
    assert wait_until(lambda: http_request(gw.port, "GET", "/orders/2", with_key(KEY_B)).status == 200, 10)
    assert http_request(gw.port, "GET", "/orders/2", with_key(KEY_A)).status == 200
    # Revocation: the old key disabled, then the file reloaded.
    write_keys(keys, entry("a1", KEY_A, enabled=False), entry("a2", KEY_B))
    assert admin(gw, "POST", "/reload").json()["generation"] == 3
    assert wait_until(lambda: http_request(gw.port, "GET", "/orders/3", with_key(KEY_A)).status == 401, 10)
    assert http_request(gw.port, "GET", "/orders/3", with_key(KEY_B)).status == 200
    # A broken keys file is refused and the running keys stay.
    keys.write_text("keys: [{id: x, hash: " + KEY_A + "}]\n")
    resp = admin(gw, "POST", "/reload")
    assert resp.status != 200
    assert KEY_A not in resp.body.decode()      # a key pasted by mistake is never echoed
    assert http_request(gw.port, "GET", "/orders/4", with_key(KEY_B)).status == 200


@pytest.mark.timeout(60)
def test_consumer_and_api_key_limits_the_most_restrictive_answers(upstream, gateway_factory, tmp_path):
    keys = tmp_path / "keys.yaml"
    write_keys(keys, entry("a1", KEY_A), entry("a2", KEY_B), entry("o", KEY_OLD, consumer="team-b"))
    gw = gateway_factory(config(upstream, keys, rate_limits=[
        {"key": "consumer", "rate": "4/m", "burst": 4},
        {"key": "api_key", "rate": "3/m", "burst": 3},
    ]))
    statuses = [http_request(gw.port, "GET", "/orders/x", with_key(KEY_A)).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = http_request(gw.port, "GET", "/orders/x", with_key(KEY_A))
    assert_gateway_error(resp, 429, "rate_limited")
    assert resp.header("x-ratelimit-type") == "api_key" and int(resp.header("retry-after")) >= 1
    # The consumer's other key: its own bucket is untouched and the consumer has one
    # request left (the ones the key limit refused were refunded to the consumer limit).
    resp = http_request(gw.port, "GET", "/orders/y", with_key(KEY_B))
    assert resp.status == 200, resp.describe()
    resp = http_request(gw.port, "GET", "/orders/y", with_key(KEY_B))
    assert_gateway_error(resp, 429, "rate_limited")
    assert resp.header("x-ratelimit-type") == "consumer"
    # Another consumer is not affected.
    assert http_request(gw.port, "GET", "/orders/z", with_key(KEY_OLD)).status == 200


def test_keys_hash_command_prints_what_the_file_holds():
    out = subprocess.run([sys.executable, "-m", "fastgw", "keys", "hash", "fgw_test_key_1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == hash_key("fgw_test_key_1")
    out = subprocess.run([sys.executable, "-m", "fastgw", "keys", "hash"], input="fgw_test_key_1\n",
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == hash_key("fgw_test_key_1")
    out = subprocess.run([sys.executable, "-m", "fastgw", "keys", "new"], capture_output=True, text=True,
                         timeout=30)
    key_line, hash_line = out.stdout.splitlines()
    assert hash_line.split()[1] == hash_key(key_line.split()[1])
