"""API keys: the gateway knows only their SHA-256 (a keys file, read with
the config). A presented key is hashed and looked up by its hash; the hash
found is then compared with hmac.compare_digest. Timing can only tell an
attacker about the hash of what they sent, which does not help them find a
key (that would take a SHA-256 preimage); keys are long random strings, so a
fast unsalted hash is the right tool (as for GitHub or Stripe tokens), not
a password hash that would cost milliseconds per request."""
from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "fgw_"


def hash_key(key: str | bytes) -> str:
    """What a keys file's `hash:` holds for `key`."""
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


class KeyStore:
    def __init__(self, keys):
        self.by_digest = {key.sha256: key for key in keys}

    def lookup(self, presented: bytes, now: float):
        """(ApiKey, None) or (None, reason)."""
        digest = hashlib.sha256(presented).digest()
        key = self.by_digest.get(digest)
        if key is None or not hmac.compare_digest(key.sha256, digest):
            return None, "unknown_key"
        if not key.enabled:
            return None, "key_disabled"
        if key.expires is not None and now >= key.expires:
            return None, "key_expired"
        return key, None
