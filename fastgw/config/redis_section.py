"""Reader for the top-level `redis` section, and the check that every
`scope: redis` rate limit has a Redis to talk to.

    redis:
      url: redis://:secret@127.0.0.1:6379/0   # or unix:///run/redis.sock?db=0
      timeout: 50ms          # per command; then the failure mode decides
      connect_timeout: 1s
      failure_mode: open     # open: admit without the limit; closed: 503
      log_interval: 10s      # one log line per interval while Redis fails

The password never appears in an error message: the URL is quoted back
without it.
"""
from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from fastgw.config import model
from fastgw.config.errors import Invalid
from fastgw.config.model import Redis
from fastgw.config.reader import Section
from fastgw.config.schema import RATE_LIMIT_SCOPES, describe, is_digits, parse_duration, split_host_port

REDIS_KEYS = ("url", "timeout", "connect_timeout", "failure_mode", "log_interval")
REDIS_URL_HINT = "write redis://[:PASSWORD@]HOST[:PORT][/DB], e.g. redis://127.0.0.1:6379/0, or unix:///PATH?db=0"
FAILURE_MODES = ("open", "closed")
DEFAULT_PORT = 6379
MAX_DB = 15  # a default redis.conf has 16 databases


def read_redis(top: Section) -> Redis | None:
    if not top.has("redis"):
        return None
    section = top.section("redis", REDIS_KEYS)
    fields = section.require("url", parse_redis_url, {}, REDIS_URL_HINT)
    return Redis(
        **fields,
        timeout=section.parse("timeout", parse_duration, model.DEFAULT_REDIS_TIMEOUT),
        connect_timeout=section.parse("connect_timeout", parse_duration, model.DEFAULT_REDIS_CONNECT_TIMEOUT),
        failure_mode=section.parse("failure_mode", parse_failure_mode, "open"),
        log_interval=section.parse("log_interval", parse_duration, model.DEFAULT_REDIS_LOG_INTERVAL),
    )


def parse_failure_mode(value: object) -> str:
    if not isinstance(value, str) or value not in FAILURE_MODES:
        raise Invalid(f"unknown failure_mode {value!r}",
                      "open: requests proceed without the limit while Redis fails; "
                      "closed: they get 503 rate_limit_unavailable")
    return value


def _redacted(text: str) -> str:
    """The URL as the user wrote it, minus anything between :// and @."""
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return text


def parse_redis_url(value: object) -> dict:
    """`redis://[[user]:password@]host[:port][/db]` or `unix:///path[?db=N]` ->
    the Redis fields (host, port, unix_path, db, username, password)."""
    if not isinstance(value, str):
        raise Invalid(f"expected a URL string, got {describe(value)}", REDIS_URL_HINT)
    text = value.strip()
    shown = repr(_redacted(text))
    scheme, sep, _ = text.partition("://")
    if not sep:
        raise Invalid(f"{shown} has no scheme", f"add redis:// in front: redis://{_redacted(text)}")
    scheme = scheme.lower()
    if scheme == "rediss":
        raise Invalid("TLS to Redis (rediss://) is not supported", "use redis:// on a trusted network, "
                      "or a local TLS tunnel")
    if scheme not in ("redis", "unix"):
        raise Invalid(f"scheme {scheme!r} is not supported", REDIS_URL_HINT)
    try:
        parts = urlsplit(text)
    except ValueError as error:
        raise Invalid(f"{shown} is not a URL ({error})", REDIS_URL_HINT) from None
    if parts.fragment:
        raise Invalid(f"{shown} has a fragment", REDIS_URL_HINT)
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = [name for name in query if name != "db"]
    if unknown:
        raise Invalid(f"{shown}: unknown URL parameter {unknown[0]!r}", "only ?db=N is understood")
    fields: dict = {"username": unquote(parts.username) if parts.username else None,
                    "password": unquote(parts.password) if parts.password is not None else None}
    db_text = query["db"][-1] if "db" in query else None
    if scheme == "unix":
        if parts.netloc.rpartition("@")[2]:
            raise Invalid(f"{shown}: a unix socket URL has no host",
                          "write three slashes and an absolute path: unix:///run/redis.sock")
        if not parts.path or parts.path == "/":
            raise Invalid(f"{shown} has no socket path", "e.g. unix:///run/redis/redis.sock")
        fields["unix_path"] = unquote(parts.path)
    else:
        authority = parts.netloc.rpartition("@")[2]
        if not authority:
            raise Invalid(f"{shown} has no host", REDIS_URL_HINT)
        fields["host"], fields["port"] = split_host_port(authority, REDIS_URL_HINT, default_port=DEFAULT_PORT)
        path = parts.path.strip("/")
        if path:
            if db_text is not None:
                raise Invalid(f"{shown} gives the database twice", "keep /DB or ?db=DB")
            db_text = path
    if db_text is not None:
        if not is_digits(db_text) or len(db_text) > 2 or int(db_text) > MAX_DB:
            raise Invalid(f"{shown}: database {db_text!r} is not a number from 0 to {MAX_DB}",
                          "e.g. redis://127.0.0.1:6379/0")
        fields["db"] = int(db_text)
    return fields


def check_limit_scopes(top: Section, redis: Redis | None) -> None:
    """`scope: redis` needs a `redis:` section; one route's limits share one scope.

    Mixing scopes on a route is refused because the two are checked at
    different moments (local at parse time, Redis in an admission stage): a
    Redis denial could not give back what the local limit already took, and
    the client would get two sets of RateLimit headers.

    Reads the raw YAML so that key paths carry the file's list positions
    (invalid entries are missing from the built routes).
    """
    routes = top.get("routes")
    if not isinstance(routes, list):
        return
    for index, route in enumerate(routes):
        limits = route.get("rate_limits") if isinstance(route, dict) else None
        if not isinstance(limits, list):
            continue
        first_scope = None
        for position, limit in enumerate(limits):
            if not isinstance(limit, dict):
                continue
            scope = limit.get("scope") or "local"
            if scope not in RATE_LIMIT_SCOPES:
                continue   # reported by the route reader
            keypath = f"routes[{index}].rate_limits[{position}].scope"
            if scope == "redis" and redis is None:
                top.errors.add(keypath, "scope 'redis' needs a top-level redis: section",
                               "add redis: {url: redis://127.0.0.1:6379}, or use scope: local")
            elif first_scope is not None and scope != first_scope:
                top.errors.add(keypath, f"scope {scope!r} is mixed with scope {first_scope!r} on the same route",
                               "give all limits of one route the same scope")
            first_scope = first_scope or scope
