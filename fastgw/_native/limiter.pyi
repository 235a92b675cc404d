"""A route's local rate limits per request (fastgw/_native/limiter.pyx)."""
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from fastgw._native.ratelimit import Limit

PART_IP: Final[int]
PART_CONST: Final[int]
PART_HEADER: Final[int]
SEPARATOR: Final[bytes]
ABSENT: Final[bytes]
DENIED_STATUS: Final[int]

_KeyPart = tuple[int, bytes | None]
_ClientIp = Callable[[bytes, list[bytes], Any], bytes]   # (peer, X-Forwarded-For values, trusted) -> ip

class Decision:
    @property
    def allowed(self) -> bool: ...
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> bytes: ...
    @property
    def message(self) -> str: ...

class LimitKeys:
    def __init__(self, key_parts_list: Iterable[Sequence[_KeyPart]], trusted_proxies: tuple[Any, ...] = ...,
                 client_ip: _ClientIp | None = ...) -> None: ...
    @property
    def trusted(self) -> tuple[Any, ...]: ...
    @property
    def header_names(self) -> tuple[bytes, ...]: ...
    def keys(self, peer_ip: bytes, headers: list[tuple[bytes, bytes]]) -> list[bytes]: ...

class RouteLimiter(LimitKeys):
    def __init__(self, limits: Iterable[tuple[Limit, Sequence[_KeyPart], str]],
                 trusted_proxies: tuple[Any, ...] = ..., client_ip: _ClientIp | None = ...) -> None: ...
    def check(self, peer_ip: bytes, headers: list[tuple[bytes, bytes]]) -> Decision: ...

def decision(allowed: bool, limit: int, remaining: int, reset_seconds: float, retry_after_seconds: float,
             message: str) -> Decision: ...
