"""JSON views of the running config for GET /config and GET /routes.

Built from the frozen `Config` the answering worker runs (the current
generation's), never from the file on disk, so what they show is what
serves.
"""
from __future__ import annotations

import dataclasses
from ipaddress import IPv4Network, IPv6Network

from fastgw.admin.redact import REDACTED, is_secret_key, redact, redact_header_pairs
from fastgw.config.model import Config, HeaderOps, Route
from fastgw.config.schema import format_address


def _plain(value):
    """dataclasses -> dicts, bytes -> text, networks -> text."""
    if isinstance(value, HeaderOps):
        return header_ops(value)
    if dataclasses.is_dataclass(value):
        # Field names are ours, so a field that names a secret is one.
        return {f.name: (REDACTED if is_secret_key(f.name) and getattr(value, f.name) not in (None, "")
                         else _plain(getattr(value, f.name)))
                for f in dataclasses.fields(value) if f.metadata.get("view", True)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (IPv4Network, IPv6Network)):
        return str(value)
    return value


def header_ops(ops: HeaderOps) -> dict:
    return {"add": redact_header_pairs(ops.add), "set": redact_header_pairs(ops.set),
            "remove": [name.decode("latin-1") for name in ops.remove]}


def config_view(config: Config) -> dict:
    view = _plain(config)
    admin = view["admin"]
    admin["address"] = format_address(config.admin.host, config.admin.port)
    del admin["host"], admin["port"]
    admin["token"] = REDACTED if config.admin.token else None
    return redact(view)


def route_view(config: Config, route: Route) -> dict:
    match = route.match
    timeouts = config.route_timeouts(route)
    view = {
        "name": route.name,
        "index": route.index,
        "match": {"host": match.host, "kind": match.kind,
                  ("prefix" if match.prefix is not None else "path"): match.prefix or match.path,
                  "methods": list(match.methods) if match.methods else None},
        "cluster": route.cluster,
        "strip_prefix": route.strip_prefix,
        "rewrite_path": route.rewrite_path,
        "request_headers": header_ops(route.request_headers),
        "response_headers": header_ops(route.response_headers),
        "timeouts": _plain(timeouts),
        "timeouts_from": "route" if route.timeouts is not None else "cluster",
        "rate_limits": [{"key": limit.key_text, "rate": f"{limit.requests:g}/{limit.per:g}s",
                         "burst": limit.burst, "algorithm": limit.algorithm, "scope": limit.scope}
                        for limit in route.rate_limits],
    }
    # Policies added to routes later (retries, ...) show up as configured.
    for f in dataclasses.fields(route):
        if f.name not in view and f.name != "timeouts":
            view[f.name] = _plain(getattr(route, f.name))
    return redact(view)


def routes_view(config: Config) -> list[dict]:
    return [route_view(config, route) for route in config.routes]
