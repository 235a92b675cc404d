"""Parsers for single config values.

Each parser takes the raw YAML value and returns the typed value, or raises
`Invalid(problem, hint)`. They know nothing about key paths or files: the
section readers in `sections.py` attach those. Keeping them pure makes them
reusable for env variables and command-line flags.
"""
from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Iterable
from urllib.parse import quote

from fastgw.config.errors import Invalid

# --- descriptions and suggestions ------------------------------------------


def describe(value: object) -> str:
    """How a YAML value reads back to the user ("a list", "the string 'x'")."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {shorten(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def shorten(value: object, limit: int = 60) -> str:
    """repr(value), cut to about `limit` characters: error lines stay one screen wide."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 4]}...{text[-1]}"


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")   # what password_env / secret_env may name


def config_dir(section) -> str:
    """The directory a section's relative paths are relative to (ErrorList.directory)."""
    return section.errors.directory


def existing_file(value: object, base: str, what: str) -> str:
    """A path to a file that exists, a relative one taken from `base` (config_dir)."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a file path, got {describe(value)}", f"write the path of {what}")
    path = os.path.join(base, value)   # an absolute value stays itself
    if not os.path.isfile(path):
        raise Invalid(f"{shorten(value)} does not exist (looked for {shorten(path)})",
                      "a relative path is relative to the config file's directory")
    return path


def is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() is true for '²' too, which int() refuses."""
    return text.isascii() and text.isdigit()


def suggestion(word: object, choices: Iterable[str], menu: str) -> str:
    """The hint for a misspelt name: a close match, or else the whole menu
    ("allowed keys: a, b")."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(word)[:100], choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"{menu}: {', '.join(choices) if choices else 'none'}"


# --- numbers, durations, sizes ---------------------------------------------

DURATION_HINT = "write seconds as a number, or a string like 500ms, 5s, 2m, 1h"
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?", re.IGNORECASE | re.ASCII)
# Longer is no timeout but a slip (an extra digit, ms meant): a year.
MAX_DURATION = 365 * 24 * 3600.0
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object, *, allow_zero: bool = False) -> float:
    """Seconds as a float, from `5`, `0.5`, `"500ms"`, `"5s"`, `"2m"` or `"1h"`."""
    if isinstance(value, bool):  # bool is an int subclass: `yes` must not mean 1s
        raise Invalid(f"expected a duration, got {describe(value)}", DURATION_HINT)
    if isinstance(value, (int, float)):
        # float() of an int beyond 1e308 raises OverflowError; any int that
        # large is out of range anyway.
        if isinstance(value, int) and abs(value) > MAX_DURATION:
            seconds = math.inf if value > 0 else -math.inf
        else:
            seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if not match:
            raise Invalid(f"{shorten(value)} is not a duration", DURATION_HINT)
        unit = (match.group(2) or "s").lower()
        seconds = float(match.group(1)) * _SECONDS_PER_UNIT[unit]
    else:
        raise Invalid(f"expected a duration, got {describe(value)}", DURATION_HINT)
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        floor = "0 or more" if allow_zero else "greater than 0"
        raise Invalid(f"duration must be {floor}, got {shorten(value)}", DURATION_HINT)
    if seconds > MAX_DURATION:
        raise Invalid(f"duration {shorten(value)} is longer than a year", f"{DURATION_HINT}; at most 365 days")
    return seconds


BOOL_HINT = "write true or false"


def parse_bool(value: object, *, hint: str = BOOL_HINT) -> bool:
    """A YAML boolean; `hint` names the key's use where "true or false" says too little."""
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {describe(value)}", hint)
    return value


RATIO_HINT = "write a share of requests between 0 and 1, e.g. 0.5 for half"


def parse_ratio(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"expected a number, got {describe(value)}", RATIO_HINT)
    if not 0 < value <= 1:
        raise Invalid(f"must be above 0 and at most 1, got {value}", RATIO_HINT)
    return float(value)


