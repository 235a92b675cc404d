"""Metrics of edge security (issue 10), declared from the config and copied
from the stages' plain counters once a second (as observe/policy_metrics.py
does for the traffic policies):

    fastgw_auth_decisions_total{route,result,reason}   authentication and
        authorization decisions: result allowed (reason jwt, api_key) or
        denied (reason: policy/auth.py DENY_REASONS, or ip_denied,
        cors_refused)
    fastgw_auth_jwks_fetches_total{url,result}   JWKS fetches, ok / failed
    fastgw_auth_jwks_stale{url}                  workers whose last fetch failed
                                                 (they serve with the last good keys)
"""
from __future__ import annotations

from fastgw.observe.families import Family
from fastgw.policy.auth import ALLOW_REASONS, DENY_REASONS

EDGE_REASONS = ("ip_denied", "cors_refused")


def _series(config):
    out = []
    global_ip = config.ip_filter is not None
    for route in config.routes:
        auth = route.auth
        if auth is not None and (auth.jwt is not None or auth.api_keys is not None):
            out += [(route.name, "allowed", r) for r in ALLOW_REASONS]
            out += [(route.name, "denied", r) for r in DENY_REASONS]
        if global_ip or route.ip_filter is not None:
            out.append((route.name, "denied", "ip_denied"))
        if route.cors is not None:
            out.append((route.name, "denied", "cors_refused"))
    return out


def _jwks_urls(config):
    urls = set()
    for route in config.routes:
        if route.auth is not None and route.auth.jwt is not None and route.auth.jwt.key_source:
            urls.add(route.auth.jwt.key_source)
    return sorted(urls)


def auth_families(config) -> list[Family]:
    urls = _jwks_urls(config)
    return [
        Family("fastgw_auth_decisions_total", "counter",
               "Edge security decisions by route: allowed (jwt, api_key) or denied, with the reason.",
               labels=("route", "result", "reason"), series=_series(config)),
        Family("fastgw_auth_jwks_fetches_total", "counter", "JWKS fetches by URL and result (ok, failed).",
               labels=("url", "result"), series=[(u, r) for u in urls for r in ("ok", "failed")]),
        Family("fastgw_auth_jwks_stale", "gauge",
               "Workers whose last JWKS fetch failed (they keep the last good keys).",
               labels=("url",), series=[(u,) for u in urls]),
    ]


def auth_samplers(metrics, gateway, counter):
    """Samplers for PolicyMetrics; `counter(name, read, **labels)` adds a delta counter."""
    from fastgw.policy.cors import CorsStage
    from fastgw.policy.ip_filter import IpFilterStage
    samplers = []
    for stage in getattr(gateway, "auth_stages", ()):
        for reason in ALLOW_REASONS:
            counter("fastgw_auth_decisions_total", lambda s=stage, r=reason: s.count("allowed", r),
                    route=stage.route, result="allowed", reason=reason)
        for reason in DENY_REASONS:
            counter("fastgw_auth_decisions_total", lambda s=stage, r=reason: s.count("denied", r),
                    route=stage.route, result="denied", reason=reason)
    for plan in gateway.plans:
        for stage in (plan.stages or ()) if plan is not None else ():
            if type(stage) is IpFilterStage:
                counter("fastgw_auth_decisions_total", lambda s=stage: s.denied,
                        route=stage.route, result="denied", reason="ip_denied")
            elif type(stage) is CorsStage:
                counter("fastgw_auth_decisions_total", lambda s=stage: s.refused,
                        route=stage.route, result="denied", reason="cors_refused")
    for keys in getattr(gateway, "auth_key_sets", {}).values():
        counter("fastgw_auth_jwks_fetches_total", lambda k=keys: k.fetches_ok, url=keys.source, result="ok")
        counter("fastgw_auth_jwks_fetches_total", lambda k=keys: k.fetches_failed, url=keys.source, result="failed")
        gauge = metrics.gauge("fastgw_auth_jwks_stale", url=keys.source)
        samplers.append(lambda k=keys, g=gauge: g.set(1 if (k.stale or not k.loaded) else 0))
    return samplers
