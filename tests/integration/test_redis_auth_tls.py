"""AUTH and TLS to Redis through the real gateway: a Redis rate limit over an
ACL user (password from a file, from an environment variable) and over TLS
with a client certificate; a wrong password, a certificate from the wrong
CA and TLS to a plain port each give the failure mode and one clear log
line, and the gateway keeps serving. Counts are read from Redis
(`INFO commandstats`, the limit's key), never inferred from timing.

Certificates are generated per test (tests/support/certs.py).
"""
from __future__ import annotations

import re

import pytest

from support import RawClient, assert_gateway_error, http_request, route, simple_config, wait_until
from support.certs import make_certs

ADMIN_PW = "admin-pw-5b2e"      # the default user's (requirepass): what the test itself logs in with
USER_PW = "gw-pw-93d1 x"        # the gateway's ACL user; a space, to prove it is sent as one argument
WRONG_PW = "not-the-pw-771"
LOG_WAIT = 30.0                 # seconds a log line may take on a busy machine (polled, not slept)


def limited_config(upstream_url: str, redis: dict, *, burst: int = 3, failure_mode: str = "open") -> dict:
    """Route `limited` (/echo, a Redis limit of `burst` a minute) and route
    `free` (/free, no limit)."""
    config = simple_config(upstream_url)
    config["redis"] = {"failure_mode": failure_mode, **redis}
    config["routes"] = [route("free", "main", prefix="/free")] + config["routes"]
    config["routes"][1]["name"] = "limited"
    config["routes"][1]["rate_limits"] = [{"key": "route", "rate": "1/m", "burst": burst, "scope": "redis"}]
    return config


def evalsha_calls(server) -> int:
    """EVALSHAs Redis has executed (its own count, INFO commandstats)."""
    stats = server.command("INFO", "commandstats").decode()
    match = re.search(r"cmdstat_evalsha:calls=(\d+)", stats)
    return int(match.group(1)) if match else 0


def acl_redis(redis_factory):
    """A Redis whose default user needs ADMIN_PW and with an ACL user
    `fastgw` (USER_PW) allowed only the limit's keys."""
    server = redis_factory(extra_args=("--requirepass", ADMIN_PW), admin_password=ADMIN_PW)
    assert server.command("ACL", "SETUSER", "fastgw", "reset", "on", f">{USER_PW}", "~fastgw:rl:*",
                          "+@all", "-@dangerous") == b"OK"
    return server


def get_statuses(port: int, path: str, count: int) -> list:
    with RawClient(port) as client:
        answers = []
        for _ in range(count):
            client.request("GET", path)
            answers.append(client.read_response())
    return answers


def check_limit_counts(gw, server, burst: int = 3) -> None:
    """burst requests pass and the next is refused, each decided by one
    EVALSHA in this Redis, whose key holds the bucket."""
    before = evalsha_calls(server)
    answers = get_statuses(gw.port, "/echo/x", burst + 2)
    assert [a.status for a in answers] == [200] * burst + [429, 429], [a.status for a in answers]
    assert [a.header("ratelimit-remaining") for a in answers[:burst]] == [str(burst - n) for n in range(1, burst + 1)]
    assert evalsha_calls(server) - before == burst + 2
    assert server.command("KEYS", "fastgw:rl:*") == [b"fastgw:rl:limited:0:limited"]   # key: route -> the route name


def wait_for_log(gw, pattern: str) -> str:
    found = wait_until(lambda: re.search(pattern, gw.stderr()), LOG_WAIT, step=0.1)
    assert found, f"no log line matching {pattern!r} in:\n{gw.stderr()}"
    return gw.stderr()


def assert_unavailable_and_serving(gw, failure_mode: str) -> None:
    """The limited route answers by the failure mode; the other route serves."""
    for answer in get_statuses(gw.port, "/echo/x", 3):
        if failure_mode == "closed":
            err = assert_gateway_error(answer, 503, "rate_limit_unavailable")
            assert "rate limit store is unavailable" in err["message"]
        else:
            assert answer.status == 200 and answer.header("ratelimit-limit") is None
    assert [a.status for a in get_statuses(gw.port, "/free/y", 2)] == [200, 200]


@pytest.mark.timeout(60)
def test_limit_over_an_acl_user_with_the_password_from_a_file(upstream, gateway_factory, redis_factory, tmp_path):
    server = acl_redis(redis_factory)
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(USER_PW + "\n")     # a trailing newline, as editors leave one: trimmed
    gw = gateway_factory(limited_config(upstream.url, {
        "url": f"redis://127.0.0.1:{server.port}", "username": "fastgw", "password_file": str(secret_file),
        "timeout": "5s"}))    # generous: the first requests wait for the first dial, whatever the load
    check_limit_counts(gw, server)
    clients = server.command("CLIENT", "LIST").decode()
    assert re.search(r" user=fastgw ", clients), clients
    shown = http_request(gw.admin_port, "GET", "/config")
    redis_view = shown.json()["config"]["redis"]
    assert redis_view["password"] == "<redacted>" and redis_view["username"] == "fastgw"
    assert redis_view["password_source"] == f"file {secret_file}"
    for text in (shown.body.decode(), gw.stderr(), gw.stdout()):
        assert USER_PW not in text