SIZE_HINT = "write bytes as a whole number, or a string like 16k, 10m or 10MiB; units are 1024-based"
_SIZE_RE = re.compile(r"(\d{1,30})\s*([kmg]?)(i?b)?", re.IGNORECASE | re.ASCII)
# More than any limit means; beyond it a C int64 on the native side overflows.
MAX_SIZE = 2**40
_BYTES_PER_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: object) -> int:
    """Bytes as an int, from `16384`, `"16k"`, `"10m"`, `"10MiB"`; units are binary."""
    if isinstance(value, bool):
        raise Invalid(f"expected a size, got {describe(value)}", SIZE_HINT)
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE_RE.fullmatch(value.strip())
        # "10ib" (a suffix with no unit letter) reads as a typo, not as bytes.
        if not match or (match.group(3) and match.group(3).lower() == "ib" and not match.group(2)):
            raise Invalid(f"{shorten(value)} is not a size", SIZE_HINT)
        size = int(match.group(1)) * _BYTES_PER_UNIT[match.group(2).lower()]
    else:
        raise Invalid(f"expected a size, got {describe(value)}", SIZE_HINT)
    if size <= 0:
        raise Invalid(f"size must be greater than 0, got {shorten(value)}", SIZE_HINT)
    if size > MAX_SIZE:
        raise Invalid(f"size {shorten(value)} is more than 1 TiB", f"{SIZE_HINT}; at most 1024g")
    return size


# Counts (weights, thresholds, queue lengths) are C ints on the native side.
MAX_COUNT = 2**31 - 1


def parse_int(value: object, *, minimum: int, example: int, maximum: int = MAX_COUNT) -> int:
    hint = f"write a whole number, {minimum} or more, e.g. {example}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected a whole number, got {describe(value)}", hint)
    if value < minimum:
        raise Invalid(f"must be {minimum} or more, got {value}", hint)
    if value > maximum:
        raise Invalid(f"must be at most {maximum}, got {shorten(value)}", hint)
    return value


WORKERS_HINT = "write a number of processes, e.g. 4, or 'auto' for one per CPU core"
# The master's worker table is sized at start; far more workers than cores only thrash.
MAX_WORKERS = 1024


