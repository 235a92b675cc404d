"""JWT authentication through the real binary, against a JWKS server written
here (tests/auth/issuer.py) with keys generated here: valid and invalid
tokens, forged identity headers, key rotation while the gateway runs, a
JWKS endpoint down at start and later, scopes, token sources, the
verified-token cache never used past exp, and what metrics and the access
log say."""
from __future__ import annotations

import json
import time
import uuid

import jwt as pyjwt
import pytest
from issuer import AUDIENCE, ISSUER, hs_confused_token, unsigned_token

from support import assert_gateway_error, cluster, http_request, route, wait_until
from support.metrics import enable_dump, scrape


def jwt_section(issuer, **extra) -> dict:
    return {"jwks_url": issuer.url, "issuer": ISSUER, "audience": AUDIENCE,
            "claims_to_headers": {"sub": "X-User-Id"}, **extra}


def config_for(upstream, issuer, *, jwt_extra=None, auth_extra=None, routes=(), **top) -> dict:
    return {
        "clusters": {"app": cluster(upstream.url)},
        "routes": [
            route("api", "app", prefix="/api/", auth={"jwt": jwt_section(issuer, **(jwt_extra or {})),
                                                      **(auth_extra or {})}),
            *routes,
            route("open", "app", prefix="/"),
        ],
        **top,
    }


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def get(gw, path, headers=()):
    return http_request(gw.port, "GET", path, list(headers))


def assert_401(resp):
    err = assert_gateway_error(resp, 401, "invalid_token")
    assert 'error="invalid_token"' in (resp.header("www-authenticate") or ""), resp.describe()
    assert resp.header("www-authenticate").startswith("Bearer ")
    return err


