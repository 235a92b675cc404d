"""Config for Redis-scoped rate limits: the top-level `redis:` section and
`scope: redis` on routes[].rate_limits."""
from __future__ import annotations

from fastgw.config import load
from fastgw.config.model import Redis, RedisTls

ROUTE_WITH_REDIS_LIMIT = """
clusters:
  users:
    endpoints: [http://127.0.0.1:9001]
routes:
  - match: {prefix: /}
    cluster: users
    rate_limits:
      - {key: client_ip, rate: 100/s, scope: redis}
"""


def test_defaults_and_url_forms(write_config, minimal):
    assert load(write_config(minimal), env={}).redis is None
    config = load(write_config("redis: {url: 'redis://127.0.0.1'}\n" + ROUTE_WITH_REDIS_LIMIT), env={})
    assert config.redis == Redis(host="127.0.0.1", port=6379)
    assert (config.redis.timeout, config.redis.connect_timeout, config.redis.failure_mode,
            config.redis.log_interval) == (0.05, 1.0, "open", 10.0)
    assert config.routes[0].rate_limits[0].scope == "redis"
    config = load(write_config("""
redis:
  url: "redis://user:p%40ss@Cache.local:6380/2"
  timeout: 20ms
  connect_timeout: 500ms
  failure_mode: closed
  log_interval: 1s
""" + ROUTE_WITH_REDIS_LIMIT), env={})
    assert config.redis == Redis(host="cache.local", port=6380, db=2, username="user", password="p@ss",
                                 password_source="redis.url", timeout=0.02, connect_timeout=0.5, failure_mode="closed", log_interval=1.0)
    assert "p@ss" not in repr(config.redis) and config.redis.address == "cache.local:6380"
    config = load(write_config("redis: {url: 'unix:///run/redis.sock?db=1'}\n" + ROUTE_WITH_REDIS_LIMIT), env={})
    assert (config.redis.unix_path, config.redis.db, config.redis.address) == ("/run/redis.sock", 1,
                                                                               "unix:/run/redis.sock")
    config = load(write_config("redis: {url: 'redis://:pw@[::1]:7000'}\n" + ROUTE_WITH_REDIS_LIMIT), env={})
    assert (config.redis.host, config.redis.port, config.redis.password, config.redis.username) == (
        "::1", 7000, "pw", None)


def test_redis_scope_without_a_redis_section(config_errors, find_error):
    source, errors = config_errors(ROUTE_WITH_REDIS_LIMIT)
    find_error(errors, source, "routes[0].rate_limits[0].scope", "scope 'redis' needs a top-level redis: section",
               "add redis: {url: redis://127.0.0.1:6379}")
    assert len(errors) == 1, errors


def test_scopes_cannot_be_mixed_on_one_route(config_errors, find_error):
    source, errors = config_errors("redis: {url: 'redis://127.0.0.1'}\n" + ROUTE_WITH_REDIS_LIMIT
                                   + "      - {key: route, rate: 1000/s}\n")
    find_error(errors, source, "routes[0].rate_limits[1].scope", "scope 'local' is mixed with scope 'redis'",
               "same scope")
    assert len(errors) == 1, errors


def test_each_redis_error_and_the_password_stays_out(config_errors, find_error):
    cases = {
        "url: 'redis://:hunter2@127.0.0.1:99999'": ("redis.url", "port 99999 is out of range"),
        "url: '127.0.0.1:6379'": ("redis.url", "has no scheme", "add redis:// in front"),
        "url: 'http://h:1'": ("redis.url", "scheme 'http' is not supported"),
        "url: 'redis://:hunter2@h:1/db9x'": ("redis.url", "database 'db9x' is not a number from 0 to 15"),
        "url: 'redis://h:1?timeout=3'": ("redis.url", "unknown URL parameter 'timeout'", "only ?db=N"),
        "url: 'unix://'": ("redis.url", "has no socket path"),
        "url: 5": ("redis.url", "expected a URL string, got the number 5"),
        "timeout: 5": ("redis.url", "missing", "redis://"),
        "{url: 'redis://h', timeout: -1}": ("redis.timeout", "duration must be greater than 0"),
        "{url: 'redis://h', failure_mode: ajar}": ("redis.failure_mode", "unknown failure_mode 'ajar'",
                                                   "closed: they get 503"),
        "{url: 'redis://h', log_interval: soon}": ("redis.log_interval", "'soon' is not a duration"),
        "{url: 'redis://h', timout: 1s}": ("redis.timout", "unknown key", "did you mean 'timeout'?"),
    }
    for body, (keypath, *fragments) in cases.items():
        text = f"redis: {body}\n" if body.startswith("{") else f"redis:\n  {body}\n"
        source, errors = config_errors(text + ROUTE_WITH_REDIS_LIMIT)
        line = find_error(errors, source, keypath, *fragments)
        assert "hunter2" not in line, line
        assert len(errors) == 1, errors


def test_check_command_accepts_a_redis_config(run_cli, write_config):
    path = write_config("redis: {url: 'redis://127.0.0.1:6379'}\n" + ROUTE_WITH_REDIS_LIMIT)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    result = run_cli("routes", "--config", str(path), "GET", "/x")
    assert "key client_ip: 100/s, token_bucket, burst 100, scope redis" in result.stdout


