"""Verification keys: a JWKS document or a PEM public key -> {kid: Key}.

A key is kept with the algorithms its type can verify, so a token can only
be checked with a key of its own family: an RSA key never verifies an HS256
token (the classic confusion, where the public key is used as an HMAC
secret), an EC key never an RS256 one. Symmetric JWKs (`kty: oct`) are
ignored: an HMAC secret belongs in `secret_file`/`secret_env`, never in a
document served over HTTP.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import jwt
from jwt.algorithms import get_default_algorithms

# Key type -> the algorithms a key of that type may verify.
FAMILIES = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
}
MAX_KEYS = 64  # a JWKS with more keys than this is cut (a sane issuer has a handful)


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Key:
    kid: str | None
    algorithms: frozenset[str]    # what this key may verify
    key: object                   # a cryptography public key


def parse_jwks(document: bytes | str | dict) -> dict[str | None, Key]:
    """kid -> Key for the usable keys of a JWKS (`{"keys": [...]}`); raises
    KeyFileError when the document is not a JWKS at all. Keys that are not
    for signatures, of unknown types or broken are skipped."""
    if not isinstance(document, dict):
        try:
            document = json.loads(document)
        except (ValueError, UnicodeDecodeError) as err:
            raise KeyFileError(f"not JSON: {err}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeyFileError("a JWKS is a JSON object with a list under \"keys\"")
    keys: dict[str | None, Key] = {}
    for entry in entries[:MAX_KEYS]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        family = FAMILIES.get(entry.get("kty"))
        if family is None:
            continue  # oct (symmetric) or unknown: never from a key document
        alg = entry.get("alg")
        if alg is not None:
            if alg not in family:
                continue  # a JWK that claims an algorithm of another family
            family = frozenset({alg})
        try:
            key = jwt.PyJWK(entry, algorithm=alg or next(iter(sorted(family)))).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        kid = entry.get("kid") if isinstance(entry.get("kid"), str) else None
        keys[kid] = Key(kid, family, key)
    return keys


def load_key_file(path: str) -> dict[str | None, Key]:
    """A JWKS file, or a PEM public key (kid None), as parse_jwks answers."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise KeyFileError(str(err)) from None
    if data.lstrip().startswith(b"{"):
        keys = parse_jwks(data)
        if not keys:
            raise KeyFileError("the JWKS has no usable signature key (RSA, EC or OKP)")
        return keys
    if b"-----BEGIN" not in data:
        raise KeyFileError("neither a JWKS (JSON) nor a PEM key")
    if b"PRIVATE KEY" in data:
        raise KeyFileError("holds a private key: give the public key only")
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    try:
        public = load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise KeyFileError(f"not a PEM public key: {err}") from None
    family = _family_of(public)
    if family is None:
        raise KeyFileError(f"unsupported key type {type(public).__name__}")
    return {None: Key(None, family, public)}


def _family_of(public) -> frozenset[str] | None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    if isinstance(public, rsa.RSAPublicKey):
        return FAMILIES["RSA"]
    if isinstance(public, ec.EllipticCurvePublicKey):
        return FAMILIES["EC"]
    if isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return FAMILIES["OKP"]
    return None


assert set().union(*FAMILIES.values()) <= set(get_default_algorithms()), "PyJWT lacks an algorithm"
