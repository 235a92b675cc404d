"""Config for Redis-scoped rate limits: the top-level `redis:` section and
`scope: redis` on routes[].rate_limits."""
from __future__ import annotations

from fastgw.config import load
from fastgw.config.model import Redis

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