def parse_workers(value: object) -> int:
    """`auto` (and 0) mean one worker per core, stored as 0."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return 0
        if not is_digits(text) or len(text) > 6:
            raise Invalid(f"expected a number or 'auto', got {shorten(value)}", WORKERS_HINT)
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected a number or 'auto', got {describe(value)}", WORKERS_HINT)
    if value < 0:
        raise Invalid(f"must be 0 or more, got {value}", WORKERS_HINT)
    if value > MAX_WORKERS:
        raise Invalid(f"must be at most {MAX_WORKERS}, got {shorten(value)}", WORKERS_HINT)
    return value


# --- hosts, ports, addresses, URLs -----------------------------------------

ADDRESS_HINT = "write host:port, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080"
# Hostnames as resolvers accept them; `_` is allowed because container
# service names (docker compose) commonly use it.
# ASCII: with IGNORECASE alone, 'ſ' (U+017F) would match 's' and the Kelvin sign 'k'.
_HOSTNAME_RE = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?",
                          re.IGNORECASE | re.ASCII)


def parse_port(text: str, hint: str) -> int:
    if not is_digits(text) or len(text) > 5:
        if is_digits(text):
            raise Invalid(f"port {shorten(text)} is out of range", "use a port between 1 and 65535")
        raise Invalid(f"port {shorten(text)} is not a number", hint)
    port = int(text)
    if not 1 <= port <= 65535:
        raise Invalid(f"port {port} is out of range", "use a port between 1 and 65535")
    return port


def split_host_port(text: str, hint: str, default_port: int | None = None) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host without brackets, port)."""
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            raise Invalid(f"{text!r} has an unclosed '['", hint)
        host, rest = text[1:close], text[close + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Invalid(f"{host!r} is not an IPv6 address", hint) from None
        if not rest and default_port is not None:
            return host, default_port
        if not rest.startswith(":"):
            raise Invalid(f"{text!r} has no port after the ']'", hint)
        return host, parse_port(rest[1:], hint)

    host, colon, port_text = text.rpartition(":")
    if not colon:
        if default_port is None:
            raise Invalid(f"{text!r} has no port", hint)
        host, port_text = text, str(default_port)
    if ":" in host:
        raise Invalid(f"{text!r}: an IPv6 address needs brackets", hint)
    if not host:
        raise Invalid(f"{text!r} has no host", hint)
    if not _HOSTNAME_RE.fullmatch(host):
        raise Invalid(f"{host!r} is not a valid host name or IP address", hint)
    return host.lower(), parse_port(port_text, hint)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(value: object) -> tuple[str, int]:
    """A listener address: `host:port` or `[::1]:port`; the port is required."""
    if not isinstance(value, str):
        raise Invalid(f"expected a 'host:port' string, got {describe(value)}", ADDRESS_HINT)
    return split_host_port(value.strip(), ADDRESS_HINT)


URL_HINT = "write http://host:port, e.g. http://127.0.0.1:9001"


def parse_endpoint_url(value: object) -> tuple[str, int]:
    """An upstream URL `http://host[:port]` -> (host, port); the port defaults to 80."""
    if not isinstance(value, str):
        raise Invalid(f"expected a URL string, got {describe(value)}", URL_HINT)
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise Invalid(f"{text!r} has no scheme", f"add http:// in front: http://{text}")
    if scheme.lower() == "https":
        raise Invalid("https upstreams are not supported yet",
                      "use http:// and terminate TLS to the upstream elsewhere")
    if scheme.lower() != "http":
        raise Invalid(f"scheme {scheme!r} is not supported", URL_HINT)
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        raise Invalid("credentials in an upstream URL are not supported",
                      "remove the user:password@ part; add an Authorization header with request_headers.set")
    if any(mark in rest for mark in "?#"):
        raise Invalid("an upstream URL cannot have a query or fragment", URL_HINT)
    if path:
        raise Invalid(f"an upstream URL cannot have a path ('/{path}')",
                      "remove it; change upstream paths with a route's strip_prefix or rewrite_path")
    if not authority:
        raise Invalid(f"{text!r} has no host", URL_HINT)
    return split_host_port(authority, URL_HINT, default_port=80)


# --- routes ----------------------------------------------------------------

# The native router's fixed capture array (fastgw/_native/router.pyx MAX_PARAMS);
# checked here so a config that passes `fastgw check` also starts.
MAX_TEMPLATE_PARAMS = 32
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAM_SEGMENT_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PARAM_ANYWHERE_RE = re.compile(r"\{([^{}]*)\}")
_FORBIDDEN_PATH_CHARS = re.compile(r"[\s?#\x00-\x1f\x7f]")


def _check_path_text(value: object, what: str, example: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a path string, got {describe(value)}", f"write it like {example}")
    if not value.startswith("/"):
        raise Invalid(f"{what} {value!r} does not start with '/'", f"write it like /{value.lstrip('/')}")
    bad = _FORBIDDEN_PATH_CHARS.search(value)
    if bad:
        raise Invalid(f"{what} {value!r} contains {bad.group()!r}",
                      "paths cannot hold spaces, control characters, '?' or '#'; queries are not matched")
    if not value.isascii():
        # The router compares raw request bytes, and clients percent-encode
        # non-ASCII: a literal `/café` would never match anything.
        raise Invalid(f"{what} {value!r} has non-ASCII characters",
                      f"write it percent-encoded as clients send it: {percent_encode_path(value)}")
    return value


# Characters a path keeps as they are: RFC 3986 pchar, `/`, an existing `%XX`
# escape, and the braces of {params}.
_PATH_SAFE = "/%{}:@!$&'()*+,;=-._~"


def percent_encode_path(path: str) -> str:
    """`/café` -> `/caf%C3%A9`, as a client puts it on the wire."""
    return quote(path, safe=_PATH_SAFE)


def parse_path(value: object, *, what: str, allow_params: bool) -> tuple[str, tuple[str, ...]]:
    """A route path, prefix or strip_prefix -> (path, template parameter names).

    A `{name}` parameter must be a whole segment: the router splits on `/`, and
    half-segment captures like `/v{version}` are ambiguous to match.
    """
    path = _check_path_text(value, what, "/users/{id}" if allow_params else "/api")
    params: list[str] = []
    for segment in path.split("/")[1:]:
        if segment in (".", ".."):
            raise Invalid(f"{what} {path!r} has a '{segment}' segment",
                          "request paths are normalised before matching, so it could never match; remove it")
        if "{" not in segment and "}" not in segment:
            continue
        if not allow_params:
            raise Invalid(f"{what} {path!r} contains a {{param}}",
                          "only `path` may hold {params}; prefixes match literally")
        params.append(_template_param(path, segment, params, what))
    if len(params) > MAX_TEMPLATE_PARAMS:
        raise Invalid(f"{what} {path!r} has {len(params)} parameters",
                      f"the router binds at most {MAX_TEMPLATE_PARAMS}; split the route or use a prefix")
    return path, tuple(params)


def _template_param(path: str, segment: str, seen: list[str], what: str) -> str:
    match = _PARAM_SEGMENT_RE.fullmatch(segment)
    if match:
        name = match.group(1)
        if name in seen:
            raise Invalid(f"parameter {{{name}}} appears twice in {path!r}",
                          "give each parameter its own name, e.g. /users/{id}/posts/{post_id}")
        return name
    inner = _PARAM_ANYWHERE_RE.fullmatch(segment)
    if inner:
        raise Invalid(f"{{{inner.group(1)}}} in {path!r} is not a valid parameter name",
                      "use letters, digits and _, not starting with a digit, e.g. {user_id}")
    raise Invalid(f"segment {segment!r} of {what} {path!r} mixes a {{param}} with other text",
                  "a {param} must be a whole segment between slashes, e.g. /users/{id}")


def parse_rewrite_path(value: object) -> tuple[str, tuple[str, ...]]:
    """A rewrite_path -> (path, the `{name}` placeholders it uses).

    Unlike a template, a rewrite may put a placeholder anywhere in a segment
    (`/v2/users/{id}.json`): it is only substituted, never matched.
    """
    path = _check_path_text(value, "rewrite_path", "/v2/users/{id}")
    names = []
    for match in _PARAM_ANYWHERE_RE.finditer(path):
        if not _IDENTIFIER_RE.fullmatch(match.group(1)):
            raise Invalid(f"{{{match.group(1)}}} in {path!r} is not a valid parameter name",
                          "use the {name} of a parameter from the route's path template")
        names.append(match.group(1))
    leftover = _PARAM_ANYWHERE_RE.sub("", path)
    if "{" in leftover or "}" in leftover:
        raise Invalid(f"{path!r} has an unmatched '{{' or '}}'", "write parameters as {name}")
    return path, tuple(names)


def pattern_key(path: str) -> str:
    """`/users/{id}` and `/users/{uid}` match the same requests: compare them as one."""
    return _PARAM_SEGMENT_RE.sub("{}", path)


# RFC 9110 section 5.6.2: token = 1*tchar
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
METHODS_HINT = "write a list of HTTP methods, e.g. [GET, POST]; omit methods to allow any"


# The methods a route may list: RFC 9110's (less CONNECT), PATCH (RFC 5789),
# WebDAV's (RFC 4918) and the WebDAV extensions in common use: REPORT
# (RFC 3253; CalDAV and CardDAV), MKCALENDAR (RFC 4791), SEARCH (RFC 5323).
# A closed list, because a misspelt method (GTE) is otherwise accepted and
# the route answers 405 to the method meant. Routes without `methods` take
# any method, extension methods (PURGE, ...) included.
KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
                 "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
                 "REPORT", "MKCALENDAR", "SEARCH")


def parse_method(value: object) -> str:
    if not isinstance(value, str) or not _TOKEN_RE.fullmatch(value):
        raise Invalid(f"{describe(value)} is not an HTTP method", METHODS_HINT)
    method = value.upper()
    if method == "CONNECT":
        raise Invalid("CONNECT is never routed",
                      "fastgw is a reverse proxy: a CONNECT request (a tunnel to host:port) is refused with 400 "
                      "before routing; remove it")
    if method not in KNOWN_METHODS:
        close = difflib.get_close_matches(method, KNOWN_METHODS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise Invalid(f"unknown method {shorten(value)}",
                      f"{hint}known methods: {', '.join(KNOWN_METHODS)}; "
                      "omit methods to let the route take any method, extension methods included")
    return method


ROUTE_HOST_HINT = "write an exact host like api.example.com, or *.example.com for its subdomains"


def parse_route_host(value: object) -> str:
    """An exact host or a `*.suffix` wildcard, lower-cased, without a port.

    A trailing dot is dropped, as the router does for request hosts, so that
    `example.com.` and `example.com` compare equal in the duplicate check.
    """
    if not isinstance(value, str):
        raise Invalid(f"expected a host name, got {describe(value)}", ROUTE_HOST_HINT)
    host = value.strip().lower()
    host = host[:-1] if host.endswith(".") else host
    if host == "*":
        raise Invalid("'*' as a host matches everything", "omit host to match any host")
    name = host[2:] if host.startswith("*.") else host
    if "*" in name:
        raise Invalid(f"{value!r}: only a leading '*.' wildcard is supported", ROUTE_HOST_HINT)
    if ":" in name:
        raise Invalid(f"{value!r} has a port", "route hosts are matched without the port; remove ':port'")
    if not _HOSTNAME_RE.fullmatch(name):
        raise Invalid(f"{value!r} is not a valid host name", ROUTE_HOST_HINT)
    return host


# --- headers ---------------------------------------------------------------

HEADER_NAME_HINT = "header names are letters, digits and !#$%&'*+-.^_`|~, e.g. X-Request-Id"

# Connection-level headers: the gateway writes these itself per hop, so a
# user-supplied value would corrupt framing or keep-alive handling.
GATEWAY_OWNED_HEADERS = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer",
    "upgrade", "proxy-connection", "content-length",
})


