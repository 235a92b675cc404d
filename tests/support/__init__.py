"""Helpers for fastgw's integration tests: real processes, real sockets.

- upstream: h11-based origin servers (and a websockets echo server) run in
  threads, recording exactly what fastgw sent them;
- gateway: starts `fastgw run` as a subprocess on a free port;
- client: raw-socket clients whose responses are parsed by h11;
- strict: an independent check of raw head bytes;
- data: deterministic payloads for byte-exact streaming checks.
"""
from .client import (HTTPResponse, RawClient, ReadTimeout, assert_gateway_error, build_request,
                     chunked, http_request)
from .data import MiB, payload_chunks, payload_sha256, wait_until
from .gateway import (Gateway, GatewayStartError, Proxy, cluster, free_port, port_accepts, route,
                      simple_config)
from .upstream import RequestRecord, UpstreamServer, WebSocketEchoServer

__all__ = [
    "Gateway", "GatewayStartError", "HTTPResponse", "Proxy", "simple_config", "MiB", "RawClient", "ReadTimeout",
    "RequestRecord", "UpstreamServer", "WebSocketEchoServer", "assert_gateway_error",
    "build_request", "chunked", "wait_until", "cluster", "free_port", "http_request", "payload_chunks",
    "payload_sha256", "port_accepts", "route",
]
