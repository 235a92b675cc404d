"""The route table: `Config.routes` compiled into the native `Router`.

Matching semantics (hosts, raw-byte paths, priorities, method fallthrough)
are those of `fastgw._native.router`; see its module docstring. Paths in the
config are encoded as UTF-8 and compared with the raw request path, so write
them as they appear on the wire (percent-encoded where clients encode).

Per request the server calls `match()`, then `upstream_path()` on a hit or
`allowed_methods()` on a miss (405 with Allow when non-empty, else 404).
"""
from __future__ import annotations

import re

from fastgw._native.router import EXACT, PREFIX, TEMPLATE, Router
from fastgw.config.model import Config, Route

_KINDS = {"exact": EXACT, "template": TEMPLATE, "prefix": PREFIX}
_PLACEHOLDER = re.compile(rb"\{([^{}/]*)\}")


def _compile_upstream_path(route: Route):
    """A function `(path, params) -> upstream path` for one route.

    A `rewrite_path` replaces the whole path, its `{param}`s filled with the
    values the route's template bound (so `strip_prefix` has no effect then).
    Otherwise `strip_prefix` is removed from the front when the path starts
    with it at a segment boundary, and a leading `/` is kept: strip `/api`
    turns `/api/x` into `/x` and `/api` into `/`; `/apix` is left alone.
    """
    if route.rewrite_path is not None:
        rewrite = route.rewrite_path.encode()
        names = []  # the params the route binds, in the Router's (path) order
        if route.match.kind == "template":
            names = [segment[1:-1] for segment in route.match.path.split("/")
                     if segment.startswith("{") and segment.endswith("}")]
        positions = []

        def index(m: re.Match) -> bytes:
            name = m.group(1).decode()
            if name not in names:
                raise ValueError(f"route {route.name!r}: rewrite_path {route.rewrite_path!r} "
                                 f"uses {{{name}}}, which its path does not bind")
            positions.append(names.index(name))
            return b"%b"

        # `%` is common in paths (percent-encoding): escape it for the formatter.
        template = _PLACEHOLDER.sub(index, rewrite.replace(b"%", b"%%"))
        if not positions:
            return lambda path, params: rewrite
        if len(positions) == 1:
            (at,) = positions
            return lambda path, params: template % (params[at][1],)
        return lambda path, params: template % tuple([params[at][1] for at in positions])

    if route.strip_prefix is not None:
        strip = route.strip_prefix.encode()
        size = len(strip)
        if strip.endswith(b"/"):  # `/api/`: what follows it is already a segment
            def stripped(path: bytes, params) -> bytes:
                if path.startswith(strip):
                    return b"/" + path[size:]
                return path
        else:
            def stripped(path: bytes, params) -> bytes:
                if path.startswith(strip):
                    if len(path) == size:
                        return b"/"
                    if path[size] == 0x2F:  # '/'
                        return path[size:]
                return path
        return stripped

    return lambda path, params: path


class RouteTable:
    """`config.routes` compiled for matching; built once per config load."""

    def __init__(self, config: Config) -> None:
        self.routes = config.routes
        self._router = router = Router()
        self._upstream_paths = {}
        for route in config.routes:
            m = route.match
            kind = m.kind
            path = (m.prefix if kind == "prefix" else m.path).encode()
            host = m.host.encode("ascii") if m.host else None
            methods = (frozenset(method.encode("ascii") for method in m.methods)
                       if m.methods is not None else None)
            try:
                router.add(route, host, _KINDS[kind], path, methods, route.index)
            except ValueError as exc:
                raise ValueError(f"route {route.name!r}: {exc}") from None
            # Keyed by id(): Route hashes every field on each call.
            self._upstream_paths[id(route)] = _compile_upstream_path(route)
        router.freeze()
        # The hot path: the Router's own method, no Python frame in between.
        self.match = router.match

    def match(self, host: bytes | None, method: bytes, path: bytes) -> tuple[Route, tuple | None] | None:
        """`(route, params)` for the request, or None. `path` has no query string;
        `params` is None or `((name, value_bytes), ...)` in path order.

        (Replaced in `__init__` by the Router's bound method; kept for docs.)"""
        return self._router.match(host, method, path)

    def allowed_methods(self, host: bytes | None, path: bytes) -> list[str]:
        """On a miss: sorted methods other routes accept here (405), or [] (404)."""
        return [method.decode("ascii") for method in self._router.allowed_methods(host, path)]

    def upstream_path(self, route: Route, path: bytes, params) -> bytes:
        """The path to send upstream for a `match()` hit: `strip_prefix`, then
        `rewrite_path` with `{param}`s substituted (a rewrite replaces the whole
        path). `path` is without its query string; the caller appends `?query`
        to the result."""
        return self._upstream_paths[id(route)](path, params)

    def candidates(self, host: bytes | None, method: bytes, path: bytes) -> list[tuple[Route, str]]:
        """Every route that would accept this request, in priority order (the
        first is the one `match()` picks), each with why it matches. Slow; for
        `fastgw routes`."""
        out = []
        for route, params, methods in self._router.candidates(host, path):
            if methods is not None and method not in methods:
                continue
            out.append((route, _reason(route, params)))
        return out


def _reason(route: Route, params) -> str:
    m = route.match
    if m.host is None:
        host = "any host"
    elif m.host.startswith("*."):
        host = f"host wildcard {m.host}"
    else:
        host = f"host {m.host}"
    kind = m.kind
    if kind == "prefix":
        path = f"prefix {m.prefix}"
    elif kind == "template":
        bound = ", ".join(f"{name}={value.decode('latin-1')}" for name, value in params or ())
        path = f"template {m.path}" + (f" ({bound})" if bound else "")
    else:
        path = f"exact path {m.path}"
    methods = "any method" if m.methods is None else "methods " + ",".join(m.methods)
    return f"{host}, {path}, {methods}"