def test_password_sources_and_tls(write_config, tmp_path):
    (tmp_path / "pw").write_text("  file-pw \n")
    from support.certs import make_certs    # tests/ is on sys.path (tests/conftest.py)
    certs = make_certs(tmp_path / "certs")
    cases = {
        "{url: 'redis://h', username: app, password_file: pw}": ("app", "file-pw", "file pw"),
        "{url: 'redis://h', password_env: REDIS_PW}": (None, "env-pw", "env REDIS_PW"),
        "{url: 'redis://h', password: 'p w'}": (None, "p w", "redis.password"),
    }
    for body, (user, password, source) in cases.items():
        config = load(write_config(f"redis: {body}\n" + ROUTE_WITH_REDIS_LIMIT), env={"REDIS_PW": " env-pw\n"})
        assert (config.redis.username, config.redis.password, config.redis.password_source) == (
            user, password, source), body
        assert config.redis.tls is None
    config = load(write_config("redis: {url: 'rediss://h:6380'}\n" + ROUTE_WITH_REDIS_LIMIT), env={})
    assert config.redis.tls == RedisTls() and config.redis.port == 6380
    config = load(write_config(f"""
redis:
  url: rediss://127.0.0.1
  tls: {{ca_file: certs/ca.pem, cert_file: {certs.client_cert}, key_file: {certs.client_key},
         server_name: Cache.Local, verify: true}}
""" + ROUTE_WITH_REDIS_LIMIT), env={})
    assert config.redis.tls == RedisTls(ca_file=str(certs.ca), cert_file=str(certs.client_cert),
                                        key_file=str(certs.client_key), server_name="cache.local")


def test_each_auth_and_tls_error_names_its_key_and_hides_the_password(config_errors, find_error, tmp_path):
    (tmp_path / "empty").write_text(" \n")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    (tmp_path / "pw").write_text("hunter2\n")
    cases = {
        "{url: 'redis://:hunter2@h', password: hunter2}": ("redis.password", "the URL holds a password too",
                                                           "remove it from the URL"),
        "{url: 'redis://h', password: hunter2, password_env: X}": ("redis.password_env",
                                                                   "password and password_env are both set"),
        "{url: 'redis://h', password_file: pw, password_env: X}": ("redis.password_file",
                                                                   "password_env and password_file"),
        "{url: 'redis://u@h', username: v, password: hunter2}": ("redis.username", "the URL names a user too"),
        "{url: 'redis://h', username: app}": ("redis.username", "user 'app' has no password", "password_file"),
        "{url: 'redis://h', username: 'a b', password: hunter2}": ("redis.username", "without spaces"),
        "{url: 'redis://h', password: 1234}": ("redis.password", "expected a string, got a int", "quote"),
        "{url: 'redis://h', password: ''}": ("redis.password", "the password is empty"),
        "{url: 'redis://h', password_env: UNSET_PW}": ("redis.password_env", "UNSET_PW is not set or empty",
                                                       "export it"),
        "{url: 'redis://h', password_env: 'not a name'}": ("redis.password_env",
                                                           "expected an environment variable name"),
        "{url: 'redis://h', password_file: missing}": ("redis.password_file", "cannot read", "check the path"),
        "{url: 'redis://h', password_file: empty}": ("redis.password_file", "is empty"),
        "{url: 'redis://h', tls: {ca_file: x}}": ("redis.tls", "the URL is not rediss://", "rediss://HOST:PORT"),
        "{url: 'rediss://h', tls: {verify: false}}": ("redis.tls.verify", "only true is accepted",
                                                      "insecure_skip_verify: true"),
        "{url: 'rediss://h', tls: {ca_file: nowhere.pem}}": ("redis.tls.ca_file", "does not exist",
                                                             "relative to the config file's directory"),
        "{url: 'rediss://h', tls: {ca_file: junk.pem}}": ("redis.tls.ca_file", "cannot load", "PEM files"),
        "{url: 'rediss://h', tls: {cert_file: junk.pem}}": ("redis.tls.cert_file", "without key_file"),
        "{url: 'rediss://h', tls: {cert_file: junk.pem, key_file: junk.pem}}": ("redis.tls.cert_file",
                                                                               "cannot load the client"),
        "{url: 'rediss://h', tls: {insecure_skip_verify: maybe}}": ("redis.tls.insecure_skip_verify",),
        "{url: 'rediss://h', tls: {insecure_skip_verify: true, server_name: h}}": (
            "redis.tls.insecure_skip_verify", "ignores ca_file and server_name"),
        "{url: 'rediss://h', tls: {server_name: 'a b'}}": ("redis.tls.server_name", "expected a host name"),
        "{url: 'rediss://h', tls: {ca: x}}": ("redis.tls.ca", "unknown key", "ca_file"),
    }
    for body, (keypath, *fragments) in cases.items():
        source, errors = config_errors(f"redis: {body}\n" + ROUTE_WITH_REDIS_LIMIT)
        line = find_error(errors, source, keypath, *fragments)
        assert "hunter2" not in line, line
        assert len(errors) == 1, (body, errors)
