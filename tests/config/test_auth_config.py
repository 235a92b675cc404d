"""Config of edge security (issue 10): auth (jwt, api_keys, scopes), ip_filter,
cors, security_headers; defaults, the global default and `off`, and errors
that name the file, the key path and a fix."""
from __future__ import annotations

from fastgw.auth.api_keys import hash_key
from fastgw.config import load
from fastgw.config.auth_model import SECURITY_HEADER_PRESET, TokenSource


def _config(route_block: str = "", top_block: str = "") -> str:
    return f"""
clusters:
  app:
    endpoints: [http://127.0.0.1:9001]
{top_block}
routes:
  - name: api
    match: {{prefix: /api}}
    cluster: app
    {route_block}
  - name: open
    match: {{prefix: /}}
    cluster: app
"""


JWKS = "jwks_url: http://127.0.0.1:9/jwks.json"


def test_jwt_defaults_and_claims_to_headers(write_config):
    config = load(write_config(_config(
        f"auth: {{jwt: {{{JWKS}, issuer: https://i, audience: [a, b], claims_to_headers: {{sub: X-User-Id}}}}}}")),
        env={})
    jwt = config.routes[0].auth.jwt
    assert jwt.algorithms == ("RS256", "PS256", "ES256", "EdDSA")
    assert jwt.audience == ("a", "b") and jwt.leeway == 30.0 and jwt.token == TokenSource()
    assert jwt.claims_to_headers == (("sub", b"x-user-id"),)
    assert config.routes[1].auth is None


def test_global_default_applies_unless_a_route_says_off(write_config):
    config = load(write_config(_config("auth: off", f"auth: {{jwt: {{{JWKS}}}}}")), env={})
    assert config.routes[0].auth.jwt is None and config.routes[0].auth.api_keys is None
    assert config.routes[1].auth.jwt.jwks_url.endswith("/jwks.json")


def test_jwt_errors_name_the_key_path(config_errors, find_error):
    source, errors = config_errors(_config(
        "auth: {jwt: {jwks_url: ftp://x, keys_file: nope.pem, algorithms: [HS256], leeway: soon, "
        "token: {form: t}, claims_to_headers: {sub: Content-Length}, jwks_refersh: 1s}, scopes_mode: some}"))
    find_error(errors, source, "routes[0].auth.jwt", "names 2 key sources", "exactly one of")
    find_error(errors, source, "routes[0].auth.jwt.jwks_url", "http:// or https://")
    find_error(errors, source, "routes[0].auth.jwt.keys_file", "does not exist", "relative to the config")
    find_error(errors, source, "routes[0].auth.jwt.algorithms", "HS algorithms need secret_file or secret_env")
    find_error(errors, source, "routes[0].auth.jwt.leeway", "not a duration")
    find_error(errors, source, "routes[0].auth.jwt.token", "unknown token source 'form'")
    find_error(errors, source, "routes[0].auth.jwt.claims_to_headers.sub", "content-length")
    find_error(errors, source, "routes[0].auth.jwt.jwks_refersh", "unknown key", "jwks_refresh")
    find_error(errors, source, "routes[0].auth.scopes_mode", "unknown scopes_mode", "all, any")


def test_alg_none_and_a_short_secret_are_refused(config_errors, find_error, tmp_path):
    (tmp_path / "short.secret").write_text("tiny")
    source, errors = config_errors(_config("auth: {jwt: {secret_file: short.secret, algorithms: [none]}}"))
    find_error(errors, source, "routes[0].auth.jwt.secret_file", "4 bytes", "at least 32")
    find_error(errors, source, "routes[0].auth.jwt.algorithms", "alg none is never accepted")
    source, errors = config_errors(_config("auth: {jwt: {secret_env: FGW_TEST_SECRET}}"), env={})
    find_error(errors, source, "routes[0].auth.jwt.secret_env", "$FGW_TEST_SECRET is unset")


def test_keys_file_that_is_not_a_key(config_errors, find_error, tmp_path):
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    (tmp_path / "empty.json").write_text('{"keys": []}')
    source, errors = config_errors(_config("auth: {jwt: {keys_file: key.pem}}"))
    find_error(errors, source, "routes[0].auth.jwt.keys_file", "private key", "PEM public key")
    source, errors = config_errors(_config("auth: {jwt: {keys_file: empty.json}}"))
    find_error(errors, source, "routes[0].auth.jwt.keys_file", "no usable signature key")


