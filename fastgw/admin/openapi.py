"""The admin API's OpenAPI document as this gateway serves it.

fastgw/admin/openapi.json is written once for every deployment; served as
it is, it would name the default address whatever `admin.address` is, and
declare bearer auth on endpoints that take none when no token is set (a
schema-driven client then expects 401s that never come). The document is
adjusted to the running config instead:

- `servers`: the admin listener's own address (a wildcard address, which a
  client can't connect to, is replaced by the Host the request came with);
- without a token: no security requirement, no 401 answers and no
  security scheme, as the listener behaves.
"""
from __future__ import annotations

import copy
from importlib import resources

import orjson

from fastgw.config.schema import format_address

_WILDCARDS = ("0.0.0.0", "::", "")
_STATIC: dict | None = None


def static_document() -> dict:
    """openapi.json as shipped (read once)."""
    global _STATIC
    if _STATIC is None:
        _STATIC = orjson.loads(resources.files("fastgw.admin").joinpath("openapi.json").read_bytes())
    return _STATIC


def served_document(admin, request_host: bytes | None = None) -> dict:
    """The document for `admin` (the config's AdminSettings)."""
    doc = copy.deepcopy(static_document())
    address = format_address(admin.host, admin.port)
    if admin.host in _WILDCARDS and request_host:
        address = request_host.decode("latin-1")
    doc["servers"] = [{"url": f"http://{address}", "description": "this gateway's admin listener"}]
    if admin.token is None:
        doc.get("components", {}).pop("securitySchemes", None)
        doc.pop("security", None)
        for operations in doc["paths"].values():
            for operation in operations.values():
                operation.pop("security", None)
                operation.get("responses", {}).pop("401", None)
    return doc
