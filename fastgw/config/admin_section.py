"""Reader for the `admin` section: the admin listener and its bearer token.

    admin:
      enabled: true                 # false: no admin listener at all
      address: 127.0.0.1:9901
      token_file: /run/secrets/fastgw-admin   # or token_env: FASTGW_ADMIN_TOKEN, or token: ...
      required_clusters: [users]    # /readyz needs a healthy endpoint in each
      audit_log: /var/log/fastgw/audit.jsonl   # config changes through the API, as JSON lines
      allow_anonymous_changes: false           # PUT/PATCH /config without a token (loopback only)

Listening beyond loopback without a token is refused: the admin API can
reload and drain the gateway and shows its config. The token is read when
the config is loaded, so a reload picks up a rotated token file.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from fastgw.config import model
from dataclasses import replace

from fastgw.config.model import AdminSettings, Cluster, Config, Listener
from fastgw.config.errors import ErrorList, Invalid, item
from fastgw.config.reader import Section, parse_or_record
from fastgw.config.schema import (ADDRESS_HINT, describe, format_address, parse_address, parse_bool, parse_name,
                                  shorten, suggestion)

ADMIN_KEYS = ("enabled", "address", "token", "token_file", "token_env", "required_clusters", "audit_log",
              "allow_anonymous_changes")
TOKEN_KEYS = ("token", "token_file", "token_env")
# A bearer token short enough to guess is no protection.
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_FILE_CHARS = 4096
TOKEN_HINT = f"use a random string of at least {MIN_TOKEN_LENGTH} characters, e.g. from `openssl rand -hex 32`"
REQUIRED_HINT = "write a list of cluster names, e.g. required_clusters: [users]"


def read_admin(top: Section, listeners: tuple[Listener, ...], clusters: Mapping[str, Cluster],
               env: Mapping[str, str]) -> AdminSettings:
    admin = top.section("admin", ADMIN_KEYS)
    enabled = admin.parse("enabled", parse_bool, True)
    host, port = admin.parse("address", parse_address, (model.DEFAULT_ADMIN_HOST, model.DEFAULT_ADMIN_PORT))
    token, source = _read_token(admin, env)
    required = _read_required_clusters(admin, clusters)
    audit_log = admin.parse("audit_log", _parse_path, None)
    anonymous = admin.parse("allow_anonymous_changes", parse_bool, False)
    if enabled and port:
        _check_address(admin, host, port, token, listeners)
    return AdminSettings(enabled=enabled, host=host, port=port, token=token, token_source=source,
                         required_clusters=required, audit_log=audit_log, allow_anonymous_changes=anonymous)


def _parse_path(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise Invalid(f"expected a file path, got {describe(value)}",
                      "write the path of a file to append to, e.g. audit_log: /var/log/fastgw/audit.jsonl")
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def _check_address(admin: Section, host: str, port: int, token: str | None,
                   listeners: tuple[Listener, ...]) -> None:
    address = format_address(host, port)
    if token is None and not is_loopback(host):
        admin.errors.add(admin.path("address"), f"{address} is reachable beyond this host and no token is set",
                         "set admin.token_file, admin.token_env or admin.token, or listen on 127.0.0.1")
    for index, listener in enumerate(listeners):
        if (listener.host, listener.port) == (host, port):
            admin.errors.add(admin.path("address"), f"{address} is already used by listeners[{index}]",
                             "give the admin API a port of its own with admin.address, "
                             "or turn it off with admin.enabled: false")


def _read_token(admin: Section, env: Mapping[str, str]) -> tuple[str | None, str | None]:
    given = [key for key in TOKEN_KEYS if admin.has(key)]
    if len(given) > 1:
        admin.errors.add(admin.path(given[1]), f"{' and '.join(given)} are both set",
                         "set one source for the admin token")
        return None, None
    if not given:
        return None, None
    key = given[0]
    value = admin.get(key)
    if not isinstance(value, str) or not value.strip():
        admin.errors.add(admin.path(key), f"expected a non-empty string, got {describe(value)}",
                         {"token": TOKEN_HINT, "token_file": "write the path of a file holding the token",
                          "token_env": "write the name of an environment variable, e.g. FASTGW_ADMIN_TOKEN"}[key])
        return None, None
    if key == "token":
        token, source = value, "admin.token"
    elif key == "token_file":
        try:
            with open(value, encoding="utf-8") as file:
                token = file.read(MAX_TOKEN_FILE_CHARS + 1)  # bounded: token_file: /dev/zero
        except (OSError, UnicodeDecodeError, ValueError) as error:  # ValueError: a NUL in the path
            reason = getattr(error, "strerror", None) or str(error)
            admin.errors.add(admin.path(key), f"cannot read {shorten(value)}: {reason}",
                             "check the path and its permissions")
            return None, None
        if len(token) > MAX_TOKEN_FILE_CHARS:
            admin.errors.add(admin.path(key), f"{shorten(value)} is longer than {MAX_TOKEN_FILE_CHARS} characters",
                             "the file holds the token alone: " + TOKEN_HINT)
            return None, None
        token = token.strip()
        source = f"file {value}"
    else:
        token = env.get(value, "").strip()
        if not token:
            admin.errors.add(admin.path(key), f"environment variable {value} is not set or empty",
                             "export it before starting fastgw, or use token_file")
            return None, None
        source = f"env {value}"
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() or not c.isprintable() for c in token):
        admin.errors.add(admin.path(key), f"the token must be at least {MIN_TOKEN_LENGTH} printable "
                                          f"characters without spaces", TOKEN_HINT)
        return None, None
    return token, source


def _read_required_clusters(admin: Section, clusters: Mapping[str, Cluster]) -> tuple[str, ...]:
    names: list[str] = []
    for index, raw in enumerate(admin.list("required_clusters", REQUIRED_HINT)):
        keypath = item(admin.path("required_clusters"), index)
        name = parse_or_record(admin.errors, keypath, parse_name, raw, None)
        if name is None:
            continue
        if name not in clusters:
            admin.errors.add(keypath, f"unknown cluster {name!r}", suggestion(name, clusters, "defined clusters"))
        elif name not in names:
            names.append(name)
    return tuple(names)


def apply_admin_env(config: Config, env: Mapping[str, str], errors: ErrorList) -> Config:
    """FASTGW_ADMIN=host:port moves the admin listener, FASTGW_ADMIN=off turns
    it off (e.g. several gateways on one host, or benchmarks)."""
    value = env.get("FASTGW_ADMIN", "").strip()
    if not value:
        return config
    if value.lower() in ("off", "false", "0"):
        return replace(config, admin=replace(config.admin, enabled=False))
    host, port = parse_or_record(errors, "env FASTGW_ADMIN", parse_address, value, ("", 0))
    if not port:
        return config
    if config.admin.token is None and not is_loopback(host):
        errors.add("env FASTGW_ADMIN", f"{format_address(host, port)} is reachable beyond this host and no token "
                   "is set", "set admin.token_file, admin.token_env or admin.token, or listen on 127.0.0.1")
    return replace(config, admin=replace(config.admin, enabled=True, host=host, port=port))
