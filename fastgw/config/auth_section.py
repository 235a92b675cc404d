"""Reader for `auth` (top level: the default of every route; on a route: its
own, or `auth: off`). Keys files (`auth.api_keys.file`) are read here, with
the config, so a reload re-reads them. Model: fastgw/config/auth_model.py.

PyJWT is imported late (and only when a `jwt` section is configured): it is
the optional `auth` extra, and its absence is a config error with the fix.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import replace
from functools import partial

import yaml

from fastgw.config.auth_model import (
    ASYMMETRIC_ALGORITHMS, DEFAULT_JWKS_MAX_REFRESH, DEFAULT_JWKS_MIN_REFRESH, DEFAULT_JWKS_REFRESH,
    DEFAULT_JWKS_TIMEOUT, DEFAULT_KID_REFETCH_INTERVAL, DEFAULT_LEEWAY, DEFAULT_TOKEN_CACHE, HMAC_ALGORITHMS,
    ApiKey, ApiKeyAuth, Auth, JwtAuth, TokenSource,
)
from fastgw.config.errors import Invalid, item
from fastgw.config.reader import Section, parse_or_record
from fastgw.config.schema import (
    ENV_NAME, check_settable, config_dir, describe, existing_file, parse_bool, parse_duration, parse_header_name,
    parse_int, parse_method, suggestion,
)

AUTH_KEYS = ("jwt", "api_keys", "scopes", "scopes_mode")
JWT_KEYS = ("jwks_url", "discovery", "keys_file", "secret_file", "secret_env", "algorithms", "issuer", "audience",
            "leeway", "required_claims", "claims", "token", "claims_to_headers", "roles_claim",
            "jwks_refresh", "jwks_min_refresh", "jwks_max_refresh", "kid_refetch_interval", "jwks_timeout",
            "cache_size")
API_KEYS_KEYS = ("file", "header")
TOKEN_KEYS = ("header", "cookie", "query")
KEY_ENTRY_KEYS = ("id", "consumer", "hash", "scopes", "expires", "enabled")
SCOPES_MODES = ("all", "any")

AUTH_HINT = "e.g. auth: {jwt: {jwks_url: http://127.0.0.1:8000/jwks.json, issuer: https://issuer}}, or auth: off"
KEY_SOURCE_HINT = ("give exactly one of jwks_url (a JWKS endpoint), discovery (OIDC: true, from issuer, "
                   "or the discovery document's URL), keys_file (a PEM public key or a "
                   "JWKS file), secret_file or secret_env (an HMAC secret, for HS256/384/512)")
HASH_HINT = "write hash: sha256:<64 hex digits>, as `fastgw keys hash KEY` prints it"
_HASH_RE = re.compile(r"sha256:([0-9a-f]{64})")
_SCOPE_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")   # RFC 6749 scope-token
_CLAIM_RE = re.compile(r"[A-Za-z0-9_:.\-/]+")


def read_auth(parent: Section, *, on_route: bool) -> Auth | None:
    """None: no `auth` key (a route then gets the global default); `auth:
    off` on a route: Auth() (no authentication)."""
    raw = parent.get("auth")
    if raw is None:
        return None
    if raw is False:
        if not on_route:
            parent.errors.add(parent.path("auth"), "`off` only applies to a route",
                              "remove the top-level auth key to authenticate nothing")
        return Auth()
    section = parent.section("auth", AUTH_KEYS, hint=AUTH_HINT)
    jwt = _read_jwt(section.section("jwt", JWT_KEYS)) if section.has("jwt") else None
    api_keys = _read_api_keys(section.section("api_keys", API_KEYS_KEYS)) if section.has("api_keys") else None
    scopes, method_scopes = (), ()
    if isinstance(section.get("scopes"), dict):
        by_method = _read_method_scopes(section)
        scopes = by_method.pop("*", ())
        method_scopes = tuple(by_method.items())
    else:
        scopes = section.parse("scopes", parse_scopes, ())
    mode = section.parse("scopes_mode", parse_scopes_mode, "all")
    if jwt is None and api_keys is None:
        section.errors.add(section.keypath, "names no credential",
                           "add jwt: {...} or api_keys: {file: keys.yaml}, or write auth: off for none")
    return Auth(jwt=jwt, api_keys=api_keys, scopes=scopes, scopes_mode=mode, method_scopes=method_scopes)


def _read_method_scopes(section: Section) -> dict:
    """`scopes: {GET: [orders:read], POST: [orders:write], "*": [...]}`: per
    method; "*" for the other methods (none: no scope needed for them)."""
    out = {}
    for method, value in section.get("scopes").items():
        keypath = section.path("scopes") + f".{method}"
        name = "*" if method == "*" else parse_or_record(section.errors, keypath, parse_method, method, None)
        scopes = parse_or_record(section.errors, keypath, parse_scopes, value, None)
        if name is not None and scopes is not None:
            out[name] = scopes
    return out


def parse_scopes(value: object) -> tuple[str, ...]:
    words = value.split() if isinstance(value, str) else value
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and _SCOPE_RE.fullmatch(w)
                                                          for w in words):
        raise Invalid(f"expected a list of scopes, got {describe(value)}",
                      "e.g. scopes: [orders:read, admin]; a scope has no spaces or quotes")
    return tuple(dict.fromkeys(words))


def parse_scopes_mode(value: object) -> str:
    if value not in SCOPES_MODES:
        raise Invalid(f"unknown scopes_mode {value!r}", suggestion(value, SCOPES_MODES, "choose one of"))
    return value


# --- jwt ---------------------------------------------------------------------

def _read_jwt(jwt: Section) -> JwtAuth:
    try:
        import jwt as _pyjwt  # noqa: F401  (the optional dependency)
    except ImportError:
        jwt.errors.add(jwt.keypath, "needs PyJWT and cryptography, which are not installed",
                       "pip install 'fastgw[auth]'")
    sources = [key for key in ("jwks_url", "discovery", "keys_file", "secret_file", "secret_env")
               if jwt.has(key) and jwt.get(key) is not False]
    if len(sources) != 1:
        jwt.errors.add(jwt.keypath, "names no key source" if not sources else
                       f"names {len(sources)} key sources ({', '.join(sources)})", KEY_SOURCE_HINT)
    jwks_url = jwt.parse("jwks_url", parse_http_url, None)
    issuer = jwt.parse("issuer", _parse_text, None)
    discovery_url = None
    if jwt.get("discovery") is True:
        if issuer is None:
            jwt.errors.add(jwt.path("discovery"), "true needs the issuer", "add issuer: https://... "
                           "(its /.well-known/openid-configuration is fetched), or give the document's URL")
        else:
            discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
            if not re.fullmatch(r"https?://\S+", discovery_url):
                jwt.errors.add(jwt.path("issuer"), "is not an http(s) URL, so it has no discovery document",
                               "give discovery: https://.../.well-known/openid-configuration")
                discovery_url = None
    elif jwt.has("discovery") and jwt.get("discovery") is not False:
        discovery_url = jwt.parse("discovery", parse_http_url, None)
    keys_file = jwt.parse("keys_file", partial(_parse_keys_file, base=config_dir(jwt)), None)
    secret = None
    if jwt.has("secret_file"):
        secret = jwt.parse("secret_file", partial(_parse_secret_file, base=config_dir(jwt)), None)
    elif jwt.has("secret_env"):
        secret = jwt.parse("secret_env", _parse_secret_env, None)
    symmetric = jwt.has("secret_file") or jwt.has("secret_env")
    default_algs = ("HS256",) if symmetric else ("RS256", "PS256", "ES256", "EdDSA")
    algorithms = jwt.parse("algorithms", partial(_parse_algorithms, symmetric=symmetric), default_algs)
    claims_to_headers = _read_claim_headers(jwt)
    return JwtAuth(
        jwks_url=jwks_url, discovery_url=discovery_url, keys_file=keys_file, secret=secret,
        algorithms=algorithms, issuer=issuer,
        audience=jwt.parse("audience", _parse_text_list, ()),
        leeway=jwt.parse("leeway", partial(parse_duration, allow_zero=True), DEFAULT_LEEWAY),
        required_claims=jwt.parse("required_claims", _parse_claim_list, ()),
        claim_values=jwt.parse("claims", _parse_claim_values, ()),
        token=jwt.parse("token", _parse_token_source, TokenSource()),
        claims_to_headers=claims_to_headers,
        roles_claim=jwt.parse("roles_claim", _parse_claim_name, None),
        jwks_refresh=jwt.parse("jwks_refresh", parse_duration, DEFAULT_JWKS_REFRESH),
        jwks_min_refresh=jwt.parse("jwks_min_refresh", parse_duration, DEFAULT_JWKS_MIN_REFRESH),
        jwks_max_refresh=jwt.parse("jwks_max_refresh", parse_duration, DEFAULT_JWKS_MAX_REFRESH),
        kid_refetch_interval=jwt.parse("kid_refetch_interval", parse_duration, DEFAULT_KID_REFETCH_INTERVAL),
        jwks_timeout=jwt.parse("jwks_timeout", parse_duration, DEFAULT_JWKS_TIMEOUT),
        cache_size=jwt.parse("cache_size", partial(parse_int, minimum=0, example=10000), DEFAULT_TOKEN_CACHE),
    )


def parse_http_url(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s/?#]+(/[^\s#]*)?", value):
        raise Invalid(f"expected an http:// or https:// URL, got {describe(value)}",
                      "e.g. jwks_url: http://127.0.0.1:8000/.well-known/jwks.json")
    return value


def _parse_keys_file(value: object, base: str) -> str:
    path = existing_file(value, base, "a PEM public key or a JWKS document")
    from fastgw.auth.keys import KeyFileError, load_key_file  # late: PyJWT is optional
    try:
        load_key_file(path)
    except KeyFileError as err:
        raise Invalid(f"{value!r}: {err}", "give a PEM public key (BEGIN PUBLIC KEY) or a JWKS {keys: [...]}") \
            from None
    return path


def _parse_secret_file(value: object, base: str) -> bytes:
    path = existing_file(value, base, "a file holding the HMAC secret")
    with open(path, "rb") as handle:
        secret = handle.read().strip()
    if len(secret) < 32:
        raise Invalid(f"the secret in {value!r} has {len(secret)} bytes", "use at least 32 random bytes")
    return secret


def _parse_secret_env(value: object) -> bytes:
    if not isinstance(value, str) or not ENV_NAME.fullmatch(value):
        raise Invalid(f"expected an environment variable name, got {describe(value)}",
                      "e.g. secret_env: FASTGW_JWT_SECRET")
    secret = os.environ.get(value, "").encode()
    if len(secret) < 32:
        raise Invalid(f"${value} is unset or shorter than 32 bytes", f"export {value}=<at least 32 random bytes>")
    return secret


def _parse_algorithms(value: object, symmetric: bool) -> tuple[str, ...]:
    allowed = HMAC_ALGORITHMS if symmetric else ASYMMETRIC_ALGORITHMS
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise Invalid(f"expected a list of algorithms, got {describe(value)}",
                      suggestion("", allowed, "choose from"))
    for name in names:
        if isinstance(name, str) and name.lower() == "none":
            raise Invalid("alg none is never accepted", "remove it: an unsigned token proves nothing")
        if name not in allowed:
            why = ("an HMAC secret verifies only HS256/384/512" if symmetric else
                   "HS algorithms need secret_file or secret_env (a public key is no secret)"
                   if name in HMAC_ALGORITHMS else "unknown algorithm")
            raise Invalid(f"{name!r}: {why}", suggestion(name, allowed, "choose from"))
    return tuple(dict.fromkeys(names))


def _parse_text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(f"expected text, got {describe(value)}", "e.g. issuer: https://issuer.example.com")
    return value


def _parse_text_list(value: object) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise Invalid(f"expected a string or a list of strings, got {describe(value)}", "e.g. audience: my-api")
    return tuple(values)


def _parse_claim_name(value: object) -> str:
    if not isinstance(value, str) or not _CLAIM_RE.fullmatch(value):
        raise Invalid(f"expected a claim name, got {describe(value)}", "e.g. sub, roles or https://x/roles")
    return value


def _parse_claim_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid(f"expected a list of claim names, got {describe(value)}", "e.g. required_claims: [sub]")
    return tuple(_parse_claim_name(v) for v in value)


def _parse_claim_values(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, bool)) for v in value.values()):
        raise Invalid(f"expected a mapping of claim: value, got {describe(value)}", "e.g. claims: {tenant: acme}")
    return tuple((_parse_claim_name(k), str(v)) for k, v in value.items())


def _parse_token_source(value: object) -> TokenSource:
    hint = "write token: {header: X-Token}, {cookie: session} or {query: access_token}"
    if not isinstance(value, dict) or len(value) != 1:
        raise Invalid(f"expected one of header, cookie or query, got {describe(value)}", hint)
    (kind, name), = value.items()
    if kind not in TOKEN_KEYS:
        raise Invalid(f"unknown token source {kind!r}", suggestion(kind, TOKEN_KEYS, "choose one of"))
    if kind == "header":
        return TokenSource("header", parse_header_name(name).decode())
    if not isinstance(name, str) or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
        raise Invalid(f"expected a {kind} name, got {describe(name)}", hint)
    return TokenSource(kind, name)


def _read_claim_headers(jwt: Section) -> tuple[tuple[str, bytes], ...]:
    raw = jwt.get("claims_to_headers")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        jwt.errors.add(jwt.path("claims_to_headers"), f"expected a mapping, got {describe(raw)}",
                       "e.g. claims_to_headers: {sub: X-User-Id}")
        return ()
    out = []
    for claim, header in raw.items():
        keypath = jwt.path("claims_to_headers") + f".{claim}"
        name = parse_or_record(jwt.errors, keypath, _parse_claim_name, claim, None)
        value = parse_or_record(jwt.errors, keypath, _parse_settable_header, header, None)
        if name is not None and value is not None:
            out.append((name, value))
    return tuple(out)


def _parse_settable_header(value: object) -> bytes:
    name = parse_header_name(value)
    check_settable(name)
    return name


# --- api keys ----------------------------------------------------------------

def _read_api_keys(section: Section) -> ApiKeyAuth:
    header = section.parse("header", _parse_settable_header, b"x-api-key")
    path = section.require("file", partial(existing_file, base=config_dir(section), what="the keys file"), None,
                           "write file: keys.yaml (entries made with `fastgw keys hash`)")
    keys: tuple[ApiKey, ...] = ()
    if path is not None:
        keys = read_keys_file(path, section.path("file"), section.errors)
    return ApiKeyAuth(file=path or "", header=header, keys=keys)


def read_keys_file(path: str, keypath: str, errors) -> tuple[ApiKey, ...]:
    """The keys of a keys file; each problem is recorded against `keypath`
    with the place in the keys file (`keys.yaml: keys[1].hash: ...`)."""
    shown = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        errors.add(keypath, f"{shown}: cannot be read: {str(err).splitlines()[0]}", "fix the YAML of the keys file")
        return ()
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        errors.add(keypath, f"{shown}: expected a mapping with a list under keys",
                   "write keys: [{id: ci, consumer: ci, hash: sha256:..., scopes: [orders:read]}]")
        return ()
    keys, seen_ids, seen_hashes = [], set(), set()
    for index, raw in enumerate(entries):
        where = f"{shown}: {item('keys', index)}"
        entry = Section(raw, where, errors, KEY_ENTRY_KEYS)
        key_id = entry.require("id", _parse_key_id, None, "give each key an id, e.g. id: ci-2026")
        digest = entry.require("hash", _parse_hash, None, HASH_HINT)
        consumer = entry.parse("consumer", _parse_key_id, key_id)
        if key_id in seen_ids:
            errors.add(entry.path("id"), f"id {key_id!r} is used twice", "give every key its own id")
        if digest is not None and digest in seen_hashes:
            errors.add(entry.path("hash"), "the same key is listed twice", "list each key once")
        seen_ids.add(key_id)
        seen_hashes.add(digest)
        key = ApiKey(id=key_id or "", consumer=consumer or "", sha256=digest or b"",
                     scopes=entry.parse("scopes", parse_scopes, ()),
                     expires=entry.parse("expires", _parse_expiry, None),
                     enabled=entry.parse("enabled", _parse_enabled, True))
        if key_id is not None and digest is not None:
            keys.append(key)
    return tuple(keys)


def _parse_key_id(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}", value):
        raise Invalid(f"expected a name, got {describe(value)}", "letters, digits, . _ : @ -, e.g. ci-2026")
    return value


def _parse_hash(value: object) -> bytes:
    match = _HASH_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise Invalid(f"expected a key hash, got {describe(value) if not isinstance(value, str) else 'a string'}",
                      HASH_HINT)  # never echo it: it may be a key pasted in plain text
    return bytes.fromhex(match.group(1))


def _parse_expiry(value: object) -> float:
    if isinstance(value, bool):
        pass
    elif isinstance(value, (int, float)):
        return float(value)
    elif isinstance(value, _dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)).timestamp()
    elif isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc).timestamp()
    elif isinstance(value, str):
        try:
            return _parse_expiry(_dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise Invalid(f"expected a date, got {describe(value)}", "e.g. expires: 2027-01-31T00:00:00Z (UTC)")


_parse_enabled = partial(parse_bool, hint="write enabled: false to revoke a key")


def apply_edge_defaults(top: Section, routes, auth: Auth | None, security_headers) -> tuple:
    """Routes with the top-level auth and security_headers where they have
    none of their own; a rate limit keyed by `consumer` needs authentication
    on its route (else every request would count as the same absent consumer)."""
    out = []
    for route in routes:
        changes = {}
        if route.auth is None and auth is not None:
            changes["auth"] = auth
        if route.security_headers is None and security_headers is not None:
            changes["security_headers"] = security_headers
        if changes:
            route = replace(route, **changes)
        effective = route.auth
        for position, limit in enumerate(route.rate_limits):
            if "consumer" not in limit.key and "api_key" not in limit.key:
                continue
            if len(limit.key) != 1:
                top.errors.add(f"routes[{route.index}].rate_limits[{position}].key",
                               "consumer and api_key count alone", "write key: consumer or key: api_key")
            if effective is None or (effective.jwt is None and effective.api_keys is None):
                top.errors.add(f"routes[{route.index}].rate_limits[{position}].key",
                               "counts per consumer on a route without authentication",
                               "add auth: {jwt: ...} or auth: {api_keys: ...} to the route, or key by client_ip")
            if limit.scope != "local":
                top.errors.add(f"routes[{route.index}].rate_limits[{position}].scope",
                               "a consumer limit is counted locally only", "remove scope: redis")
        out.append(route)
    return tuple(out)


def redact_credentials(observe, routes):
    """The access log never shows a credential: the configured token
    headers, query parameters and API key headers join its redaction lists."""
    log = observe.access_log
    headers, query = list(log.redact_headers), list(log.redact_query)
    for route in routes:
        auth = route.auth
        if auth is None:
            continue
        if auth.jwt is not None and auth.jwt.token.kind == "header":
            headers.append(auth.jwt.token.name.encode())
        if auth.jwt is not None and auth.jwt.token.kind == "query":
            query.append(auth.jwt.token.name)
        if auth.api_keys is not None:
            headers.append(auth.api_keys.header)
    headers, query = tuple(dict.fromkeys(headers)), tuple(dict.fromkeys(query))
    if (headers, query) == (log.redact_headers, log.redact_query):
        return observe
    return replace(observe, access_log=replace(log, redact_headers=headers, redact_query=query))
