"""Readers for `ip_filter` (top level and route), `cors` (route),
`security_headers` (top level and route) and `forward_auth` (route). Model: fastgw/config/auth_model.py."""
from __future__ import annotations

import re
from functools import partial

from fastgw.config.auth_section import parse_http_url
from fastgw.config.auth_model import SECURITY_HEADER_PRESET, Cors, ForwardAuth, IpFilter, SecurityHeaders
from fastgw.config.errors import Invalid, item
from fastgw.config.reader import Section, parse_or_record
from fastgw.config.schema import (
    check_settable, describe, parse_bool, parse_duration, parse_header_name, parse_header_value, parse_int,
    parse_method, parse_trusted_proxy, suggestion,
)

IP_FILTER_KEYS = ("allow", "deny")
CORS_KEYS = ("origins", "methods", "headers", "expose_headers", "credentials", "max_age")
SECURITY_KEYS = ("preset", "hsts", "content_type_options", "frame_options", "referrer_policy", "csp")
PRESETS = ("default", "none")
_SECURITY_NAMES = {
    "hsts": b"strict-transport-security",
    "content_type_options": b"x-content-type-options",
    "frame_options": b"x-frame-options",
    "referrer_policy": b"referrer-policy",
    "csp": b"content-security-policy",
}
ORIGIN_HINT = "write origins like https://app.example.com, https://*.example.com, or \"*\" for any"
_ORIGIN_RE = re.compile(r"https?://(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?")


def read_ip_filter(parent: Section) -> IpFilter | None:
    if not parent.has("ip_filter"):
        return None
    section = parent.section("ip_filter", IP_FILTER_KEYS,
                             hint="e.g. ip_filter: {allow: [10.0.0.0/8, fd00::/8], deny: [10.1.2.3]}")
    allow = _networks(section, "allow")
    deny = _networks(section, "deny")
    if not allow and not deny:
        section.errors.add(section.keypath, "lists no network", "add allow: [...] or deny: [...], or remove it")
    return IpFilter(allow=allow, deny=deny)


def _networks(section: Section, key: str) -> tuple:
    out = []
    for index, raw in enumerate(section.list(key, "write a list of addresses or networks, e.g. [10.0.0.0/8]")):
        network = parse_or_record(section.errors, item(section.path(key), index), parse_trusted_proxy, raw, None)
        if network is not None:
            out.append(network)
    return tuple(out)


def read_cors(parent: Section) -> Cors | None:
    if not parent.has("cors"):
        return None
    section = parent.section("cors", CORS_KEYS, hint="e.g. cors: {origins: [https://app.example.com]}")
    origins = section.require("origins", _parse_origins, (), ORIGIN_HINT)
    methods = section.parse("methods", _parse_methods, ("GET", "HEAD", "POST"))
    headers = section.parse("headers", _parse_header_names, ())
    expose = section.parse("expose_headers", _parse_header_names, ())
    credentials = section.parse("credentials", _parse_credentials, False)
    max_age = section.parse("max_age", _parse_max_age, None)
    if credentials and "*" in origins:
        section.errors.add(section.path("origins"), "\"*\" cannot be combined with credentials: true",
                           "browsers refuse credentials for any origin; list the origins")
    return Cors(origins=origins, methods=methods, headers=headers, expose_headers=expose,
                credentials=credentials, max_age=max_age)


def _parse_origins(value: object) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise Invalid(f"expected a list of origins, got {describe(value)}", ORIGIN_HINT)
    out = []
    for origin in values:
        if origin != "*" and not (isinstance(origin, str) and _ORIGIN_RE.fullmatch(origin)):
            raise Invalid(f"{origin!r} is not an origin (scheme://host[:port], no path)", ORIGIN_HINT)
        out.append(origin)
    return tuple(out)


def _parse_methods(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise Invalid(f"expected a list of methods, got {describe(value)}", "e.g. methods: [GET, POST]")
    return tuple(dict.fromkeys(parse_method(v) for v in value))


def _parse_header_names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid(f"expected a list of header names, got {describe(value)}", "e.g. [Content-Type, X-Trace]")
    for name in value:
        parse_header_name(name)  # validates; the name is kept as written (browsers read it case-blind)
    return tuple(dict.fromkeys(value))


_parse_credentials = partial(parse_bool, hint="e.g. credentials: true")


def _parse_max_age(value: object) -> int:
    return parse_int(value, minimum=0, example=600, maximum=86400)


def read_security_headers(parent: Section, *, on_route: bool) -> SecurityHeaders | None:
    """`security_headers: default` (the preset), a mapping (preset, then
    per-header values; an empty string drops one), or `off` on a route."""
    raw = parent.get("security_headers")
    if raw is None:
        return None
    if raw is False:
        if not on_route:
            parent.errors.add(parent.path("security_headers"), "`off` only applies to a route",
                              "remove the top-level key to send none")
        return SecurityHeaders(())
    if isinstance(raw, str):
        raw = {"preset": raw}
    section = Section(raw, parent.path("security_headers"), parent.errors, SECURITY_KEYS,
                      hint="write security_headers: default, or {preset: default, csp: \"...\"}")
    preset = section.parse("preset", _parse_preset, "default")
    headers = dict(SECURITY_HEADER_PRESET) if preset == "default" else {}
    for key, name in _SECURITY_NAMES.items():
        if section.has(key):
            value = section.get(key)
            if value == "":
                headers.pop(name, None)
                continue
            parsed = parse_or_record(section.errors, section.path(key), parse_header_value, value, None)
            if parsed is not None:
                headers[name] = parsed
    return SecurityHeaders(tuple(headers.items()))


def _parse_preset(value: object) -> str:
    if value not in PRESETS:
        raise Invalid(f"unknown preset {value!r}", suggestion(value, PRESETS, "choose one of"))
    return value


FORWARD_KEYS = ("url", "headers", "copy_headers", "timeout", "failure_mode", "cache")
FAILURE_MODES = ("closed", "open")


def read_forward_auth(parent: Section) -> ForwardAuth | None:
    if not parent.has("forward_auth"):
        return None
    section = parent.section("forward_auth", FORWARD_KEYS,
                             hint="e.g. forward_auth: {url: http://127.0.0.1:9100/check, copy_headers: [X-User]}")
    url = section.require("url", parse_http_url, "", "write url: http://host:port/path of the auth service")
    headers = section.parse("headers", _parse_lower_names, (b"authorization", b"cookie"))
    copy = section.parse("copy_headers", _parse_settable_names, ())
    timeout = section.parse("timeout", parse_duration, 1.0)
    mode = section.parse("failure_mode", _parse_failure_mode, "closed")
    cache = section.parse("cache", partial_duration_zero, 0.0)
    return ForwardAuth(url=url, headers=headers, copy_headers=copy, timeout=timeout, failure_mode=mode, cache=cache)


def partial_duration_zero(value: object) -> float:
    return parse_duration(value, allow_zero=True)


def _parse_lower_names(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise Invalid(f"expected a list of header names, got {describe(value)}", "e.g. [Authorization, Cookie]")
    return tuple(dict.fromkeys(parse_header_name(v) for v in value))


def _parse_settable_names(value: object) -> tuple[bytes, ...]:
    names = _parse_lower_names(value)
    for name in names:
        check_settable(name)
    return names


def _parse_failure_mode(value: object) -> str:
    if value not in FAILURE_MODES:
        raise Invalid(f"unknown failure_mode {value!r}", suggestion(value, FAILURE_MODES, "choose one of"))
    return value
