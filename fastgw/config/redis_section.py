"""Reader for the top-level `redis` section, and the check that every
`scope: redis` rate limit has a Redis to talk to.

    redis:
      url: rediss://cache.internal:6380/0   # redis://, rediss:// (TLS) or unix:///run/redis.sock?db=0
      username: fastgw        # an ACL user (Redis 6+); else AUTH with the password alone
      password_file: /run/secrets/redis   # or password_env: REDIS_PASSWORD, or password: ...
      tls:                    # only with rediss://
        ca_file: /etc/fastgw/redis-ca.pem   # else the system trust store
        cert_file: client.pem # a client certificate, with key_file
        key_file: client.key
        server_name: cache.internal         # else the URL's host
      timeout: 50ms          # per command; then the failure mode decides
      connect_timeout: 1s
      failure_mode: open     # open: admit without the limit; closed: 503
      log_interval: 10s      # one log line per interval while Redis fails

The password comes from one place: the URL (`redis://user:pass@host`),
`password`, `password_env` or `password_file` (read when the config is
loaded, so a reload picks up a rotated file; surrounding whitespace is
trimmed). It never appears in an error message: the URL is quoted back
without it. Certificate verification can only be turned off with
`tls.insecure_skip_verify: true`, which the workers log as a warning.
Relative paths are relative to the config file's directory.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from urllib.parse import parse_qs, unquote, urlsplit

from fastgw.config import model
from fastgw.config.errors import Invalid
from fastgw.config.model import Redis, RedisTls
from fastgw.config.reader import Section
from fastgw.config.schema import (ENV_NAME, RATE_LIMIT_SCOPES, config_dir, describe, existing_file, is_digits,
                                  parse_bool, parse_duration, shorten, split_host_port)

REDIS_KEYS = ("url", "username", "password", "password_env", "password_file", "tls", "timeout", "connect_timeout",
              "failure_mode", "log_interval")
PASSWORD_KEYS = ("password", "password_env", "password_file")
TLS_KEYS = ("ca_file", "cert_file", "key_file", "server_name", "verify", "insecure_skip_verify")
REDIS_URL_HINT = ("write redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], e.g. redis://127.0.0.1:6379/0, "
                  "rediss://HOST:PORT for TLS, or unix:///PATH?db=0")
FAILURE_MODES = ("open", "closed")
DEFAULT_PORT = 6379
MAX_DB = 15  # a default redis.conf has 16 databases
MAX_PASSWORD_FILE_CHARS = 4096


def read_redis(top: Section, env: Mapping[str, str] | None = None) -> Redis | None:
    if not top.has("redis"):
        return None
    env = os.environ if env is None else env
    section = top.section("redis", REDIS_KEYS)
    fields = section.require("url", parse_redis_url, {}, REDIS_URL_HINT)
    use_tls = fields.pop("tls", False)
    redis = Redis(
        **fields,
        timeout=section.parse("timeout", parse_duration, model.DEFAULT_REDIS_TIMEOUT),
        connect_timeout=section.parse("connect_timeout", parse_duration, model.DEFAULT_REDIS_CONNECT_TIMEOUT),
        failure_mode=section.parse("failure_mode", parse_failure_mode, "open"),
        log_interval=section.parse("log_interval", parse_duration, model.DEFAULT_REDIS_LOG_INTERVAL),
    )
    redis = _read_credentials(section, redis, env)
    tls = _read_tls(section, use_tls, redis)
    return replace(redis, tls=tls)


# --- AUTH ----------------------------------------------------------------------

def _read_credentials(section: Section, redis: Redis, env: Mapping[str, str]) -> Redis:
    username, password = redis.username, redis.password
    source = "redis.url" if password is not None else None
    if section.has("username"):
        if username is not None:
            section.errors.add(section.path("username"), "the URL names a user too",
                               "keep the user in one place: remove it from the URL or remove redis.username")
        username = section.parse("username", _parse_username, None)
    given = [key for key in PASSWORD_KEYS if section.has(key)]
    any_given = bool(given)
    if source is not None and given:
        section.errors.add(section.path(given[0]), "the URL holds a password too",
                           f"keep one source of the password: remove it from the URL or remove redis.{given[0]}")
        given = []
    elif len(given) > 1:
        section.errors.add(section.path(given[1]), f"{' and '.join(given)} are both set",
                           "set one source of the Redis password")
        given = []
    if given:
        key = given[0]
        password = section.parse(key, _PASSWORD_READERS[key](section, env), None)
        if password is not None:
            value = section.get(key)
            source = {"password": "redis.password", "password_env": f"env {value}",
                      "password_file": f"file {value}"}[key]
    if username is not None and password is None and not any_given and source is None:
        section.errors.add(section.path("username") if section.has("username") else section.path("url"),
                           f"user {username!r} has no password",
                           "add password_file, password_env or password (an ACL user with nopass "
                           "takes any password)")
    return replace(redis, username=username, password=password, password_source=source)


def _parse_username(value: object) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() or not c.isprintable() for c in value):
        raise Invalid(f"expected a user name without spaces, got {describe(value)}",
                      "write the ACL user, e.g. username: fastgw")
    return value


def _check_password(password: str, where: str) -> str:
    if not password:
        raise Invalid(f"{where} is empty", "give the password Redis expects (requirepass or the ACL user's)")
    if any(c in "\r\n\0" for c in password):
        raise Invalid(f"{where} holds a line break or NUL", "a password is one line")
    return password


def _read_password(section: Section, env: Mapping[str, str]):
    def parse(value: object) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {'a ' + type(value).__name__}",
                          "quote the password: password: '1234', or use password_file")
        return _check_password(value, "the password")
    return parse


def _read_password_env(section: Section, env: Mapping[str, str]):
    def parse(value: object) -> str:
        if not isinstance(value, str) or not ENV_NAME.fullmatch(value):
            raise Invalid(f"expected an environment variable name, got {describe(value)}",
                          "e.g. password_env: REDIS_PASSWORD")
        password = env.get(value, "").strip()
        if not password:
            raise Invalid(f"environment variable {value} is not set or empty",
                          "export it before starting fastgw, or use password_file")
        return _check_password(password, f"${value}")
    return parse


def _read_password_file(section: Section, env: Mapping[str, str]):
    def parse(value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"expected a file path, got {describe(value)}",
                          "write the path of a file holding the password")
        path = os.path.join(config_dir(section), value)   # an absolute value stays itself
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read(MAX_PASSWORD_FILE_CHARS + 1)   # bounded: password_file: /dev/zero
        except (OSError, UnicodeDecodeError, ValueError) as error:   # ValueError: a NUL in the path
            reason = getattr(error, "strerror", None) or str(error)
            raise Invalid(f"cannot read {shorten(path)}: {reason}", "check the path and its permissions") from None
        if len(text) > MAX_PASSWORD_FILE_CHARS:
            raise Invalid(f"{shorten(path)} is longer than {MAX_PASSWORD_FILE_CHARS} characters",
                          "the file holds the password alone")
        return _check_password(text.strip(), f"the password in {shorten(path)}")
    return parse


_PASSWORD_READERS = {"password": _read_password, "password_env": _read_password_env,
                     "password_file": _read_password_file}


# --- TLS -----------------------------------------------------------------------

def _read_tls(section: Section, use_tls: bool, redis: Redis) -> RedisTls | None:
    if not section.has("tls"):
        return RedisTls() if use_tls else None
    tls_section = section.section("tls", TLS_KEYS)
    if not use_tls:
        section.errors.add(section.path("tls"), "is set but the URL is not rediss://",
                           "write the URL as rediss://HOST:PORT to talk TLS to Redis, or remove tls:")
        return None
    if tls_section.has("verify") and tls_section.get("verify") is not True:
        tls_section.errors.add(tls_section.path("verify"),
                               f"only true is accepted, got {describe(tls_section.get('verify'))}",
                               "certificate verification is on by default; to turn it off (never in "
                               "production) write insecure_skip_verify: true")
    files = {}
    for key in ("ca_file", "cert_file", "key_file"):
        files[key] = tls_section.parse(key, partial(existing_file, base=config_dir(tls_section),
                                                    what=f"a PEM file for {key}"), None)
    for given, needs in (("cert_file", "key_file"), ("key_file", "cert_file")):
        if tls_section.has(given) and not tls_section.has(needs):
            tls_section.errors.add(tls_section.path(given), f"is set without {needs}",
                                   "a client certificate needs both cert_file and key_file")
            files["cert_file"] = files["key_file"] = None
    tls = RedisTls(**files,
                   server_name=tls_section.parse("server_name", _parse_server_name, None),
                   insecure_skip_verify=tls_section.parse("insecure_skip_verify", parse_bool, False))
    if tls.insecure_skip_verify and (tls.ca_file is not None or tls.server_name is not None):
        tls_section.errors.add(tls_section.path("insecure_skip_verify"),
                               "true ignores ca_file and server_name, which are set",
                               "remove insecure_skip_verify to verify against ca_file")
    if tls.cert_file is None and tls.key_file is not None:
        tls = replace(tls, key_file=None)
    # Load the files now, so that a bad one is this config's error, not a worker's.
    from fastgw.redis.tls import TlsSetupError, client_context   # late: config sits below fastgw.redis
    try:
        client_context(tls)
    except TlsSetupError as error:
        tls_section.errors.add(tls_section.path(error.key), error.problem,
                               "give PEM files: ca_file the CA that signed Redis's certificate, cert_file and "
                               "key_file the client's certificate and its unencrypted key")
    return tls


def _parse_server_name(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9.:_-]+", value or ""):
        raise Invalid(f"expected a host name, got {describe(value)}",
                      "the name in Redis's certificate, e.g. server_name: cache.internal")
    return value.lower()


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
    """`redis[s]://[[user]:password@]host[:port][/db]` or `unix:///path[?db=N]` ->
    the Redis fields (host, port, unix_path, db, username, password, and tls:
    True for rediss://)."""
    if not isinstance(value, str):
        raise Invalid(f"expected a URL string, got {describe(value)}", REDIS_URL_HINT)
    text = value.strip()
    shown = repr(_redacted(text))
    scheme, sep, _ = text.partition("://")
    if not sep:
        raise Invalid(f"{shown} has no scheme", f"add redis:// in front: redis://{_redacted(text)}")
    scheme = scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
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
                    "password": unquote(parts.password) if parts.password else None}
    if scheme == "rediss":
        fields["tls"] = True
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