def log_lines(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.timeout(60)
def test_valid_token_passes_and_sub_goes_upstream_replacing_forged_copies(upstream, issuer, gateway_factory):
    gw = gateway_factory(config_for(upstream, issuer))
    token = issuer.token(sub="alice")
    resp = get(gw, "/api/x", bearer(token) + [("X-User-Id", "admin"), ("x-user-id", "root")])
    assert resp.status == 200, resp.describe()
    [seen] = upstream.requests
    assert seen.header_all("x-user-id") == ["alice"]
    # A token without sub: the forged header is still removed, none is added.
    resp = get(gw, "/api/y", bearer(issuer.token(omit=("sub",))) + [("X-User-Id", "admin")])
    assert resp.status == 200, resp.describe()
    assert upstream.requests[-1].header_all("x-user-id") == []
    # The same token again is served (from the cache) with the same identity.
    assert get(gw, "/api/z", bearer(token)).status == 200
    assert upstream.requests[-1].header_all("x-user-id") == ["alice"]
    # A route without auth is untouched.
    assert get(gw, "/other", [("X-User-Id", "admin")]).status == 200
    assert upstream.requests[-1].header_all("x-user-id") == ["admin"]


@pytest.mark.timeout(60)
def test_invalid_tokens_get_401_with_the_reason_in_the_access_log(upstream, issuer, gateway_factory, tmp_path):
    log_path = tmp_path / "access.log"
    gw = gateway_factory(config_for(upstream, issuer, jwt_extra={"leeway": 0, "required_claims": ["sub"]},
                                    access_log={"path": str(log_path), "flush_interval": "100ms"}))
    key = issuer.current
    cases = {
        "missing": [],
        "malformed": bearer("not.a.token"),
        "expired": bearer(issuer.token(lifetime=-60)),
        "not_yet_valid": bearer(issuer.token(nbf=int(time.time()) + 3600)),
        "wrong_issuer": bearer(issuer.token(iss="https://evil.test")),
        "wrong_audience": bearer(issuer.token(aud="another-api")),
        "missing_claim": bearer(issuer.token(omit=("sub",))),
        "algorithm_not_allowed": bearer(unsigned_token()),
        "bad_signature": bearer(issuer.token()[:-6] + "AAAAAA"),
    }
    # HS256 signed with the issuer's own public key as the secret (RS/HS confusion).
    cases["hs_confusion"] = bearer(hs_confused_token(key.public_pem(), kid=key.kid))
    for name, headers in cases.items():
        resp = get(gw, f"/api/{name}", headers)
        assert resp.status == 401, (name, resp.describe())
        assert_401(resp)
    assert upstream.requests == []
    assert wait_until(lambda: len(log_lines(log_path)) >= len(cases), 10)
    reasons = {line["path"].rsplit("/", 1)[1]: line.get("auth") for line in log_lines(log_path)}
    expected = {name: name for name in cases}
    expected["hs_confusion"] = "algorithm_not_allowed"
    assert reasons == expected
    text = log_path.read_text()
    for headers in cases.values():
        for _, value in headers:
            token = value.removeprefix("Bearer ")
            assert token not in text or len(token) < 20  # never the token


@pytest.mark.timeout(60)
def test_hs_route_with_a_secret_refuses_rs_tokens_and_the_confused_one(upstream, gateway_factory, tmp_path,
                                                                       issuer):
    secret = b"s" * 40
    (tmp_path / "hs.secret").write_bytes(secret)
    gw = gateway_factory({
        "clusters": {"app": cluster(upstream.url)},
        "routes": [route("hs", "app", prefix="/", auth={"jwt": {
            "secret_file": str(tmp_path / "hs.secret"), "algorithms": ["HS256"], "issuer": ISSUER}})],
    })
    good = pyjwt.encode({"iss": ISSUER, "sub": "svc", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    assert get(gw, "/ok", bearer(good)).status == 200
    assert_401(get(gw, "/rs", bearer(issuer.token())))
    assert_401(get(gw, "/confused", bearer(hs_confused_token(issuer.current.public_pem()))))
    assert_401(get(gw, "/none", bearer(unsigned_token())))


@pytest.mark.timeout(60)
def test_key_rotation_is_picked_up_and_junk_kids_refetch_at_most_once(upstream, issuer, gateway_factory):
    gw = gateway_factory(config_for(upstream, issuer, jwt_extra={"kid_refetch_interval": "1h"}))
    old = issuer.token()
    assert get(gw, "/api/a", bearer(old)).status == 200
    before = issuer.fetches
    new_key = issuer.rotate("EC")             # the issuer rotates to an ES256 key
    resp = get(gw, "/api/b", bearer(issuer.token(new_key)))
    assert resp.status == 200, resp.describe()
    assert issuer.fetches == before + 1       # one refetch for the unknown kid
    for _ in range(20):                      # a flood of made-up kids: no more fetches this interval
        forged = issuer.token(headers={"kid": uuid.uuid4().hex})
        assert_401(get(gw, "/api/junk", bearer(forged)))
    assert issuer.fetches == before + 1
    assert get(gw, "/api/c", bearer(old)).status == 200  # the old key is still published


@pytest.mark.timeout(60)
def test_jwks_down_later_keeps_the_last_good_keys(upstream, issuer, gateway_factory, monkeypatch, tmp_path):
    dump = enable_dump(monkeypatch, tmp_path)
    gw = gateway_factory(config_for(upstream, issuer, jwt_extra={"kid_refetch_interval": "100ms"},
                                    metrics={"enabled": True}))
    token = issuer.token(sub="bob")
    assert get(gw, "/api/a", bearer(token)).status == 200
    issuer.down = True
    before = issuer.fetches
    # An unknown kid makes the gateway refetch: the fetch fails.
    assert_401(get(gw, "/api/x", bearer(issuer.token(headers={"kid": "unknown"}))))
    assert issuer.fetches == before + 1
    fresh = issuer.token(sub="carol")         # first seen now: verified with the kept keys
    assert get(gw, "/api/b", bearer(fresh)).status == 200
    assert upstream.requests[-1].header("x-user-id") == "carol"

    def stale():
        samples = scrape(gw, dump)
        assert samples.get_value("fastgw_auth_jwks_stale", url=issuer.url) == 1
        assert samples.get_value("fastgw_auth_jwks_fetches_total", url=issuer.url, result="failed") >= 1
        assert samples.get_value("fastgw_auth_decisions_total", route="api", result="allowed", reason="jwt") >= 2
        assert samples.get_value("fastgw_auth_decisions_total", route="api", result="denied",
                                 reason="unknown_kid") >= 1
        return True
    assert wait_until(lambda: _passes(stale), 10), scrape(gw, dump)
    health = http_request(gw.admin_port, "GET", "/health")
    assert health.status == 200, health.describe()   # degraded, still serving
    [jwks] = [c for c in health.json()["components"] if c["kind"] == "jwks"]
    assert jwks["name"] == issuer.url and jwks["state"] == "degraded" and jwks["keys"] == 1
    assert "503" in jwks["error"]
    assert health.json()["status"] == "degraded"


def _passes(check) -> bool:
    try:
        return check()
    except AssertionError:
        return False


@pytest.mark.timeout(60)
def test_jwks_down_at_start_answers_503_then_serves_once_it_is_up(upstream, issuer, gateway_factory):
    issuer.down = True
    gw = gateway_factory(config_for(upstream, issuer, jwt_extra={"jwks_min_refresh": "200ms"}))
    token = issuer.token()
    resp = get(gw, "/api/a", bearer(token))
    err = assert_gateway_error(resp, 503, "auth_unavailable")
    assert "keys" in err["message"]
    [jwks] = [c for c in http_request(gw.admin_port, "GET", "/health").json()["components"] if c["kind"] == "jwks"]
    assert jwks["state"] == "unhealthy" and jwks["keys"] == 0
    issuer.down = False
    assert wait_until(lambda: get(gw, "/api/b", bearer(token)).status == 200, 10)
    [jwks] = [c for c in http_request(gw.admin_port, "GET", "/health").json()["components"] if c["kind"] == "jwks"]
    assert jwks["state"] == "healthy"


@pytest.mark.timeout(60)
def test_scopes_all_and_any_and_roles_claim(upstream, issuer, gateway_factory):
    admin = route("admin", "app", prefix="/admin/", auth={"jwt": jwt_section(issuer), "scopes": ["admin"]})
    both = route("both", "app", prefix="/both/",
                 auth={"jwt": jwt_section(issuer), "scopes": ["orders:read", "orders:write"]})
    anyof = route("any", "app", prefix="/any/",
                  auth={"jwt": jwt_section(issuer, roles_claim="roles"), "scopes": ["ops", "admin"],
                        "scopes_mode": "any"})
    gw = gateway_factory(config_for(upstream, issuer, routes=[admin, both, anyof]))
    reader = issuer.token(scope="orders:read")
    resp = get(gw, "/admin/x", bearer(reader))
    assert_gateway_error(resp, 403, "insufficient_scope")
    assert 'error="insufficient_scope"' in resp.header("www-authenticate")
    assert get(gw, "/admin/x", bearer(issuer.token(scope="read admin"))).status == 200
    assert get(gw, "/both/x", bearer(reader)).status == 403
    assert get(gw, "/both/x", bearer(issuer.token(scope="orders:write orders:read"))).status == 200
    assert get(gw, "/both/x", bearer(issuer.token(scp=["orders:write", "orders:read"]))).status == 200
    assert get(gw, "/any/x", bearer(issuer.token(roles=["ops"]))).status == 200
    assert get(gw, "/any/x", bearer(issuer.token(roles=["dev"]))).status == 403
    assert get(gw, "/any/x", bearer(issuer.token(scope="admin"))).status == 200


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", [{"header": "X-Token"}, {"cookie": "session"}, {"query": "jwt"}])
def test_token_from_a_header_cookie_or_query(upstream, issuer, gateway_factory, source, tmp_path):
    log_path = tmp_path / "access.log"
    gw = gateway_factory(config_for(upstream, issuer, jwt_extra={"token": source}, access_log={
        "path": str(log_path), "flush_interval": "100ms", "headers": ["X-Token"]}))
    token = issuer.token()
    kind, name = next(iter(source.items()))
    if kind == "header":
        ok = get(gw, "/api/a", [(name, token)])
    elif kind == "cookie":
        ok = get(gw, "/api/a", [("Cookie", f"theme=dark; {name}={token}")])
    else:
        ok = get(gw, f"/api/a?x=1&{name}={token}")
    assert ok.status == 200, ok.describe()
    assert_401(get(gw, "/api/b", bearer(token)))  # the Authorization header is not where it is looked for
    assert wait_until(lambda: log_path.exists() and len(log_path.read_text().splitlines()) >= 2, 10)
    assert token not in log_path.read_text()      # the configured source is redacted in the log


@pytest.mark.timeout(60)
def test_a_cached_token_is_never_used_past_its_exp(upstream, issuer, gateway_factory):
    gw = gateway_factory(config_for(upstream, issuer, jwt_extra={"leeway": 0}))
    token = issuer.token(lifetime=2)
    assert get(gw, "/api/a", bearer(token)).status == 200
    exp = pyjwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, exp - time.time()) + 0.2)
    assert_401(get(gw, "/api/b", bearer(token)))


@pytest.mark.timeout(60)
def test_global_auth_default_and_route_opt_out(upstream, issuer, gateway_factory):
    gw = gateway_factory({
        "clusters": {"app": cluster(upstream.url)},
        "auth": {"jwt": jwt_section(issuer)},
        "routes": [route("health", "app", prefix="/health", auth=False), route("all", "app", prefix="/")],
    })
    assert get(gw, "/health").status == 200
    assert_401(get(gw, "/anything"))
    assert get(gw, "/anything", bearer(issuer.token())).status == 200


@pytest.mark.timeout(60)
def test_keys_file_pem_and_jwks(upstream, issuer, gateway_factory, tmp_path):
    (tmp_path / "key.pem").write_bytes(issuer.current.public_pem())
    (tmp_path / "jwks.json").write_bytes(issuer.jwks())
    gw = gateway_factory({
        "clusters": {"app": cluster(upstream.url)},
        "routes": [route("pem", "app", prefix="/pem/", auth={"jwt": {"keys_file": "key.pem", "issuer": ISSUER,
                                                                       "audience": AUDIENCE}}),
                   route("jwks", "app", prefix="/jwks/", auth={"jwt": {"keys_file": "jwks.json",
                                                                         "audience": AUDIENCE}})],
    })
    token = issuer.token()
    assert get(gw, "/pem/a", bearer(token)).status == 200
    assert get(gw, "/jwks/a", bearer(token)).status == 200
    other = issuer.rotate()
    assert_401(get(gw, "/pem/b", bearer(issuer.token(other))))
    assert_401(get(gw, "/jwks/b", bearer(issuer.token(other))))


@pytest.mark.timeout(60)
def test_a_withdrawn_key_stops_verifying_even_cached_tokens(upstream, issuer, gateway_factory):
    gw = gateway_factory(config_for(upstream, issuer, jwt_extra={"kid_refetch_interval": "100ms"}))
    old = issuer.token()
    assert get(gw, "/api/a", bearer(old)).status == 200       # verified and cached
    new_key = issuer.rotate()
    issuer.drop("k1")                                         # the issuer withdraws the old key
    time.sleep(0.15)
    assert get(gw, "/api/b", bearer(issuer.token(new_key))).status == 200   # unknown kid: refetched
    assert_401(get(gw, "/api/c", bearer(old)))                # the cached token went with its key


@pytest.mark.timeout(60)
def test_required_claim_values_and_an_hs_secret_from_the_environment(upstream, gateway_factory, monkeypatch):
    secret = "e" * 48
    monkeypatch.setenv("FGW_TEST_JWT_SECRET", secret)
    gw = gateway_factory({
        "clusters": {"app": cluster(upstream.url)},
        "routes": [route("hs", "app", prefix="/", auth={"jwt": {
            "secret_env": "FGW_TEST_JWT_SECRET", "algorithms": ["HS384"], "claims": {"tenant": "acme"},
            "cache_size": 0}})],
    })
    exp = int(time.time()) + 60
    good = pyjwt.encode({"tenant": "acme", "exp": exp}, secret, algorithm="HS384")
    other = pyjwt.encode({"tenant": "globex", "exp": exp}, secret, algorithm="HS384")
    hs256 = pyjwt.encode({"tenant": "acme", "exp": exp}, secret, algorithm="HS256")
    assert get(gw, "/a", bearer(good)).status == 200
    assert get(gw, "/a", bearer(good)).status == 200          # cache_size 0: verified again, same answer
    assert_401(get(gw, "/b", bearer(other)))
    assert_401(get(gw, "/c", bearer(hs256)))                  # only the configured algorithm


@pytest.mark.timeout(60)
def test_refresh_follows_the_cache_lifetime_within_its_bounds(upstream, gateway_factory):
    from issuer import Issuer
    no_age, long_age = Issuer(max_age=None).start(), Issuer(max_age=3600).start()
    try:
        gw = gateway_factory({
            "clusters": {"app": cluster(upstream.url)},
            "routes": [
                route("a", "app", prefix="/a/", auth={"jwt": {"jwks_url": no_age.url, "jwks_refresh": "300ms",
                                                               "jwks_min_refresh": "100ms"}}),
                route("b", "app", prefix="/b/", auth={"jwt": {"jwks_url": long_age.url,
                                                               "jwks_max_refresh": "300ms",
                                                               "jwks_min_refresh": "100ms"}}),
            ],
        })
        assert get(gw, "/a/x", bearer(no_age.token(aud=None, omit=("aud",)))).status in (200, 503)
        # No max-age: every jwks_refresh; max-age 3600 lowered to jwks_max_refresh.
        assert wait_until(lambda: no_age.fetches >= 4 and long_age.fetches >= 4, 10), \
            (no_age.fetches, long_age.fetches)
        assert no_age.fetches < 40 and long_age.fetches < 40   # bounded, not a busy loop
    finally:
        no_age.stop()
        long_age.stop()


@pytest.mark.timeout(60)
def test_a_jwks_that_never_answers_is_given_up_after_jwks_timeout(upstream, gateway_factory):
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)                       # accepts (the kernel does), never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/jwks.json"
    try:
        gw = gateway_factory({
            "clusters": {"app": cluster(upstream.url)},
            "routes": [route("a", "app", prefix="/", auth={"jwt": {"jwks_url": url, "jwks_timeout": "300ms",
                                                                    "jwks_min_refresh": "5s"}})],
        })
        started = time.monotonic()
        resp = http_request(gw.port, "GET", "/x", [("Authorization", "Bearer a.b.c")], timeout=10)
        assert resp.status in (401, 503), resp.describe()
        assert time.monotonic() - started < 5
        assert wait_until(lambda: "no answer within 0.3s" in (
            [c for c in http_request(gw.admin_port, "GET", "/health").json()["components"]
             if c["kind"] == "jwks"][0].get("error") or ""), 5)
    finally:
        silent.close()


