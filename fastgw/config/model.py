"""The validated configuration: plain frozen dataclasses, no behaviour.

`fastgw.config.load` turns a YAML file into a `Config`; the server, the CLI and
the tests read only these types. Durations are float seconds, sizes are ints
in bytes, header names are lower-case `bytes`, header values `bytes`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from fastgw.config.auth_model import Auth, Cors, ForwardAuth, IpFilter, SecurityHeaders
from fastgw.config.health_model import DnsDiscovery, EndpointsFile, HealthCheck, OutlierDetection

# Safe defaults, in one place so the README's reference can quote them.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_HEADER_COUNT = 100
DEFAULT_MAX_URI_BYTES = 8 * 1024
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_RESPONSE_HEADER_TIMEOUT = 60.0
DEFAULT_UPSTREAM_IDLE_TIMEOUT = 300.0    # no byte either way for this long mid-exchange
DEFAULT_WEBSOCKET_IDLE_TIMEOUT = 3600.0  # a tunnel is long-lived by nature: one hour

DEFAULT_POOL_MAX_IDLE = 1024  # churn (a dial + a TIME_WAIT per request) costs more than idle sockets
DEFAULT_POOL_IDLE_TIMEOUT = 60.0

# Circuit breaker (off unless a cluster has `circuit_breaker:`).
DEFAULT_CB_FAILURES = 5
DEFAULT_CB_WINDOW = 20
DEFAULT_CB_MIN_REQUESTS = 10
DEFAULT_CB_OPEN_FOR = 10.0
DEFAULT_CB_HALF_OPEN_PROBES = 1

# Retries (on by default for idempotent methods, like nginx's proxy_next_upstream).
DEFAULT_RETRY_ATTEMPTS = 2
DEFAULT_RETRY_ON = ("connect_failure", "reset", "502", "503", "504")
DEFAULT_RETRY_BACKOFF_BASE = 0.025
DEFAULT_RETRY_BACKOFF_MAX = 0.25
DEFAULT_RETRY_BUDGET_RATIO = 0.2
DEFAULT_RETRY_BUDGET_MIN = 3

# Concurrency limits (off unless a route or cluster has `concurrency:`): no
# queue unless asked for (a full limit answers 503 at once, as Envoy's and
# nginx's do); a queued request waits at most this long.
DEFAULT_CONCURRENCY_MAX_QUEUE = 0
DEFAULT_CONCURRENCY_QUEUE_TIMEOUT = 10.0

DEFAULT_CLIENT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
DEFAULT_DRAIN_TIMEOUT = 30.0
# SIGTERM -> listeners close: long enough for a load balancer or Kubernetes to
# see /readyz fail or the endpoint removed (the usual preStop sleep is 5 s),
# short enough that drain_delay + drain fits Kubernetes' 30 s grace period.
DEFAULT_DRAIN_DELAY = 5.0
# A reload's old workers finish open streams (WebSocket, SSE) for this long.
DEFAULT_RELOAD_DRAIN = 300.0

# Entries in the shared rate-limit table (fastgw/_native/ratelimit.pyx): 40 bytes
# each, so 65,536 cost 2.5 MiB of shared memory for the whole host. A key's state
# is forgotten (full allowance again) only when more keys are live at once than
# fit in its 8-entry bucket; size it above the keys active within one refill.
DEFAULT_RATE_LIMIT_SLOTS = 65536

# Redis for `scope: redis` rate limits (fastgw/config/redis_section.py).
DEFAULT_REDIS_TIMEOUT = 0.05          # per command: a request waits at most this for its limit
DEFAULT_REDIS_CONNECT_TIMEOUT = 1.0
DEFAULT_REDIS_LOG_INTERVAL = 10.0

# The admin listener: loopback only unless a token protects it (Envoy's port).
DEFAULT_ADMIN_HOST = "127.0.0.1"
DEFAULT_ADMIN_PORT = 9901


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    max_uri_bytes: int = DEFAULT_MAX_URI_BYTES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


@dataclass(frozen=True, slots=True)
class ServerSettings:
    workers: int = 0  # 0: one per core
    limits: Limits = field(default_factory=Limits)
    client_header_timeout: float = DEFAULT_CLIENT_HEADER_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    drain_delay: float = DEFAULT_DRAIN_DELAY      # SIGTERM: keep accepting this long (readyz says 503)
    reload_drain: float = DEFAULT_RELOAD_DRAIN    # reload: deadline for the old workers' streams
    # X-Forwarded-For is believed only from these peers (ipaddress networks).
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    rate_limit_slots: int = DEFAULT_RATE_LIMIT_SLOTS


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    weight: int = 1

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    connect: float = DEFAULT_CONNECT_TIMEOUT
    response_header: float = DEFAULT_RESPONSE_HEADER_TIMEOUT
    idle: float = DEFAULT_UPSTREAM_IDLE_TIMEOUT
    websocket_idle: float = DEFAULT_WEBSOCKET_IDLE_TIMEOUT


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """When to stop sending a cluster requests (fastgw/policy/circuit.py).

    One trip model per breaker: `failure_ratio` None means `failures`
    consecutive failures open the circuit; otherwise the share of failures
    among the last `window` outcomes does, once at least `min_requests` are
    in the window. The circuit stays open `open_for` seconds, then lets
    `half_open_probes` requests through: all succeed -> closed, one fails ->
    open again. State is per worker process.
    """
    failures: int = DEFAULT_CB_FAILURES
    failure_ratio: float | None = None
    window: int = DEFAULT_CB_WINDOW
    min_requests: int = DEFAULT_CB_MIN_REQUESTS
    open_for: float = DEFAULT_CB_OPEN_FOR
    half_open_probes: int = DEFAULT_CB_HALF_OPEN_PROBES


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Retries in flight on a cluster may not exceed `ratio` of its requests in
    flight, or `min_concurrent` when that is larger (Envoy's retry budget), so
    a failing upstream gets at most ~ratio more load, not a retry storm."""
    ratio: float = DEFAULT_RETRY_BUDGET_RATIO
    min_concurrent: int = DEFAULT_RETRY_BUDGET_MIN


