"""Authentication and authorization as a stage of phase access.

A route's `auth` (its own, or the top-level default) becomes one AuthStage.
Per request it finds the credential, judges it, and on success sends the
identity upstream; on failure it answers without the upstream:

    401 invalid_token        no credential, or one that is not valid
                             (WWW-Authenticate: Bearer error="invalid_token")
    403 insufficient_scope   a valid credential without the required scopes
    503 auth_unavailable     a JWT route whose JWKS was never fetched (never 500)

Which credential: with api_keys configured, a request carrying the key
header is judged by its key; any other request by its JWT (when jwt is
configured), else 401.

Forged identity: every header the route fills from claims (claims_to_headers)
is removed from the client's request first, whether or not the token sets it;
the API key header itself never goes upstream.

The installed stage is the native TokenGate (fastgw/_native/authgate.pyx)
when the token comes from a header: it lets a cached token through without
a Python frame, and hands every other request to AuthStage.admit here.

A JWT whose key id is unknown asks the key set for one refetch (at most once
per kid_refetch_interval) and waits for it (WAIT, then
exchange.admission_done); the first requests after a worker starts wait for
its first JWKS fetch the same way.

Counting: plain ints (`allowed_jwt`, `allowed_api_key`, `denied[reason]`,
read through `count()`) that observe/auth_metrics.py copies to fastgw_auth_decisions_total once a second; the reason goes to the
access log as `auth` (and the consumer as `consumer`), the token never does.
"""
from __future__ import annotations

import time

from fastgw._native.authgate import TokenGate
from fastgw._native.errors import ProxyError
from fastgw._native.proxy import WAIT
from fastgw.auth.api_keys import KeyStore
from fastgw.auth.jwks import KeySet, StaticKeys
from fastgw.pipeline.phases import Phase

try:  # PyJWT is the optional `auth` extra: without it no `jwt` section passes config load
    from fastgw.auth.jwt_verify import JwtVerifier, Rejected, UnknownKid
    from fastgw.auth.keys import load_key_file
except ImportError:  # pragma: no cover - only without the extra
    JwtVerifier = Rejected = UnknownKid = load_key_file = None

ALLOW_REASONS = ("jwt", "api_key")
DENY_REASONS = ("missing", "malformed", "algorithm_not_allowed", "unknown_kid", "bad_signature", "expired",
                "not_yet_valid", "wrong_issuer", "wrong_audience", "missing_claim", "claim_mismatch", "invalid",
                "unknown_key", "key_disabled", "key_expired", "insufficient_scope", "jwks_unavailable")
# Identity log fields a consumer-keyed rate limit reads (policy/consumer_limit.py).
CONSUMER_FIELD = "consumer"
_BEARER, _STRIP, _KEY, _TOKEN_HEADER, _COOKIE = range(1, 6)   # as fastgw/_native/authgate.pyx numbers them
_time = time.time
API_KEY_FIELD = "api_key"


def _bearer(value: bytes) -> bytes | None:
    if len(value) > 7 and value[:7].lower() == b"bearer ":
        token = value[7:].strip()
        return token or None
    return None


def _cookie(value: bytes, name: bytes) -> bytes | None:
    for part in value.split(b";"):
        key, _, val = part.strip().partition(b"=")
        if key == name:
            return val.strip(b'"') or None
    return None


def _query(query: bytes, name: bytes) -> bytes | None:
    for part in query.lstrip(b"?").split(b"&"):
        key, _, val = part.partition(b"=")
        if key == name:
            return val or None  # JWTs are URL-safe base64 and dots: nothing to unquote
    return None