def test_api_keys_file_read_with_the_config(write_config, tmp_path):
    (tmp_path / "keys.yaml").write_text(
        f"keys:\n  - {{id: ci, consumer: bots, hash: '{hash_key('k1')}', scopes: [orders:read], "
        "expires: 2030-01-01T00:00:00Z}\n  - {id: old, hash: '" + hash_key("k2") + "', enabled: false}\n")
    config = load(write_config(_config("auth: {api_keys: {file: keys.yaml}, scopes: orders:read}")), env={})
    auth = config.routes[0].auth
    assert auth.scopes == ("orders:read",) and auth.api_keys.header == b"x-api-key"
    ci, old = auth.api_keys.keys
    assert (ci.id, ci.consumer, ci.scopes, ci.enabled) == ("ci", "bots", ("orders:read",), True)
    assert ci.expires == 1893456000.0
    assert (old.consumer, old.enabled) == ("old", False)
    assert "sha256" not in repr(auth)


def test_a_document_not_from_a_file_takes_relative_paths_from_the_given_directory(tmp_path, monkeypatch):
    """PUT /config: the errors name the change ("PUT /config: ..."), while a
    relative path is read from the config file's directory (the master
    resolves it so), not from the process's working directory."""
    import yaml
    from fastgw.config import ConfigError, from_document
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "keys.yaml").write_text(f"keys:\n  - {{id: ci, hash: '{hash_key('k1')}'}}\n")
    monkeypatch.chdir(tmp_path)   # elsewhere than etc/
    document = yaml.safe_load(_config("auth: {api_keys: {file: keys.yaml}}"))
    config = from_document(document, "PUT /config", env={}, directory=str(tmp_path / "etc"))
    assert config.routes[0].auth.api_keys.keys[0].id == "ci"
    try:
        from_document(document, "PUT /config", env={})   # no directory: the source's, here the cwd
    except ConfigError as error:
        [line] = error.errors
        assert line.startswith("PUT /config: routes[0].auth.api_keys.file: ") and "does not exist" in line, line
    else:
        raise AssertionError("keys.yaml was found outside etc/")


def test_api_keys_file_errors_name_the_entry_and_never_echo_a_key(config_errors, find_error, tmp_path):
    (tmp_path / "keys.yaml").write_text(
        "keys:\n  - {id: a, hash: fgw_plain_text_key_123}\n  - {id: a, hash: '" + hash_key("x") +
        "', enabled: nope, expires: someday, scope: [x]}\n")
    source, errors = config_errors(_config("auth: {api_keys: {file: keys.yaml}}"))
    text = "\n".join(errors)
    assert "fgw_plain_text_key_123" not in text
    find_error(errors, source, "keys.yaml: keys[0].hash", "fastgw keys hash")
    find_error(errors, source, "keys.yaml: keys[1].id", "used twice")
    find_error(errors, source, "keys.yaml: keys[1].enabled", "true or false")
    find_error(errors, source, "keys.yaml: keys[1].expires", "expected a date")
    find_error(errors, source, "keys.yaml: keys[1].scope", "unknown key", "scopes")
    source, errors = config_errors(_config("auth: {api_keys: {file: missing.yaml}}"))
    find_error(errors, source, "routes[0].auth.api_keys.file", "does not exist")
    source, errors = config_errors(_config("auth: {scopes: [a]}"))
    find_error(errors, source, "routes[0].auth", "names no credential")


def test_consumer_limits_need_auth(config_errors, find_error):
    source, errors = config_errors(_config("rate_limits: [{key: consumer, rate: 5/s}]"))
    find_error(errors, source, "routes[0].rate_limits[0].key", "without authentication")
    source, errors = config_errors(_config(
        f"auth: {{jwt: {{{JWKS}}}}}\n    rate_limits: [{{key: consumer+client_ip, rate: 5/s}}]"))
    find_error(errors, source, "routes[0].rate_limits[0].key", "count alone")


