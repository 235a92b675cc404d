"""JWT verification with PyJWT, and the per-worker cache of verified tokens.

`verify(token)` checks, in this order: the header parses and names an
algorithm the config allows (so `alg: none` and anything unlisted never
reach a key); a key of that algorithm's family (keys.py: an RSA key can't
verify an HS token, so the RS/HS confusion has no key to use); then PyJWT
checks the signature, exp/nbf/iat with the leeway, iss, aud and the
required claims; then the configured claim values.

When the key set changes (a rotation fetched, a key withdrawn) the key set
empties the cache (`on_change`): a token must not outlive the key that
signed it.

The cache maps the token to what a request needs (scopes, identity,
upstream header lines), so a repeated token costs one dict lookup (keyed by
its last 32 bytes, the signature's tail: cheap to hash) and, on a hit, a
comparison of the whole token, so no collision can hand one token another's
identity. The lookup on the request path is native
(fastgw/_native/authgate.pyx). An entry is never
used at or past the token's exp (a token without exp is kept at most
NO_EXP_TTL); the cache is bounded (oldest entry out first).

Why the token itself and not a SHA-256 of it, as issue 10 first asked:
SHA-256 of a 700-byte token is ~16,000 instructions per request (OpenSSL's
EVP fetch included), more than the rest of the request, and the hash would
save nothing an attacker who can read a worker's memory
doesn't already have (the same tokens sit in its read buffers). Envoy's
jwt_authn cache is keyed by the token too.
"""
from __future__ import annotations

import re
import time

import jwt

from fastgw._native.authgate import Verified, cache_key

NO_EXP_TTL = 300.0
MAX_TOKEN_BYTES = 16 * 1024
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
MAX_KEYS_TRIED = 8   # a token without kid is tried against this many keys of its family at most


class Rejected(Exception):
    """A token that is not accepted: `reason` (metrics, access log) and a message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class UnknownKid(Rejected):
    def __init__(self):
        super().__init__("unknown_kid", "the token's key id is not among the issuer's keys")


_ERRORS = (
    (jwt.ExpiredSignatureError, "expired", "the token has expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "the token is not valid yet"),
    (jwt.InvalidIssuerError, "wrong_issuer", "the token's issuer is not accepted"),
    (jwt.InvalidAudienceError, "wrong_audience", "the token's audience is not accepted"),
    (jwt.MissingRequiredClaimError, "missing_claim", "the token lacks a required claim"),
    (jwt.InvalidSignatureError, "bad_signature", "the token's signature does not verify"),
    (jwt.DecodeError, "malformed", "the token is malformed"),
)


class JwtVerifier:
    def __init__(self, config, keys):
        """`keys`: a jwks.KeySet or jwks.StaticKeys (`.keys`: kid -> Key);
        unused with an HMAC secret."""
        self.config = config
        self.keys = keys
        self.cache: dict[bytes, Verified] = {}
        self.cache_size = config.cache_size
        self.algorithms = frozenset(config.algorithms)
        self.options = {"require": list(config.required_claims), "verify_aud": bool(config.audience)}
        self.audience = list(config.audience) or None
        self.verified = 0            # signature checks that passed (cache misses)
        listeners = getattr(keys, "on_change", None)
        if listeners is not None:
            # The issuer's keys changed: a token verified with a key it no
            # longer publishes must not outlive that key here.
            listeners.append(self.cache.clear)

    def cached(self, token: bytes, now: float) -> Verified | None:
        """The cache entry for `token`, if usable now (the native TokenGate
        does the same on the fast path)."""
        entry = self.cache.get(cache_key(token))
        if entry is None or entry.token != token or now >= entry.expires:
            return None
        return entry

    def verify(self, token: bytes, now: float) -> Verified:
        """Raises Rejected (UnknownKid when a refetch of the keys may help)."""
        cfg = self.config
        if len(token) > MAX_TOKEN_BYTES:
            raise Rejected("malformed", "the token is too large")
        try:
            text = token.decode("ascii")
            header = jwt.get_unverified_header(text)
        except (UnicodeDecodeError, jwt.DecodeError):
            raise Rejected("malformed", "the token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Rejected("algorithm_not_allowed", f"tokens signed with {str(alg)[:16]!r} are not accepted")
        claims = None
        for key in self._keys_for(header, alg):
            try:
                claims = jwt.decode(text, key, algorithms=[alg], audience=self.audience, issuer=cfg.issuer,
                                    leeway=cfg.leeway, options=self.options)
                break
            except jwt.InvalidSignatureError:
                if "kid" in header:
                    raise Rejected("bad_signature", "the token's signature does not verify") from None
                continue  # without kid: the next key of the family may be the one
            except jwt.PyJWTError as err:
                raise _rejection(err) from None
        if claims is None:
            raise Rejected("bad_signature", "the token's signature does not verify")
        for name, value in cfg.claim_values:
            if str(claims.get(name)) != value:
                raise Rejected("claim_mismatch", f"the token's {name!r} claim does not have the required value")
        self.verified += 1
        entry = self._entry(token, claims, now)
        if self.cache_size and entry.expires > now:
            cache = self.cache
            key = cache_key(token)
            cache.pop(key, None)  # an expired entry (or a tail twin) of this token: replaced, at the end
            if len(cache) >= self.cache_size:
                cache.pop(next(iter(cache)))
            cache[key] = entry
        return entry

    def _keys_for(self, header: dict, alg: str):
        if self.config.secret is not None:
            return (self.config.secret,)
        keys = self.keys.keys
        kid = header.get("kid")
        if kid is not None:
            key = keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                key = keys.get(None)  # a PEM key has no id: it verifies any kid of its family
            if key is None:
                raise UnknownKid()
            if alg not in key.algorithms:
                raise Rejected("algorithm_not_allowed", f"the key {kid!r} does not verify {alg} tokens")
            return (key.key,)
        usable = [key.key for key in keys.values() if alg in key.algorithms][:MAX_KEYS_TRIED]
        if not usable:
            raise UnknownKid() if not keys else Rejected("bad_signature", f"no key verifies {alg} tokens")
        return usable

    def _entry(self, token: bytes, claims: dict, now: float) -> Verified:
        cfg = self.config
        exp = claims.get("exp")
        expires = float(exp) if isinstance(exp, (int, float)) else now + NO_EXP_TTL
        scopes = set()
        for name in ("scope", "scp"):
            scopes.update(_words(claims.get(name)))
        if cfg.roles_claim is not None:
            scopes.update(_words(claims.get(cfg.roles_claim)))
        pairs = []
        for claim, header in cfg.claims_to_headers:
            value = _header_value(claims.get(claim))
            if value is not None:
                pairs.append((header, value))
        sub = claims.get("sub")
        return Verified(token, expires, sub if isinstance(sub, str) and sub else None, frozenset(scopes),
                        tuple(pairs), claims)


def _rejection(err: Exception) -> Rejected:
    for kind, reason, message in _ERRORS:
        if isinstance(err, kind):
            return Rejected(reason, message)
    return Rejected("invalid", "the token is not valid")


def _words(value) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _header_value(value) -> bytes | None:
    """A claim as a header value; None when it can't be one (an object, or
    text with control characters a client could use to split headers)."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (int, float)):
        value = str(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    if not isinstance(value, str):
        return None
    raw = value.encode("utf-8")
    if _BAD_VALUE.search(raw) or len(raw) > 4096:
        return None
    return raw


def now() -> float:
    return time.time()