class AuthStage:
    """One route's authentication (verifier and key store may be shared by
    routes with the same settings)."""

    def __init__(self, route_name: str, auth, verifier, keystore, log_identity: bool = True):
        self.route = route_name
        self.auth = auth
        self.verifier = verifier
        self.keystore = keystore
        jwt = auth.jwt
        self.token_kind = jwt.token.kind if jwt else None
        self.token_name = jwt.token.name.encode() if jwt else b""
        self.key_header = auth.api_keys.header if auth.api_keys else None
        strip = {name for _, name in (jwt.claims_to_headers if jwt else ())}
        if self.key_header is not None:
            strip.add(self.key_header)
        self.strip = frozenset(strip)
        self.required = frozenset(auth.scopes)
        self.by_method = {method.encode(): frozenset(scopes) for method, scopes in auth.method_scopes}
        self.any_scope = auth.scopes_mode == "any"
        scheme = b"Bearer" if jwt else b"ApiKey"
        self.challenge = b'WWW-Authenticate: %s realm="fastgw", error="invalid_token"\r\n' % scheme
        self.scope_challenge = (b'WWW-Authenticate: %s realm="fastgw", error="insufficient_scope", scope="%s"\r\n'
                                % (scheme, " ".join(auth.scopes).encode()))
        # Header name (lower-case) -> what it is to this stage; names are
        # first filtered by length (one set test per header of the request).
        watch = dict.fromkeys(self.strip, _STRIP)
        if self.key_header is not None:
            watch[self.key_header] = _KEY
        if self.token_kind == "bearer":
            watch[b"authorization"] = _BEARER
        elif self.token_kind == "header":
            watch[self.token_name] = _TOKEN_HEADER
        elif self.token_kind == "cookie":
            watch[b"cookie"] = _COOKIE
        self.watch = watch
        self.lengths = frozenset(len(name) for name in watch)
        # The access log and identity limits read the identity; else it is not written.
        self.log_identity = log_identity
        self.allowed_jwt = 0
        self.allowed_api_key = 0
        self.denied: dict[str, int] = {}
        self.gate = None              # the native fast path in front of this stage, if any

    def count(self, result: str, reason: str) -> int:
        """For the metrics sampler."""
        if result == "allowed":
            if reason == "jwt":
                return self.allowed_jwt + (self.gate.allowed if self.gate is not None else 0)
            return self.allowed_api_key
        return self.denied.get(reason, 0)

    def __repr__(self):
        return f"AuthStage({self.route!r})"

    # -- the request path ------------------------------------------------------
    def admit(self, ex):
        headers = ex.request_headers
        token = key = None
        forged = False
        lengths, watch = self.lengths, self.watch
        for hname, value in headers:
            # Most headers are passed over on their name's length alone.
            if len(hname) in lengths:
                role = watch.get(hname.lower())
                if role is None:
                    continue
                if role == _BEARER:
                    token = _bearer(value)
                elif role == _STRIP:
                    forged = True
                elif role == _KEY:
                    forged = True
                    key = value
                elif role == _TOKEN_HEADER:
                    token = value.strip() or None
                elif token is None:  # _COOKIE
                    token = _cookie(value, self.token_name)
        if self.token_kind == "query" and ex.query:
            token = _query(ex.query, self.token_name)
        if forged:
            strip = self.strip
            headers[:] = [pair for pair in headers if pair[0].lower() not in strip]
        now = _time()
        if key is not None and self.keystore is not None:
            return self._api_key(ex, key.strip(), now)
        verifier = self.verifier
        if token is None or verifier is None:
            return self._deny(ex, "missing", "no credential was sent")
        entry = verifier.cached(token, now)
        if entry is None:
            return self._verify(ex, token, now, retry=True)
        return self._allow_jwt(ex, entry)

    def _verify(self, ex, token, now, retry):
        verifier = self.verifier
        keys = verifier.keys
        if verifier.config.secret is None and not keys.loaded:
            pending = keys.pending()
            if pending is None or not retry:
                self._count("denied", "jwks_unavailable", ex)
                return ProxyError(503, "auth_unavailable", "the token issuer's keys could not be fetched yet",
                                  b"Retry-After: 1\r\n")
            return self._wait(ex, pending, token)
        try:
            entry = verifier.verify(token, now)
        except UnknownKid as err:
            refetch = keys.refetch_for_kid() if retry else None
            if refetch is None:
                return self._deny(ex, err.reason, err.message)
            return self._wait(ex, refetch, token)
        except Rejected as err:
            return self._deny(ex, err.reason, err.message)
        return self._allow_jwt(ex, entry)

    def _wait(self, ex, task, token):
        def done(_task):
            if ex.finished:
                return
            try:
                verdict = self._verify(ex, token, _time(), retry=False)
            except Exception as err:  # a bug here fails this request, never the loop
                ex.client.gateway.log_internal_error("auth", err)
                verdict = ProxyError(500, "internal_error", "internal error in auth")
            ex.admission_done(verdict)
        task.add_done_callback(done)
        return WAIT

    def _allow_jwt(self, ex, entry):
        required = self.by_method.get(ex.method, self.required) if self.by_method else self.required
        if required and not self._has_scopes(required, entry.scopes):
            return self._forbid(ex, required)
        if entry.header_pairs:
            ex.request_headers.extend(entry.header_pairs)
        self.allowed_jwt += 1
        if self.log_identity:
            self._log(ex, "jwt", entry.consumer)
        return None

    def _api_key(self, ex, presented, now):
        key, reason = self.keystore.lookup(presented, now)
        if key is None:
            return self._deny(ex, reason, "the API key is not valid")
        required = self.by_method.get(ex.method, self.required) if self.by_method else self.required
        if required and not self._has_scopes(required, frozenset(key.scopes)):
            return self._forbid(ex, required)
        self.allowed_api_key += 1
        if self.log_identity:
            self._log(ex, "api_key", key.consumer, key.id)
        return None

    def _has_scopes(self, required, scopes) -> bool:
        if self.any_scope:
            return not required.isdisjoint(scopes)
        return required <= scopes

    def _deny(self, ex, reason, message):
        self._count("denied", reason, ex)
        return ProxyError(401, "invalid_token", message, self.challenge)

    def _forbid(self, ex, required):
        self._count("denied", "insufficient_scope", ex)
        want = "all" if not self.any_scope else "one"
        names = " ".join(sorted(required))
        challenge = self.scope_challenge if required == self.required else (
            self.scope_challenge.split(b'scope="')[0] + b'scope="%s"\r\n' % names.encode())
        return ProxyError(403, "insufficient_scope", f"the credential lacks {want} of the scopes {names}", challenge)

    def _count(self, result, reason, ex) -> None:
        """A denial (allowed requests count in plain attributes, cheaper)."""
        self.denied[reason] = self.denied.get(reason, 0) + 1
        self._log(ex, reason)

    @staticmethod
    def _log(ex, reason, consumer=None, key_id=None) -> None:
        fields = ex.log_fields
        if fields is None:
            ex.log_fields = fields = {}
        fields["auth"] = reason
        if consumer is not None:
            fields[CONSUMER_FIELD] = consumer
        if key_id is not None:
            fields[API_KEY_FIELD] = key_id