def test_ip_filter_cors_and_security_headers(write_config):
    config = load(write_config(_config(
        "ip_filter: {allow: [10.0.0.0/8, 'fd00::/8']}\n    cors: {origins: [https://app.test, "
        "'https://*.example.com'], credentials: true, max_age: 600}\n    security_headers: {csp: \"default-src 'self'\", "
        "hsts: ''}",
        "ip_filter: {deny: [192.0.2.1]}\nsecurity_headers: default")), env={})
    api, other = config.routes
    assert [str(n) for n in api.ip_filter.allow] == ["10.0.0.0/8", "fd00::/8"]
    assert [str(n) for n in config.ip_filter.deny] == ["192.0.2.1/32"]
    assert api.cors.origins == ("https://app.test", "https://*.example.com") and api.cors.max_age == 600
    headers = dict(api.security_headers.headers)
    assert b"strict-transport-security" not in headers
    assert headers[b"content-security-policy"] == b"default-src 'self'"
    assert other.security_headers.headers == SECURITY_HEADER_PRESET


def test_edge_errors_name_the_key_path(config_errors, find_error):
    source, errors = config_errors(_config(
        "ip_filter: {allow: [10.0.0.1/8, banana]}\n    cors: {origins: ['*', 'https://a.test/path'], "
        "credentials: true, max_age: -1}\n    security_headers: {preset: paranoid}",
        "security_headers: off"))
    find_error(errors, source, "routes[0].ip_filter.allow[0]", "host bits set", "10.0.0.0/8")
    find_error(errors, source, "routes[0].ip_filter.allow[1]", "not an IP address")
    find_error(errors, source, "routes[0].cors.origins", "is not an origin")
    find_error(errors, source, "routes[0].cors.max_age", "0 or more")
    find_error(errors, source, "routes[0].security_headers.preset", "unknown preset", "default, none")
    find_error(errors, source, "security_headers", "only applies to a route")
    source, errors = config_errors(_config("cors: {origins: ['*'], credentials: true}"))
    find_error(errors, source, "routes[0].cors.origins", "cannot be combined with credentials")


def test_forward_auth_and_discovery(write_config, config_errors, find_error):
    config = load(write_config(_config(
        "forward_auth: {url: http://127.0.0.1:9100/check, copy_headers: [X-User], cache: 30s}\n"
        "    auth: {jwt: {discovery: true, issuer: https://login.example.com}}")), env={})
    forward = config.routes[0].forward_auth
    assert forward.headers == (b"authorization", b"cookie") and forward.copy_headers == (b"x-user",)
    assert (forward.timeout, forward.failure_mode, forward.cache) == (1.0, "closed", 30.0)
    assert config.routes[0].auth.jwt.discovery_url == "https://login.example.com/.well-known/openid-configuration"
    source, errors = config_errors(_config(
        "forward_auth: {url: tcp://x, copy_headers: [Connection], failure_mode: maybe, timeout: 0}\n"
        "    auth: {jwt: {discovery: true}}"))
    find_error(errors, source, "routes[0].forward_auth.url", "http:// or https://")
    find_error(errors, source, "routes[0].forward_auth.copy_headers", "hop-by-hop")
    find_error(errors, source, "routes[0].forward_auth.failure_mode", "closed, open")
    find_error(errors, source, "routes[0].forward_auth.timeout", "")
    find_error(errors, source, "routes[0].auth.jwt.discovery", "needs the issuer")


def test_scopes_per_method_config(write_config, config_errors, find_error):
    config = load(write_config(_config(
        f"auth: {{jwt: {{{JWKS}}}, scopes: {{GET: [r], POST: 'w x', '*': [a]}}}}")), env={})
    auth = config.routes[0].auth
    assert auth.scopes == ("a",) and auth.method_scopes == (("GET", ("r",)), ("POST", ("w", "x")))
    source, errors = config_errors(_config(f"auth: {{jwt: {{{JWKS}}}, scopes: {{GTE: [r], GET: 5}}}}"))
    find_error(errors, source, "routes[0].auth.scopes.GTE", "GTE")
    find_error(errors, source, "routes[0].auth.scopes.GET", "expected a list of scopes")
