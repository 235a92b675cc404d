"""The JWT route's native fast path (fastgw/_native/authgate.pyx)."""
from typing import Any, Final

KEY_BYTES: Final[int]

def cache_key(token: bytes) -> bytes: ...

class Verified:
    token: bytes
    expires: float
    consumer: str | None
    scopes: frozenset[str]
    header_pairs: tuple[tuple[bytes, bytes], ...]
    claims: dict[str, Any]
    def __init__(self, token: bytes, expires: float, consumer: str | None, scopes: frozenset[str],
                 header_pairs: tuple[tuple[bytes, bytes], ...], claims: dict[str, Any]) -> None: ...

class TokenGate:
    allowed: int
    def __init__(self, watch: dict[bytes, int], cache: dict[bytes, Verified], required: Any, any_scope: bool,
                 log_identity: bool, stage: Any) -> None: ...
    def admit(self, ex: Any) -> Any: ...