@dataclass(frozen=True, slots=True)
class Concurrency:
    """Requests in flight at once for a route or a cluster, host-wide
    (fastgw/_native/concurrency.pyx); beyond that up to `max_queue` wait
    (FIFO) at most `queue_timeout` seconds, the rest get 503."""
    max_in_flight: int
    max_queue: int = DEFAULT_CONCURRENCY_MAX_QUEUE
    queue_timeout: float = DEFAULT_CONCURRENCY_QUEUE_TIMEOUT


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    endpoints: tuple[Endpoint, ...]
    lb: str = "round_robin"  # or "least_request", "p2c", "ring_hash"
    hash_on: str | None = None  # ring_hash only: "header:<lower-case name>", "cookie:<name>" or "client_ip"
    pool_max_idle: int = DEFAULT_POOL_MAX_IDLE
    pool_idle_timeout: float = DEFAULT_POOL_IDLE_TIMEOUT
    timeouts: UpstreamTimeouts = field(default_factory=UpstreamTimeouts)
    circuit_breaker: CircuitBreaker | None = None  # None: no breaker
    retry_budget: RetryBudget = field(default_factory=RetryBudget)
    # Health and discovery (config/health_model.py, upstream/health.py, outlier.py, discovery.py).
    health_check: HealthCheck | None = None
    outlier_detection: OutlierDetection | None = None
    panic_threshold: float = 0.0  # percent; 0: no panic mode (no healthy endpoint -> 503)
    dns: DnsDiscovery | None = None              # endpoints from DNS (then `endpoints` is empty at load)
    endpoints_file: EndpointsFile | None = None  # endpoints from a watched file (read once at load too)
    concurrency: Concurrency | None = None  # None: no limit on requests in flight