def parse_header_name(value: object) -> bytes:
    if not isinstance(value, str) or not _TOKEN_RE.fullmatch(value):
        raise Invalid(f"{describe(value)} is not a valid header name", HEADER_NAME_HINT)
    return value.lower().encode("ascii")


def check_settable(name: bytes) -> None:
    text = name.decode("ascii")
    if text == "content-length":
        raise Invalid("content-length cannot be set or added",
                      "the gateway derives Content-Length from the body it forwards")
    if text in GATEWAY_OWNED_HEADERS:
        raise Invalid(f"{text} is a hop-by-hop header and cannot be set or added",
                      "the gateway manages connection-level headers itself on each hop")


def check_removable(name: bytes) -> None:
    text = name.decode("ascii")
    if text in ("content-length", "transfer-encoding"):
        raise Invalid(f"{text} cannot be removed",
                      "it frames the body; without it the upstream would read the body as another request")
    if text == "host":
        raise Invalid("host cannot be removed",
                      "HTTP/1.1 requires Host; use set: {Host: NAME} to replace it")


_CONTROL_CHAR_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # all CTLs but HTAB
HEADER_VALUE_HINT = "header values are text on one line; quote values like 'yes', 'on' or '1.10'"


def parse_header_value(value: object) -> bytes:
    # Integers are unambiguous (`X-Api-Version: 2`); booleans and floats are not
    # (`yes` -> true, `1.10` -> 1.1), so those must be quoted.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise Invalid(f"expected a string value, got {describe(value)}", HEADER_VALUE_HINT)
    bad = _CONTROL_CHAR_RE.search(value)
    if bad:
        raise Invalid(f"header value contains the control character {bad.group()!r}",
                      "CR, LF, NUL and other control characters would allow header injection; remove them")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


