"""The validated edge-security settings (issue 10): authentication (JWT,
API keys), required scopes, IP allow/deny lists, CORS and security response
headers. Plain frozen dataclasses, read by fastgw/config/auth_section.py and
edge_section.py, used by fastgw/policy/auth.py, ip_filter.py, cors.py and
security_headers.py.

Secrets (an HS secret, API key hashes) are kept out of repr() and out of
GET /config (`metadata={"view": False}`, see fastgw/admin/redact.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

# JWT defaults.
DEFAULT_LEEWAY = 30.0                 # seconds of clock skew allowed on exp/nbf/iat
DEFAULT_JWKS_REFRESH = 300.0          # a JWKS answer without a cache lifetime is kept this long
DEFAULT_JWKS_MIN_REFRESH = 10.0       # a cache lifetime shorter than this is raised to it
DEFAULT_JWKS_MAX_REFRESH = 86400.0    # ... and one longer than this lowered to it
DEFAULT_KID_REFETCH_INTERVAL = 10.0   # an unknown kid refetches at most this often
DEFAULT_JWKS_TIMEOUT = 5.0            # one fetch (connect + answer)
DEFAULT_TOKEN_CACHE = 10_000          # verified tokens kept per worker and route policy

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "EdDSA")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")

# The preset `security_headers: default` sends (lower-case names, values).
SECURITY_HEADER_PRESET = (
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)


@dataclass(frozen=True, slots=True)
class TokenSource:
    """Where the JWT is read from: `Authorization: Bearer` (kind "bearer"),
    or a header, cookie or query parameter of that name."""
    kind: str = "bearer"          # bearer | header | cookie | query
    name: str = "authorization"   # header names lower-case


@dataclass(frozen=True, slots=True)
class JwtAuth:
    jwks_url: str | None = None           # http(s)://host[:port]/path
    discovery_url: str | None = None      # OIDC discovery document; its jwks_uri is fetched
    keys_file: str | None = None          # a PEM public key or a JWKS document
    secret: bytes | None = field(default=None, repr=False, metadata={"view": False})  # HS*
    algorithms: tuple[str, ...] = ("RS256",)
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    leeway: float = DEFAULT_LEEWAY
    required_claims: tuple[str, ...] = ()                 # present, any value
    claim_values: tuple[tuple[str, str], ...] = ()        # present with this value
    token: TokenSource = field(default_factory=TokenSource)
    claims_to_headers: tuple[tuple[str, bytes], ...] = ()  # (claim, lower-case header name)
    roles_claim: str | None = None                        # a list (or space-separated) claim of roles
    jwks_refresh: float = DEFAULT_JWKS_REFRESH
    jwks_min_refresh: float = DEFAULT_JWKS_MIN_REFRESH
    jwks_max_refresh: float = DEFAULT_JWKS_MAX_REFRESH
    kid_refetch_interval: float = DEFAULT_KID_REFETCH_INTERVAL
    jwks_timeout: float = DEFAULT_JWKS_TIMEOUT
    cache_size: int = DEFAULT_TOKEN_CACHE

    @property
    def key_source(self) -> str | None:
        """The URL that names this key set in metrics and /health."""
        return self.jwks_url or self.discovery_url


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key of a keys file: only its SHA-256 is known to the gateway."""
    id: str
    consumer: str                 # who holds it; several keys may share one (rotation)
    sha256: bytes = field(repr=False, metadata={"view": False})  # 32 bytes
    scopes: tuple[str, ...] = ()
    expires: float | None = None  # Unix time; None: never
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class ApiKeyAuth:
    file: str                     # the keys file (read with the config, so a reload re-reads it)
    header: bytes = b"x-api-key"  # lower-case
    keys: tuple[ApiKey, ...] = field(default=(), repr=False, metadata={"view": False})


@dataclass(frozen=True, slots=True)
class Auth:
    """A route's (or the global default) authentication and authorization.
    With both jwt and api_keys, a request with the API key header is judged
    by its key, any other by its JWT."""
    jwt: JwtAuth | None = None
    api_keys: ApiKeyAuth | None = None
    scopes: tuple[str, ...] = ()  # required; from the scope/scp claim, roles_claim or the key's scopes
    scopes_mode: str = "all"      # all | any
    method_scopes: tuple[tuple[str, tuple[str, ...]], ...] = ()   # (METHOD, scopes): instead of `scopes` for it


@dataclass(frozen=True, slots=True)
class IpFilter:
    """deny first (a listed address is refused), then allow (when not empty,
    an address outside it is refused)."""
    allow: tuple[IPv4Network | IPv6Network, ...] = ()
    deny: tuple[IPv4Network | IPv6Network, ...] = ()


@dataclass(frozen=True, slots=True)
class Cors:
    origins: tuple[str, ...] = ()          # exact origins, "*.example.com" patterns, or "*"
    methods: tuple[str, ...] = ("GET", "HEAD", "POST")
    headers: tuple[str, ...] = ()          # request headers a preflight may ask for (lower-case)
    expose_headers: tuple[str, ...] = ()
    credentials: bool = False
    max_age: int | None = None             # seconds a preflight answer may be cached


@dataclass(frozen=True, slots=True)
class SecurityHeaders:
    headers: tuple[tuple[bytes, bytes], ...] = ()   # set on every response of the route


DEFAULT_FORWARD_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class ForwardAuth:
    """Ask an HTTP service whether a request may pass (Traefik ForwardAuth,
    nginx auth_request): fastgw/policy/forward_auth.py."""
    url: str
    headers: tuple[bytes, ...] = (b"authorization", b"cookie")   # request headers sent to it (lower-case)
    copy_headers: tuple[bytes, ...] = ()    # from its 2xx answer to the upstream request (lower-case)
    timeout: float = DEFAULT_FORWARD_TIMEOUT
    failure_mode: str = "closed"            # closed: 503/504 when it fails; open: the request passes
    cache: float = 0.0                      # seconds a 2xx decision is reused for the same sent headers
