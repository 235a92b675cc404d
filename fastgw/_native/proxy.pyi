"""The per-request state machine of a worker (fastgw/_native/proxy.pyx), as
Python sees it: typed fields (cdef public) and the protocol callbacks.
The module is proxy.pyx with its include files proxy_upstream.pxi,
proxy_exchange.pxi, proxy_admission.pxi and proxy_client.pxi."""
import asyncio
from collections.abc import Callable
from typing import Any, Final

from fastgw._native.deadlines import Deadlines, Timed
from fastgw._native.errors import ProxyError, answer_reply as answer_reply
from fastgw._native.headers import HeaderRewrite, MessageInfo, RequestIds
from fastgw._native.metrics import WorkerMetrics

# Lingering close after an error reply that ends the connection, in seconds.
LINGER_SECONDS: Final[float]
# An admission stage's answer: it keeps the exchange and calls admission_done later.
WAIT: Final[object]

class StopParsing(Exception): ...

class RequestRejected(Exception):
    status: int
    code: str
    message: str
    def __init__(self, status: int, code: str, message: str) -> None: ...

class GatewayCore:
    loop: asyncio.AbstractEventLoop
    route_match: Callable[[bytes | None, bytes, bytes], Any]
    allowed_methods: Callable[[bytes | None, bytes], list[bytes]]
    plans: list[RoutePlan | None]
    request_ids: RequestIds
    deadlines: Deadlines
    connections: set[ClientConnection]
    draining: bool
    max_body_bytes: int
    max_head_bytes: int
    max_uri_bytes: int
    max_header_bytes: int
    max_header_count: int
    client_header_timeout: float
    keepalive_timeout: float
    metrics: WorkerMetrics | None
    access_log: Any

class RoutePlan:
    route: Any
    cluster: Any                  # ClusterRuntime: .pick(exchange) -> EndpointPool
    request_rewrite: HeaderRewrite
    response_rewrite: HeaderRewrite
    idle_timeout: float
    websocket_idle_timeout: float
    rewrite: Callable[..., bytes] | None
    default_host: bytes | None
    stages: tuple[Any, ...] | None          # phase order: LocalLimit, PluginHook, or .admit(exchange)
    response_hooks: tuple[Callable[..., Any], ...] | None  # hook(exchange, status, headers)
    log_hooks: tuple[Callable[..., Any], ...] | None       # hook(exchange)
    retry: Any                    # None, or a RetryRule (fastgw/policy/retry.py)
    try_timeout: float
    connect_timeout: float
    index: int
    head_flags: int               # FORWARDED | REQUEST_ID | TRACE (fastgw._native.headers)

class LocalLimit:
    limiter: Any                  # RouteLimiter: .check(peer_ip, headers) -> Decision
    def __init__(self, limiter: Any) -> None: ...

class Answer:
    status: int
    header_lines: bytes
    body: bytes
    def __init__(self, status: int, header_lines: bytes = ..., body: bytes = ...) -> None: ...

class ExchangeView:
    @property
    def _ex(self) -> Exchange: ...
    _headers: Any
    def _bind(self, exchange: Exchange) -> None: ...

class PluginHook:
    hook: Callable[[Any], Any]
    make_request: type
    on_result: Callable[..., Any]
    on_error: Callable[[BaseException], ProxyError]
    on_slow: Callable[[int], None]
    budget_ns: int
    phase: Any
    label: str

class EndpointPool:
    loop: asyncio.AbstractEventLoop
    endpoint: Any
    idle: list[UpstreamConnection]
    max_idle: int
    idle_timeout: float
    active: int
    created: int
    open: int
    metrics_index: int
    def __init__(self, loop: asyncio.AbstractEventLoop, endpoint: Any, cluster: Any) -> None: ...
    def sweep(self, now: float) -> None: ...
    def close_idle(self) -> None: ...

class UpstreamConnection:
    pool: EndpointPool
    transport: Any
    exchange: Exchange | None
    reused: bool
    tunnel: Any
    raw_remaining: int
    def __init__(self, pool: EndpointPool) -> None: ...
    def connection_made(self, transport: Any) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def on_message_begin(self) -> None: ...
    def on_status(self, reason: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...

class Exchange(Timed):
    client: ClientConnection
    plan: RoutePlan | None
    method: bytes
    info: MessageInfo
    request_id: bytes
    keep_alive: bool
    early_tunnel_data: list[bytes]
    upstream: UpstreamConnection | None
    request_done: bool
    response_done: bool
    response_started: bool
    finished: bool
    body_bytes: int
    upgraded: bool
    upstream_keep_alive: bool
    request_headers: list[tuple[bytes, bytes]]
    timed: bool
    status: int
    started_ns: int
    up_t0: int
    upstream_ns: int
    duration_ns: int
    bytes_out: int
    target: bytes
    retries: int
    rate_limit: int
    path: bytes
    query: bytes
    params: tuple[tuple[str, bytes], ...] | None
    log_fields: dict[str, Any] | None
    context: Any
    def __init__(self, client: ClientConnection, method: bytes, info: MessageInfo, request_id: bytes,
                 keep_alive: bool, http11: bool) -> None: ...
    def admission_done(self, verdict: ProxyError | None) -> None: ...
    def add_response_headers(self, lines: bytes) -> None: ...
    def on_finish(self, callback: Callable[[Exchange], object]) -> None: ...
    def upstream_connect_failed(self, error: ProxyError) -> None: ...
    @property
    def endpoint(self) -> str | None: ...

class ClientConnection(Timed):
    gateway: GatewayCore
    loop: asyncio.AbstractEventLoop
    transport: Any
    peer_ip: bytes
    write_paused: bool
    closed: bool
    last_activity: float
    tunnel: Any
    def __init__(self, gateway: GatewayCore) -> None: ...
    def connection_made(self, transport: Any) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def on_message_begin(self) -> None: ...
    def on_url(self, url: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...
    def flush(self) -> None: ...
    def close_if_idle(self) -> None: ...