LB_POLICIES = ("round_robin", "least_request", "p2c", "ring_hash")


def parse_lb(value: object) -> str:
    if not isinstance(value, str) or value not in LB_POLICIES:
        raise Invalid(f"unknown load-balancing policy {value!r}", suggestion(value, LB_POLICIES, "choose one of"))
    return value


HASH_ON_HINT = "say which request key picks the endpoint: header:NAME, cookie:NAME or client_ip, e.g. header:X-User"


def parse_hash_on(value: object) -> str:
    """`header:X-User` -> "header:x-user" (header names are case-insensitive);
    `cookie:session` keeps its case (cookie names are not); `client_ip`."""
    if not isinstance(value, str):
        raise Invalid(f"expected a request key, got {describe(value)}", HASH_ON_HINT)
    text = value.strip()
    if text == "client_ip":
        return text
    kind, colon, name = text.partition(":")
    kind = kind.strip().lower()
    name = name.strip()
    if not colon or kind not in ("header", "cookie"):
        close = difflib.get_close_matches(kind, ("header", "cookie") if colon else ("client_ip",), n=1, cutoff=0.6)
        hint = f"did you mean {close[0] + colon + name!r}?" if close else HASH_ON_HINT
        raise Invalid(f"unknown hash key {value!r}", hint)
    if not _TOKEN_RE.fullmatch(name):
        raise Invalid(f"{name!r} is not a valid {kind} name",
                      HEADER_NAME_HINT if kind == "header" else "cookie names are tokens, e.g. cookie:session")
    return f"header:{name.lower()}" if kind == "header" else f"cookie:{name}"