@pytest.mark.timeout(60)
def test_oidc_discovery_from_the_issuer_or_a_url(upstream, issuer, gateway_factory):
    from issuer import DISCOVERY_PATH, Issuer
    local = Issuer().start()                    # discovery: true reads {issuer}/.well-known/...
    local.discovery_issuer = local.base
    liar = Issuer().start()                     # its document names another issuer
    liar.discovery_issuer = "https://someone-else.test"
    try:
        gw = gateway_factory({
            "clusters": {"app": cluster(upstream.url)},
            "routes": [
                route("url", "app", prefix="/url/", auth={"jwt": {"discovery": issuer.base + DISCOVERY_PATH,
                                                                   "issuer": ISSUER, "audience": AUDIENCE}}),
                route("iss", "app", prefix="/iss/", auth={"jwt": {"discovery": True, "issuer": local.base,
                                                                   "audience": AUDIENCE}}),
                route("liar", "app", prefix="/liar/", auth={"jwt": {"discovery": liar.base + DISCOVERY_PATH,
                                                                     "issuer": ISSUER, "audience": AUDIENCE}}),
            ],
        })
        assert wait_until(lambda: get(gw, "/url/a", bearer(issuer.token())).status == 200, 10)
        assert get(gw, "/iss/a", bearer(local.token(iss=local.base))).status == 200
        assert_401(get(gw, "/iss/b", bearer(local.token())))   # iss https://issuer.test is not this issuer
        assert_gateway_error(get(gw, "/liar/a", bearer(liar.token())), 503, "auth_unavailable")
        components = {c["name"]: c for c in http_request(gw.admin_port, "GET", "/health").json()["components"]
                      if c["kind"] == "jwks"}
        assert components[issuer.base + DISCOVERY_PATH]["state"] == "healthy"
        lied = components[liar.base + DISCOVERY_PATH]
        assert lied["state"] == "unhealthy" and "someone-else" in lied["error"]
    finally:
        local.stop()
        liar.stop()


