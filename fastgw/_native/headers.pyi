"""Request and response head programs (fastgw/_native/headers.pyx)."""
from typing import Any, Final

FRAMING_NONE: Final[int]
FRAMING_LENGTH: Final[int]
FRAMING_CHUNKED: Final[int]
FRAMING_CLOSE: Final[int]
# Gateway-written request headers, one bit per policy (RoutePlan.head_flags).
FORWARDED: Final[int]
REQUEST_ID: Final[int]
TRACE: Final[int]

class MessageInfo:
    error_status: int          # 0: fine; else the status to answer with
    error_code: str | None
    error_message: str | None
    host: bytes | None
    content_length: int        # -1: no Content-Length
    chunked: bool
    keep_alive: bool
    expect_continue: bool
    websocket: bool
    upgrade: bool
    request_id: bytes | None
    connection_tokens: frozenset[bytes] | None
    traceparent: bytes | None
    sent_traceparent: bytes | None
    event_stream: bool
    connection_seen: bool

class HeaderRewrite:
    def __init__(self, add: object = ..., set: object = ..., remove: object = ...) -> None: ...
    @property
    def drop(self) -> frozenset[bytes]: ...
    @property
    def set_pairs(self) -> tuple[tuple[bytes, bytes], ...]: ...
    @property
    def add_pairs(self) -> tuple[tuple[bytes, bytes], ...]: ...
    @property
    def appended(self) -> bytes: ...
    @property
    def lengths(self) -> frozenset[int]: ...
    @property
    def empty(self) -> bool: ...
    @property
    def owned_mask(self) -> int: ...

NO_REWRITE: Final[HeaderRewrite]

class RequestIds:
    counter: int
    def __init__(self) -> None: ...
    def next(self) -> bytes: ...

_Headers = list[tuple[bytes, bytes]]

def scan_request(headers: _Headers, http11: bool) -> MessageInfo: ...
def scan_response(headers: _Headers, http11: bool) -> MessageInfo: ...
def http_version(parser: Any, info: MessageInfo) -> int: ...
def build_request_head(method: bytes, target: bytes, headers: _Headers, info: MessageInfo,
                       rw: HeaderRewrite, client_ip: bytes, request_id: bytes, default_host: bytes | None,
                       flags: int = ...) -> bytes: ...
def build_response_head(status: int, reason: bytes | None, headers: _Headers, info: MessageInfo,
                        rw: HeaderRewrite, request_id: bytes | None, framing: int, keep_alive: bool,
                        http10_client: bool = ..., extra: bytes | None = ...) -> bytes: ...
def status_line(status: int, reason: bytes | None = ...) -> bytes: ...
def trace_id_of(traceparent: bytes | None) -> bytes | None: ...
def valid_traceparent(value: bytes) -> bool: ...
