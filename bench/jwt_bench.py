#!/usr/bin/env python3
"""JWT authentication's cost (issue 10).

    python3 bench/jwt_bench.py setup DIR UPSTREAM_PORT
        writes DIR/jwt.yaml (a route with auth.jwt over a keys_file, sub ->
        X-User-Id) and DIR/off.yaml (the same route without auth), the key
        pair's public half DIR/pub.pem, and DIR/token (RS256, valid 1 h), for
        bench/callgrind.sh:
            CONFIG=DIR/jwt.yaml FIXED_HEADER="Authorization: Bearer $(cat DIR/token)" bash bench/callgrind.sh
            CONFIG=DIR/off.yaml FIXED_HEADER="Authorization: Bearer $(cat DIR/token)" bash bench/callgrind.sh

    python3 bench/jwt_bench.py cost
        µs per first-seen token (a signature check: RS256, ES256, EdDSA), per
        cache hit, and per JWKS refresh (a GET to a loopback server + parse).

Keys are generated per run (no private key is kept in the repo).
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
import timeit
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import RSAAlgorithm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ISSUER, AUDIENCE = "https://issuer.bench", "bench-api"


def _pem(private) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def _token(private, alg: str, sub: str = "user-1") -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 3600,
                       "scope": "read"}, private, algorithm=alg, headers={"kid": "bench"})


def setup(directory: str, upstream_port: str) -> None:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (out / "pub.pem").write_bytes(_pem(private))
    (out / "token").write_text(_token(private, "RS256"))
    base = ("# bench/jwt_bench.py setup: the endpoint is the UPSTREAM given to callgrind.sh.\n"
            "listeners: [{address: 127.0.0.1:1}]\n"
            f"clusters: {{main: {{endpoints: [http://127.0.0.1:{upstream_port}]}}}}\n"
            "routes:\n  - match: {prefix: /}\n    cluster: main\n")
    (out / "off.yaml").write_text(base)
    (out / "jwt.yaml").write_text(base + (
        f"    auth:\n      jwt: {{keys_file: pub.pem, issuer: '{ISSUER}', audience: {AUDIENCE}, "
        "algorithms: [RS256], claims_to_headers: {sub: X-User-Id}}\n"))
    print(out)


def cost() -> None:
    from fastgw.auth import fetch
    from fastgw.auth.jwks import StaticKeys
    from fastgw.auth.jwt_verify import JwtVerifier
    from fastgw.auth.keys import parse_jwks
    from fastgw.config.auth_model import JwtAuth

    keys = {"rsa": (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
            "ec": (ec.generate_private_key(ec.SECP256R1()), "ES256"),
            "ed": (ed25519.Ed25519PrivateKey.generate(), "EdDSA")}
    rows = []
    for name, (private, alg) in keys.items():
        from fastgw.auth.keys import FAMILIES, Key
        family = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}[alg]
        config = JwtAuth(keys_file="-", algorithms=(alg,), issuer=ISSUER, audience=(AUDIENCE,),
                         claims_to_headers=(("sub", b"x-user-id"),), cache_size=0)
        verifier = JwtVerifier(config, StaticKeys({"bench": Key("bench", FAMILIES[family], private.public_key())}))
        tokens = [_token(private, alg, f"user-{i}").encode() for i in range(2000)]
        it = iter(tokens)
        now = time.time()
        n = 1000
        first = timeit.timeit(lambda: verifier.verify(next(it), now), number=n) / n
        rows.append((f"first-seen token, {alg} (verify + claims)", first * 1e6))
    cached = JwtVerifier(JwtAuth(keys_file="-", algorithms=("RS256",)), StaticKeys({}))
    token = tokens[0]
    from fastgw.auth.jwt_verify import Verified
    from fastgw._native.authgate import cache_key
    cached.cache[cache_key(token)] = Verified(token, time.time() + 3600, "user-1", frozenset(), (), {})
    n = 200000
    hit = timeit.timeit(lambda: cached.cached(bytes(bytearray(token)), now), number=n) / n  # a fresh bytes, as per request
    rows.append(("repeated token: cache lookup (Python path; the gate is native)", hit * 1e6))

    private = keys["rsa"][0]
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    document = json.dumps({"keys": [dict(jwk, kid=f"k{i}", use="sig") for i in range(2)]}).encode()

    async def refresh_cost(rounds: int = 200) -> float:
        async def serve(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: max-age=300\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(document), document))
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/jwks.json"
        started = time.perf_counter()
        for _ in range(rounds):
            _, _, body = await fetch.get(url, 5)
            parse_jwks(body)
        spent = (time.perf_counter() - started) / rounds
        server.close()
        return spent
    rows.append(("JWKS refresh: GET on loopback + parse (2 RSA keys), wall", asyncio.run(refresh_cost()) * 1e6))
    parse = timeit.timeit(lambda: parse_jwks(document), number=500) / 500
    rows.append(("  of which parse_jwks (2 RSA keys)", parse * 1e6))
    for label, micros in rows:
        print(f"{label:60s} {micros:10.1f} µs")


if __name__ == "__main__":
    if sys.argv[1:2] == ["setup"] and len(sys.argv) == 4:
        setup(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["cost"]:
        cost()
    else:
        raise SystemExit(__doc__)