@dataclass(frozen=True, slots=True)
class HeaderOps:
    """add appends (keeps existing), set replaces, remove deletes; names lower-case."""
    add: tuple[tuple[bytes, bytes], ...] = ()
    set: tuple[tuple[bytes, bytes], ...] = ()
    remove: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteMatch:
    host: str | None = None       # "api.example.com" or "*.example.com"; None: any host
    path: str | None = None       # exact, or a template when it holds {param} segments
    prefix: str | None = None     # segment-aware prefix ("/api" matches /api and /api/x)
    methods: tuple[str, ...] | None = None  # None: any method

    @property
    def kind(self) -> str:
        if self.prefix is not None:
            return "prefix"
        assert self.path is not None
        return "template" if "{" in self.path else "exact"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One limit on a route. `requests` per `per` seconds as written (`100/s`:
    100 per 1.0; `1000/h`: 1000 per 3600.0).

    token_bucket: refills at requests/per a second and holds `burst`.
    sliding_window: at most `requests` (a whole number) in any window of `per`
    seconds, by the sliding-window-counter estimate; `burst` is unused.
    """
    key: tuple[str, ...]          # parts: "client_ip", "route", "header:<lower-case name>"
    requests: float
    per: float                    # seconds: 1, 60 or 3600
    burst: int
    algorithm: str = "token_bucket"   # or "sliding_window"
    scope: str = "local"          # or "redis": held across gateways sharing the config's `redis`

    @property
    def rate_per_second(self) -> float:
        return self.requests / self.per

    @property
    def key_text(self) -> str:
        return "+".join(self.key)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a route tries another upstream attempt (fastgw/policy/retry.py).

    `attempts` is the number of retries after the first try (0: off). `retry_on` holds
    "connect_failure", "reset", "timeout" and status codes as strings. Methods
    other than GET, HEAD, OPTIONS, PUT, DELETE and TRACE are retried only on
    connect_failure: the request provably never reached the upstream.
    """
    attempts: int = DEFAULT_RETRY_ATTEMPTS
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON  # not `on`: YAML 1.1 reads that key as true
    per_try_timeout: float | None = None   # None: the route's response_header timeout
    backoff_base: float = DEFAULT_RETRY_BACKOFF_BASE
    backoff_max: float = DEFAULT_RETRY_BACKOFF_MAX
    max_retry_after: float = 1.0           # an upstream Retry-After longer than this: no retry

    @property
    def statuses(self) -> frozenset[int]:
        return frozenset(int(cond) for cond in self.retry_on if cond.isascii() and cond.isdigit())


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    index: int                    # position in the file: the declaration-order tiebreak
    match: RouteMatch
    cluster: str
    strip_prefix: str | None = None
    rewrite_path: str | None = None  # may use the template's {params}
    request_headers: HeaderOps = field(default_factory=HeaderOps)
    response_headers: HeaderOps = field(default_factory=HeaderOps)
    timeouts: UpstreamTimeouts | None = None  # None: the cluster's
    rate_limits: tuple[RateLimit, ...] = ()   # all must allow a request
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: Concurrency | None = None    # None: no limit on requests in flight
    plugins: tuple[PluginSpec, ...] = ()      # the route's own, after the global ones
    # Edge security (config/auth_model.py). auth and security_headers are the
    # route's own or, when it has none, the top-level default (resolved at load).
    auth: Auth | None = None                  # None or Auth(): no authentication
    ip_filter: IpFilter | None = None         # the route's list; the top-level one applies too
    cors: Cors | None = None
    security_headers: SecurityHeaders | None = None
    forward_auth: ForwardAuth | None = None


@dataclass(frozen=True, slots=True)
class PluginSpec:
    """One `plugins:` entry (fastgw/config/plugin_section.py): the class is
    imported and its config checked at load; workers instantiate it."""
    use: str                      # "package.module:Class"
    name: str                     # for logs: `name:`, else the class name
    config: dict = field(default_factory=dict, compare=False)
    budget: float = 0.05          # seconds; a slower hook call is logged
    timeout: float = 10.0         # seconds an async hook may run before the request fails
    factory: object = field(default=None, compare=False, repr=False,  # the class (not in GET /config)
                            metadata={"view": False})