@pytest.mark.timeout(60)
def test_limit_with_the_password_from_an_environment_variable(upstream, gateway_factory, redis_factory,
                                                              monkeypatch):
    server = acl_redis(redis_factory)
    monkeypatch.setenv("FASTGW_TEST_REDIS_PW", USER_PW)   # the gateway process inherits it
    gw = gateway_factory(limited_config(upstream.url, {
        "url": f"redis://127.0.0.1:{server.port}", "username": "fastgw", "password_env": "FASTGW_TEST_REDIS_PW",
        "timeout": "5s"}))
    check_limit_counts(gw, server)
    assert USER_PW not in gw.stderr()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("failure_mode", ["closed", "open"])
def test_a_wrong_password_gives_the_failure_mode_and_a_log_line(upstream, gateway_factory, redis_factory,
                                                                failure_mode):
    server = acl_redis(redis_factory)
    gw = gateway_factory(limited_config(upstream.url, {
        "url": f"redis://127.0.0.1:{server.port}", "username": "fastgw", "password": WRONG_PW,
        "log_interval": "1s"}, failure_mode=failure_mode))
    stderr = wait_for_log(gw, rf"redis at 127\.0\.0\.1:{server.port} unavailable \(AUTH as user 'fastgw' "
                              r"\(password from redis\.password\) failed: WRONGPASS")
    assert_unavailable_and_serving(gw, failure_mode)
    what = "refused \\(503\\)" if failure_mode == "closed" else "admitted without the limit"
    stderr = wait_for_log(gw, rf"\d+ requests to route 'limited' {what} in the last 1s")
    assert WRONG_PW not in stderr and WRONG_PW not in gw.stdout()
    assert evalsha_calls(server) == 0 and server.command("KEYS", "fastgw:rl:*") == []


@pytest.mark.timeout(60)
def test_limit_over_tls_with_a_client_certificate(upstream, gateway_factory, redis_factory, tmp_path):
    certs = make_certs(tmp_path / "certs")
    server = redis_factory(tls=certs, tls_auth_clients="yes")   # no client certificate, no connection
    gw = gateway_factory(limited_config(upstream.url, {
        "url": server.url, "timeout": "5s",
        "tls": {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert), "key_file": str(certs.client_key)}}))
    assert server.url.startswith("rediss://")
    check_limit_counts(gw, server)
    assert "verification is OFF" not in gw.stderr()


@pytest.mark.timeout(60)
def test_tls_and_an_acl_user_together_by_server_name(upstream, gateway_factory, redis_factory, tmp_path):
    certs = make_certs(tmp_path / "certs")
    server = redis_factory(tls=certs, extra_args=("--requirepass", ADMIN_PW), admin_password=ADMIN_PW)
    assert server.command("ACL", "SETUSER", "fastgw", "on", f">{USER_PW}", "~fastgw:rl:*", "+@all") == b"OK"
    gw = gateway_factory(limited_config(upstream.url, {
        "url": f"rediss://fastgw@127.0.0.1:{server.port}", "password": USER_PW, "timeout": "5s",
        "tls": {"ca_file": str(certs.ca), "server_name": "localhost"}}))   # the certificate's DNS name
    check_limit_counts(gw, server)


@pytest.mark.timeout(60)
def test_a_certificate_from_another_ca_fails_verification(upstream, gateway_factory, redis_factory, tmp_path):
    certs = make_certs(tmp_path / "certs")
    server = redis_factory(tls=certs)
    gw = gateway_factory(limited_config(upstream.url, {"url": server.url, "tls": {"ca_file": str(certs.other_ca)}},
                                        failure_mode="closed"))
    wait_for_log(gw, rf"redis at 127\.0\.0\.1:{server.port} unavailable \(TLS certificate verification failed: ")
    assert_unavailable_and_serving(gw, "closed")
    assert evalsha_calls(server) == 0


@pytest.mark.timeout(60)
def test_insecure_skip_verify_connects_and_warns(upstream, gateway_factory, redis_factory, tmp_path):
    certs = make_certs(tmp_path / "certs")
    server = redis_factory(tls=certs)
    gw = gateway_factory(limited_config(upstream.url, {"url": server.url, "timeout": "5s",
                                                       "tls": {"insecure_skip_verify": True}}))
    check_limit_counts(gw, server)
    assert re.search(rf"redis at 127\.0\.0\.1:{server.port}: TLS certificate verification is OFF", gw.stderr())


@pytest.mark.timeout(60)
def test_tls_to_a_plain_port_gives_the_failure_mode(upstream, gateway_factory, redis_server, tmp_path):
    certs = make_certs(tmp_path / "certs")
    gw = gateway_factory(limited_config(upstream.url, {
        "url": f"rediss://127.0.0.1:{redis_server.port}", "connect_timeout": "500ms",
        "tls": {"ca_file": str(certs.ca)}}))
    wait_for_log(gw, rf"redis at 127\.0\.0\.1:{redis_server.port} unavailable \([^)]*TLS[^)]*"
                     r"\(is the port a TLS port\?\)\)")
    assert_unavailable_and_serving(gw, "open")
    assert evalsha_calls(redis_server) == 0