@pytest.mark.timeout(60)
def test_a_per_user_limit_keyed_by_the_token_sub(upstream, issuer, gateway_factory):
    limited = route("limited", "app", prefix="/limited/", auth={"jwt": jwt_section(issuer)},
                    rate_limits=[{"key": "consumer", "rate": "2/m", "burst": 2}])
    gw = gateway_factory(config_for(upstream, issuer, routes=[limited]))
    alice, bob = issuer.token(sub="alice"), issuer.token(sub="bob")
    assert [get(gw, "/limited/a", bearer(alice)).status for _ in range(2)] == [200, 200]
    refused = get(gw, "/limited/a", bearer(alice))
    assert_gateway_error(refused, 429, "rate_limited")
    assert refused.header("x-ratelimit-type") == "consumer"
    assert get(gw, "/limited/a", bearer(bob)).status == 200
    # Tokens without sub share one counter: none escapes the limit.
    nobody = [issuer.token(omit=("sub",), jti=str(i)) for i in range(3)]
    assert [get(gw, "/limited/b", bearer(t)).status for t in nobody] == [200, 200, 429]


@pytest.mark.timeout(60)
def test_scopes_per_method(upstream, issuer, gateway_factory):
    orders = route("orders", "app", prefix="/orders/", auth={"jwt": jwt_section(issuer), "scopes": {
        "GET": ["orders:read"], "POST": ["orders:write"], "*": ["orders:admin"]}})
    gw = gateway_factory(config_for(upstream, issuer, routes=[orders]))
    reader = bearer(issuer.token(scope="orders:read"))
    writer = bearer(issuer.token(scope="orders:write"))
    assert get(gw, "/orders/1", reader).status == 200
    resp = http_request(gw.port, "POST", "/orders/1", reader, body=b"{}")
    assert_gateway_error(resp, 403, "insufficient_scope")
    assert 'scope="orders:write"' in resp.header("www-authenticate")
    assert http_request(gw.port, "POST", "/orders/1", writer, body=b"{}").status == 200
    assert http_request(gw.port, "DELETE", "/orders/1", writer).status == 403       # "*": the others
    assert http_request(gw.port, "DELETE", "/orders/1", bearer(issuer.token(scope="orders:admin"))).status == 200


@pytest.mark.timeout(60)
def test_two_workers_each_keep_their_keys_fresh(upstream, issuer, gateway_factory):
    gw = gateway_factory(config_for(upstream, issuer, jwt_extra={"kid_refetch_interval": "1h"}), workers=2)
    assert wait_until(lambda: issuer.fetches >= 2, 10)         # one first fetch per worker
    start = issuer.fetches
    key = issuer.rotate()
    token = issuer.token(key, sub="dora")
    statuses = [get(gw, f"/api/{i}", bearer(token)).status for i in range(12)]   # a new connection each
    assert statuses == [200] * 12
    assert issuer.fetches - start <= 2                         # at most one refetch per worker
    assert {r.header("x-user-id") for r in upstream.requests} == {"dora"}