@dataclass(frozen=True, slots=True)
class RedisTls:
    """TLS to Redis (`rediss://`, `redis.tls`). Paths are absolute (resolved
    against the config file's directory). `insecure_skip_verify` turns off
    certificate and host name checks; it is logged as a warning."""
    ca_file: str | None = None          # else the system trust store
    cert_file: str | None = None        # a client certificate (with key_file)
    key_file: str | None = None
    server_name: str | None = None      # SNI and the name checked; else the URL's host
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class Redis:
    """The Redis server `scope: redis` rate limits share (fastgw/redis/).

    Either TCP (`host`, `port`, optionally with `tls`) or a unix socket
    (`unix_path`). The password is kept out of repr() and out of `address`,
    which is what logs show; GET /config shows it as <redacted>.
    failure_mode "open": a request whose limit Redis cannot answer in
    `timeout` proceeds unlimited; "closed": it gets 503 rate_limit_unavailable.
    """
    host: str = "127.0.0.1"
    port: int = 6379
    unix_path: str | None = None
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    # Where the password came from, for log lines: "redis.url",
    # "redis.password", "env NAME" or "file PATH"; None without a password.
    password_source: str | None = None
    tls: RedisTls | None = None         # None: plain TCP (or a unix socket)
    timeout: float = DEFAULT_REDIS_TIMEOUT
    connect_timeout: float = DEFAULT_REDIS_CONNECT_TIMEOUT
    failure_mode: str = "open"
    log_interval: float = DEFAULT_REDIS_LOG_INTERVAL

    @property
    def address(self) -> str:
        """Where the server is, without credentials: HOST:PORT or unix:PATH."""
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = True          # shared-memory counters; /metrics renders them


@dataclass(frozen=True, slots=True)
class AccessLog:
    """One JSON line per request (fastgw/observe/access_log.py)."""
    enabled: bool = False
    path: str | None = None       # None: stdout
    sampling: float = 1.0         # share of requests logged, 0..1
    flush_interval: float = 1.0
    headers: tuple[bytes, ...] = ()          # request headers to log (lower-case)
    redact_headers: tuple[bytes, ...] = (b"authorization", b"proxy-authorization", b"cookie", b"x-api-key")
    redact_query: tuple[str, ...] = ("token", "access_token", "api_key", "apikey", "password", "secret")


@dataclass(frozen=True, slots=True)
class SpanExport:
    """OpenTelemetry span export over OTLP/HTTP (fastgw/observe/otel.py)."""
    endpoint: str                 # e.g. http://127.0.0.1:4318/v1/traces
    service_name: str = "fastgw"
    flush_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class Tracing:
    propagate: bool = True        # W3C traceparent: continue it (gateway span) or start one
    export: SpanExport | None = None  # None: no spans exported


@dataclass(frozen=True, slots=True)
class Observe:
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    access_log: AccessLog = field(default_factory=AccessLog)
    tracing: Tracing = field(default_factory=Tracing)


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin listener (fastgw/admin/). `token` is the secret itself, read
    from the file, the environment or the config; `token_source` says where
    from, for /config and logs, which never show the token."""
    enabled: bool = True
    host: str = DEFAULT_ADMIN_HOST
    port: int = DEFAULT_ADMIN_PORT
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None
    required_clusters: tuple[str, ...] = ()   # /readyz needs a healthy endpoint in each
    audit_log: str | None = None              # config changes through the API, appended as JSON lines
    allow_anonymous_changes: bool = False     # PUT/PATCH /config without a token (loopback only)


@dataclass(frozen=True, slots=True)
class Config:
    source: str                   # the file it came from ("<command line>" for --upstream)
    listeners: tuple[Listener, ...]
    server: ServerSettings
    clusters: dict[str, Cluster]
    routes: tuple[Route, ...]
    redis: Redis | None = None    # None: no `redis:` section (no redis-scoped limits allowed)
    observe: Observe = field(default_factory=Observe)  # metrics, access_log, tracing
    admin: AdminSettings = field(default_factory=AdminSettings)
    plugins: tuple[PluginSpec, ...] = ()      # top-level: on every route, before its own
    auth: Auth | None = None                  # top-level default (already applied to routes)
    ip_filter: IpFilter | None = None         # checked on every route, before the route's own
    security_headers: SecurityHeaders | None = None  # top-level default (already applied to routes)
    # The declarative document it was built from (parsed YAML/JSON, before
    # environment overrides): what PUT /config merges into and diffs against.
    # None for `fastgw run --upstream`.
    document: object = field(default=None, repr=False, compare=False, metadata={"view": False})

    def route_timeouts(self, route: Route) -> UpstreamTimeouts:
        return route.timeouts or self.clusters[route.cluster].timeouts
