"""examples/auth.yaml runs as it is (issue 10's acceptance addresses): the
gateway on 127.0.0.1:18600, a JWKS server written here on :18601, an
upstream on :18602. Skipped only when one of those ports is taken."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from issuer import Issuer

from support import UpstreamServer, assert_gateway_error, http_request, port_accepts

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "auth.yaml"
PORTS = (18600, 18601, 18602)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        # As the servers bind (SO_REUSEADDR): a previous run's TIME_WAIT is no owner.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def example(tmp_path):
    taken = [p for p in PORTS if not _free(p)]
    if taken:
        pytest.skip(f"ports {taken} are taken on this machine")
    issuer = Issuer(port=18601).start()
    upstream = UpstreamServer("app", port=18602).start()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("FASTGW_LISTEN", "FASTGW_WORKERS", "FASTGW_ADMIN"):
        env.pop(name, None)
    err = open(tmp_path / "stderr", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "fastgw", "run", "--config", str(EXAMPLE), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 20
        while not port_accepts(18600):
            assert proc.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "the example did not listen on 18600"
            time.sleep(0.05)
        yield issuer, upstream
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        err.close()
        upstream.stop()
        issuer.stop()


def get(path, headers=(), method="GET"):
    return http_request(18600, method, path, list(headers))


@pytest.mark.timeout(90)
def test_example_auth_yaml_as_documented(example):
    issuer, upstream = example
    # /public/: open, CORS for https://app.test.
    assert get("/public/x").status == 200
    pre = get("/public/x", [("Origin", "https://app.test"), ("Access-Control-Request-Method", "POST")], "OPTIONS")
    assert pre.status == 200 and pre.header("access-control-allow-origin") == "https://app.test"
    assert pre.header("access-control-allow-credentials") == "true" and pre.header("access-control-max-age") == "600"
    refused = get("/public/x", [("Origin", "https://evil.test"), ("Access-Control-Request-Method", "GET")], "OPTIONS")
    assert refused.status == 403
    # /api/: a JWT; sub -> X-User-Id (a forged one removed).
    assert_gateway_error(get("/api/x"), 401, "invalid_token")
    token = issuer.token(sub="alice")
    deadline = time.monotonic() + 10   # the worker's first JWKS fetch may still be under way
    resp = get("/api/x", [("Authorization", f"Bearer {token}"), ("X-User-Id", "root")])
    while resp.status == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
        resp = get("/api/x", [("Authorization", f"Bearer {token}")])
    assert resp.status == 200, resp.describe()
    assert upstream.requests[-1].header_all("x-user-id") == ["alice"]
    # /api/admin/: scope admin.
    assert_gateway_error(get("/api/admin/x", [("Authorization", f"Bearer {token}")]), 403, "insufficient_scope")
    admin = issuer.token(sub="root", scope="read admin")
    assert get("/api/admin/x", [("Authorization", f"Bearer {admin}")]).status == 200
    # /keys/: the API key fgw_test_key_1 (id ci), 5/s burst 5 per consumer.
    assert_gateway_error(get("/keys/x", [("X-Api-Key", "wrong")]), 401, "invalid_token")
    started = time.monotonic()
    answers = [get("/keys/x", [("X-Api-Key", "fgw_test_key_1")]) for _ in range(20)]
    elapsed = time.monotonic() - started
    statuses = [a.status for a in answers]
    assert statuses[:5] == [200] * 5
    # At most the burst plus what 5/s refilled meanwhile got through; the rest were refused.
    assert statuses.count(200) <= 5 + int(5 * elapsed) + 1, (statuses, elapsed)
    assert set(statuses) <= {200, 429}
    if elapsed < 2.5:
        assert 429 in statuses
    for answer in answers:
        if answer.status == 429:
            assert_gateway_error(answer, 429, "rate_limited")
            assert answer.header("x-ratelimit-type") == "consumer"
    # /internal/: only 10.0.0.0/8 (this client is 127.0.0.1).
    assert_gateway_error(get("/internal/x"), 403, "ip_denied")
