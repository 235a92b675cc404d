"""A token issuer for the tests: keys generated here, a JWKS endpoint served
by a real HTTP server in a thread, tokens signed with PyJWT.

`Issuer().start()` serves GET /.well-known/jwks.json; `rotate()` adds a new
key (and makes it the signing one), `drop(kid)` removes one, `down = True`
answers 503, `stop()` closes the port. `fetches` counts the JWKS requests.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.test"
AUDIENCE = "fastgw-api"
JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"


class SigningKey:
    def __init__(self, kid: str, kind: str = "RSA"):
        self.kid = kid
        self.kind = kind
        if kind == "RSA":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
            self.jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        self.jwk.update(kid=kid, use="sig")

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


class Issuer:
    def __init__(self, port: int = 0, host: str = "127.0.0.1", max_age: int | None = 300):
        self.keys = [SigningKey("k1")]
        self.discovery_issuer = ISSUER   # the `issuer` its discovery document names
        self.down = False
        self.max_age = max_age
        self.fetches = 0
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{JWKS_PATH}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Issuer":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def rotate(self, kind: str = "RSA") -> SigningKey:
        key = SigningKey(f"k{len(self.keys) + 1}", kind)
        with self.lock:
            self.keys.append(key)
        return key

    def drop(self, kid: str) -> None:
        with self.lock:
            self.keys = [k for k in self.keys if k.kid != kid]

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def jwks(self) -> bytes:
        with self.lock:
            return json.dumps({"keys": [k.jwk for k in self.keys]}).encode()

    def token(self, key: SigningKey | None = None, *, lifetime: float = 300, headers: dict | None = None,
              omit: tuple = (), **claims) -> str:
        key = key or self.current
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + int(lifetime)}
        body.update(claims)
        for name in omit:
            body.pop(name, None)
        return jwt.encode(body, key.private, algorithm=key.alg, headers={"kid": key.kid, **(headers or {})})

    def _handler(self):
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with issuer.lock:
                    issuer.fetches += 1
                if issuer.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == DISCOVERY_PATH:
                    body = json.dumps({"issuer": issuer.discovery_issuer, "jwks_uri": issuer.url}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if self.path != JWKS_PATH:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = issuer.jwks()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if issuer.max_age is not None:
                    self.send_header("Cache-Control", f"max-age={issuer.max_age}")
                self.end_headers()
                self.wfile.write(body)
        return Handler


def unsigned_token(**claims) -> str:
    """alg none: header.payload. with an empty signature."""
    import base64

    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "exp": now + 300, **claims}
    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': 'k1'})}.{b64(body)}."


def hs_confused_token(public_pem: bytes, kid: str = "k1", **claims) -> str:
    """An HS256 token whose HMAC secret is the issuer's public key (the
    confusion attack), built by hand: PyJWT rightly refuses to sign it."""
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "attacker", "exp": now + 300, **claims}
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64(json.dumps(body).encode())
    signature = hmac.new(public_pem, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{b64(signature)}"
