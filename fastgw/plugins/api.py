"""The objects a plugin's hooks receive: `Request` (every hook) and `Response`
(on_response_head). Both are views over the exchange: nothing is copied until
a hook asks, and edits go straight into the header lists the gateway
serialises (fastgw/_native/headers.pyx), after the checks below.

Headers a plugin may not set or remove: the ones that frame the message or
belong to one connection (Content-Length, Transfer-Encoding, Connection,
Keep-Alive, Upgrade, TE, Trailer, Proxy-Connection, Expect, Host). Changing
them would make the gateway's framing disagree with the headers it sends.
"""
from __future__ import annotations

import re

import orjson

from fastgw._native.proxy import Answer, ExchangeView

HOOKS = ("on_request_head", "on_access", "on_response_head", "on_log")

PROTECTED = frozenset((b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade",
                       b"te", b"trailer", b"proxy-connection", b"expect", b"host"))
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class PluginConfigError(ValueError):
    """Raised by a plugin's constructor for a bad `config:`; `key` is the
    offending key inside it (dotted for nested keys), or "" for the whole."""

    def __init__(self, key: str, problem: str, hint: str = "see the plugin's documentation") -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key, self.problem, self.hint = key, problem, hint


class Plugin:
    """Optional base class. A plugin is any class taking its `config` mapping
    in the constructor and defining at least one hook: on_request_head(request),
    on_access(request), on_response_head(request, response), on_log(request),
    each a plain or an `async def` method."""

    def __init__(self, config: dict) -> None:
        self.config = config


def _name_bytes(name: str) -> bytes:
    raw = name.encode("latin-1") if isinstance(name, str) else name
    if not _TOKEN.match(raw):
        raise ValueError(f"invalid header name {name!r}")
    if raw.lower() in PROTECTED:
        raise ValueError(f"plugins may not change {name!r}: it frames the message or belongs to one connection")
    return raw


def _value_bytes(value: str) -> bytes:
    raw = value.encode("latin-1") if isinstance(value, str) else bytes(value)
    if _BAD_VALUE.search(raw):
        raise ValueError(f"header value with a control character: {value!r}")
    return raw.strip(b" \t")


def _set(headers: list, name: str, value: str) -> None:
    raw, val = _name_bytes(name), _value_bytes(value)
    lower = raw.lower()
    headers[:] = [pair for pair in headers if pair[0].lower() != lower]
    headers.append((raw, val))


def _remove(headers: list, name: str) -> None:
    lower = _name_bytes(name).lower()
    headers[:] = [pair for pair in headers if pair[0].lower() != lower]


class Headers:
    """Read access to a header list; names are case-insensitive, values str
    (latin-1, as HTTP allows). Several fields of one name read as one value
    joined with ", " (RFC 9110 5.3)."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list) -> None:
        self._pairs = pairs

    def get_all(self, name: str) -> list[str]:
        lower = name.lower().encode("latin-1")
        return [v.decode("latin-1") for n, v in self._pairs if n.lower() == lower]

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.get_all(name)
        return ", ".join(values) if values else default

    def __contains__(self, name: str) -> bool:
        return bool(self.get_all(name))

    def items(self) -> list[tuple[str, str]]:
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self._pairs]


class Request(ExchangeView):
    """One request as a plugin sees it (every hook gets the same object).
    The exchange makes it natively on the first hook (`_ex` is the exchange);
    `Request(exchange)` makes one in Python."""

    __slots__ = ()

    def __init__(self, exchange) -> None:
        ExchangeView._bind(self, exchange)

    # Everything is read on demand: a hook that looks at one header pays for that.
    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self._ex.request_headers)
        return self._headers

    @property
    def route(self) -> str:
        """The matched route's name."""
        return self._ex.plan.route.name

    @property
    def params(self) -> dict[str, str]:
        """Path template parameters: {"id": "42"} for /users/{id}."""
        # ((name, value bytes), ...) in path order, from the route table.
        return {name: value.decode("latin-1") for name, value in self._ex.params or ()}

    @property
    def method(self) -> str:
        return self._ex.method.decode("latin-1")

    @property
    def path(self) -> str:
        return self._ex.path.decode("latin-1")

    @property
    def query(self) -> str:
        """The query string without its "?" ("" when none)."""
        return self._ex.query[1:].decode("latin-1")

    @property
    def client_ip(self) -> str:
        return self._ex.client.peer_ip.decode("latin-1")

    @property
    def request_id(self) -> str:
        return self._ex.request_id.decode("latin-1")

    def set_header(self, name: str, value: str) -> None:
        """Replace every `name` field of the upstream request with one."""
        _set(self._ex.request_headers, name, value)

    def remove_header(self, name: str) -> None:
        _remove(self._ex.request_headers, name)

    def log(self, field: str, value) -> None:
        """Add a field to this request's access-log line (JSON-serialisable)."""
        fields = self._ex.log_fields
        if fields is None:
            self._ex.log_fields = fields = {}
        fields[field] = value

    def respond(self, status: int, body: bytes | str | dict | list = b"",
                headers: dict[str, str] | None = None) -> Answer:
        """An answer instead of the upstream's; return it from on_request_head
        or on_access. A dict or list body is sent as JSON, a str as UTF-8 text."""
        if not 200 <= status <= 599:
            raise ValueError(f"a plugin answers with a final status (200-599), not {status}")
        lines = []
        content_type = None
        if isinstance(body, (dict, list)):
            body, content_type = orjson.dumps(body), b"application/json"
        elif isinstance(body, str):
            body, content_type = body.encode(), b"text/plain; charset=utf-8"
        for name, value in (headers or {}).items():
            raw = _name_bytes(name)
            if raw.lower() == b"content-type":
                content_type = None
            lines.append(raw + b": " + _value_bytes(value) + b"\r\n")
        if content_type is not None and body:
            lines.append(b"Content-Type: " + content_type + b"\r\n")
        return Answer(status, b"".join(lines), bytes(body))

    # What on_log reads: how the exchange ended.
    @property
    def status(self) -> int:
        """The status the client got (0 before the response head)."""
        return self._ex.status

    @property
    def duration_ms(self) -> float:
        return self._ex.duration_ns / 1e6


class Response:
    """The upstream's response head, before the gateway sends it on."""

    __slots__ = ("status", "headers", "_pairs")

    def __init__(self, status: int, pairs: list) -> None:
        self.status = status
        self._pairs = pairs
        self.headers = Headers(pairs)

    def set_header(self, name: str, value: str) -> None:
        _set(self._pairs, name, value)

    def remove_header(self, name: str) -> None:
        _remove(self._pairs, name)