NAME_HINT = "use letters, digits, '.', '_' and '-', e.g. users-api"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_name(value: object) -> str:
    """Names of clusters, routes and listeners: they appear in logs and metrics."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise Invalid(f"{describe(value)} is not a valid name", NAME_HINT)
    return value


# --- rate limits -----------------------------------------------------------

RATE_HINT = "write requests per unit: N/s, N/m or N/h, e.g. 100/s or 0.5/s; sliding windows: 1000/h"
_RATE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*/\s*([a-z]+)", re.IGNORECASE | re.ASCII)
_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
               "h": 3600.0, "hour": 3600.0}
# Beyond this the token interval (1/16 ns ticks) would be too coarse to mean the rate.
MAX_RATE_PER_SECOND = 100_000_000


def parse_rate(value: object) -> tuple[float, float]:
    """`100/s` -> (100.0, 1.0); `0.5/s` -> (0.5, 1.0); `1000/h` -> (1000.0, 3600.0)."""
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise Invalid(f"expected a rate like '100/s', got {describe(value)}",
                          f"give it a unit: {value:g}/s, {value:g}/m or {value:g}/h")
        raise Invalid(f"expected a rate like '100/s', got {describe(value)}", RATE_HINT)
    match = _RATE_RE.fullmatch(value.strip())
    if not match:
        raise Invalid(f"{value!r} is not a rate", RATE_HINT)
    unit = match.group(2).lower()
    if unit not in _RATE_UNITS:
        raise Invalid(f"{value!r}: unknown unit {match.group(2)!r}", "the unit is s, m or h (per second, minute, hour)")
    requests, per = float(match.group(1)), _RATE_UNITS[unit]
    if requests <= 0:
        raise Invalid(f"rate must be greater than 0, got {value!r}", "to allow nothing, remove the route; "
                      "to limit nothing, remove the rate limit")
    if requests / per > MAX_RATE_PER_SECOND:
        raise Invalid(f"rate {value!r} is above {MAX_RATE_PER_SECOND:,}/s", "that is no limit; remove it")
    return requests, per


LIMIT_KEY_PARTS = ("client_ip", "route", "header:NAME", "consumer", "api_key")
LIMIT_KEY_HINT = ("write client_ip, route or header:NAME, or several joined with '+', "
                  "e.g. client_ip+header:X-Tenant; or consumer / api_key (the authenticated identity) alone")


def parse_limit_key(value: object) -> tuple[str, ...]:
    """`client_ip+header:X-Tenant` -> ("client_ip", "header:x-tenant")."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a key like 'client_ip', got {describe(value)}", LIMIT_KEY_HINT)
    parts: list[str] = []
    for raw in value.split("+"):
        text = raw.strip()
        if not text:
            raise Invalid(f"key {value!r} has an empty part", LIMIT_KEY_HINT)
        if text.lower().startswith("header:"):
            name = text[len("header:"):].strip()
            if not _TOKEN_RE.fullmatch(name):
                raise Invalid(f"key part {text!r} does not name a valid header", HEADER_NAME_HINT)
            part = "header:" + name.lower()
        elif text in ("client_ip", "route", "consumer", "api_key"):
            part = text
        else:
            raise Invalid(f"unknown key part {text!r}", suggestion(text, LIMIT_KEY_PARTS, "key parts"))
        if part in parts:
            raise Invalid(f"key {value!r} names {part!r} twice", "name each part once")
        parts.append(part)
    return tuple(parts)


RATE_LIMIT_ALGORITHMS = ("token_bucket", "sliding_window")


def parse_limit_algorithm(value: object) -> str:
    if not isinstance(value, str) or value not in RATE_LIMIT_ALGORITHMS:
        raise Invalid(f"unknown rate-limit algorithm {value!r}",
                      suggestion(value, RATE_LIMIT_ALGORITHMS, "choose one of"))
    return value


RATE_LIMIT_SCOPES = ("local", "redis")


def parse_limit_scope(value: object) -> str:
    if not isinstance(value, str) or value not in RATE_LIMIT_SCOPES:
        raise Invalid(f"unknown scope {value!r}", suggestion(value, RATE_LIMIT_SCOPES, "choose one of"))
    return value


TRUSTED_PROXY_HINT = "write an IP address or a network, e.g. 10.0.0.0/8, 127.0.0.1 or fd00::/8"


def parse_trusted_proxy(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise Invalid(f"expected an address or network, got {describe(value)}", TRUSTED_PROXY_HINT)
    text = value.strip()
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Invalid(f"{value!r} is not an IP address or network", TRUSTED_PROXY_HINT) from None
    raise Invalid(f"{value!r} has host bits set", f"did you mean {str(network)!r}?")


MAX_RATE_LIMIT_SLOTS = 1 << 24
RATE_LIMIT_SLOTS_HINT = (f"write a number of entries from 8 to {MAX_RATE_LIMIT_SLOTS}, e.g. 65536: "
                         "40 bytes each, one table shared by all workers")


def parse_rate_limit_slots(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected a whole number, got {describe(value)}", RATE_LIMIT_SLOTS_HINT)
    if not 8 <= value <= MAX_RATE_LIMIT_SLOTS:
        raise Invalid(f"must be between 8 and {MAX_RATE_LIMIT_SLOTS}, got {value}", RATE_LIMIT_SLOTS_HINT)
    return value