class AuthPolicy:
    name = "auth"
    phases = (Phase.ACCESS,)

    def prepare(self, gateway) -> None:
        gateway.auth_key_sets = {}    # JwtAuth with a jwks_url -> its KeySet (fetches once the loop runs)
        gateway.auth_stages = []      # for the metrics (observe/auth_metrics.py)
        self._verifiers = {}
        self._stores = {}

    def install(self, builder, route) -> None:
        auth = route.auth
        if auth is None or (auth.jwt is None and auth.api_keys is None):
            return
        gateway = builder.gateway
        verifier = self._verifier(gateway, auth.jwt) if auth.jwt is not None else None
        store = None
        if auth.api_keys is not None:
            store = self._stores.get(auth.api_keys)
            if store is None:
                store = self._stores[auth.api_keys] = KeyStore(auth.api_keys.keys)
        identity_limits = any("consumer" in limit.key or "api_key" in limit.key for limit in route.rate_limits)
        log_identity = identity_limits or gateway.config.observe.access_log.enabled
        stage = AuthStage(route.name, auth, verifier, store, log_identity)
        gateway.auth_stages.append(stage)
        if verifier is not None and stage.token_kind in ("bearer", "header") and not auth.method_scopes:
            # A repeated token is let through natively; the rest falls to `stage`.
            stage.gate = TokenGate(stage.watch, verifier.cache, auth.scopes, stage.any_scope, log_identity, stage)
            builder.add_stage(Phase.ACCESS, stage.gate)
        else:
            builder.add_stage(Phase.ACCESS, stage)

    def _verifier(self, gateway, jwt):
        verifier = self._verifiers.get(jwt)
        if verifier is not None:
            return verifier
        if jwt.key_source is not None:
            keys = gateway.auth_key_sets.get(jwt)
            if keys is None:
                keys = gateway.auth_key_sets[jwt] = KeySet(jwt, gateway.loop)
        elif jwt.keys_file is not None:
            keys = StaticKeys(load_key_file(jwt.keys_file))
        else:
            keys = StaticKeys({})
        verifier = self._verifiers[jwt] = JwtVerifier(jwt, keys)
        return verifier


POLICY = AuthPolicy()
