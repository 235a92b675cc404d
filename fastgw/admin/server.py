"""The admin listener's HTTP handler, run by every worker (see __init__.py
for why there). A small keep-alive HTTP/1.1 server on httptools, one request
at a time per connection, JSON answers; nothing here is on the proxy path.

Adding an endpoint is one entry in `ENDPOINTS` naming an `AdminServer`
method `async def handler(self, request) -> Reply` (and its description in
openapi.json; tests/integration/test_admin_api.py checks the two match), e.g.

    ("GET", "/metrics"): ("metrics", False),
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable
from urllib.parse import unquote

import httptools
import orjson

from fastgw.admin.changes import ConfigChanges
from fastgw.admin.document import redact_document
from fastgw.admin.health import EndpointProber, health, readiness
from fastgw.admin.openapi import served_document
from fastgw.admin.snapshot import aggregate
from fastgw.admin.views import config_view, routes_view
from fastgw.observe.metrics import CONTENT_TYPE, render_prometheus

log = logging.getLogger("fastgw")

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024   # PUT /config takes the whole config; other bodies are read and dropped
IDLE_TIMEOUT = 60.0
# POST /reload waits this long for the master's answer: the new workers' start
# (master.READY_TIMEOUT) and then some.
RELOAD_WAIT = 30.0
RELOAD_POLL = 0.02
JSON = b"application/json"


@dataclass
class Reply:
    status: int
    body: object                              # JSON-able, or bytes sent as they are
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = JSON                # e.g. b"text/plain; version=0.0.4" for /metrics


@dataclass
class Request:
    method: str
    path: str
    headers: dict[bytes, bytes]
    query: str = ""
    body: bytes = b""
    peer: str | None = None
    params: dict[str, str] = field(default_factory=dict)   # from a templated path: {name}


@dataclass
class Endpoint:
    handler: Callable[[Request], Awaitable[Reply]]
    open: bool = False  # True: answered without the token (probes)


# (method, path) -> (handler method, answered without the token)
ENDPOINTS = {
    ("GET", "/livez"): ("livez", True),
    ("GET", "/readyz"): ("readyz", True),
    ("GET", "/health"): ("health", True),
    ("GET", "/config"): ("show_config", False),
    ("GET", "/routes"): ("show_routes", False),
    ("GET", "/clusters"): ("show_clusters", False),
    ("GET", "/openapi.json"): ("openapi", False),
    ("GET", "/metrics"): ("metrics", False),
    ("POST", "/reload"): ("reload", False),
    ("POST", "/drain"): ("drain_gateway", False),
    ("PUT", "/config"): ("put_config", False),
    ("PATCH", "/config/routes/{name}"): ("patch_route", False),
    ("PATCH", "/config/clusters/{name}"): ("patch_cluster", False),
    ("GET", "/audit"): ("show_audit", False),
}


def error_reply(status: int, code: str, message: str, **extra) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message, **extra}})


class AdminServer:
    def __init__(self, worker):
        self.worker = worker
        self.config = worker.config
        self.board = worker.board
        self.loop = worker.loop
        token = self.config.admin.token
        self.token = token.encode() if token else None
        self.prober = EndpointProber(self.loop)
        self.connections: set[AdminConnection] = set()
        self.routes: dict[tuple[str, str], Endpoint] = {
            key: Endpoint(getattr(self, name), open=is_open) for key, (name, is_open) in ENDPOINTS.items()}
        self.changes = ConfigChanges(self)

    def connection(self) -> AdminConnection:
        return AdminConnection(self)

    # -- dispatch -------------------------------------------------------------------
    def _match(self, request: Request) -> Endpoint | None:
        """The endpoint for the method and path; a templated path's values
        (`/config/routes/{name}`) go to request.params."""
        endpoint = self.routes.get((request.method, request.path))
        if endpoint is not None:
            return endpoint
        for (method, template), candidate in self.routes.items():
            params = _fill(template, request.path) if method == request.method else None
            if params is not None:
                request.params = params
                return candidate
        return None

    async def dispatch(self, request: Request) -> Reply:
        endpoint = self._match(request)
        if endpoint is None:
            allowed = sorted(m for m, p in self.routes if p == request.path or _fill(p, request.path))
            if allowed:
                reply = error_reply(405, "method_not_allowed", f"{request.path} takes {', '.join(allowed)}")
                reply.headers.append((b"Allow", ", ".join(allowed).encode()))
                return reply
            return error_reply(404, "not_found", f"no admin endpoint {request.path}; see /openapi.json")
        if not endpoint.open and not self.authorized(request):
            reply = error_reply(401, "unauthorized", "a valid admin token is required: "
                                                     "send 'Authorization: Bearer <token>'")
            reply.headers.append((b"WWW-Authenticate", b'Bearer realm="fastgw admin"'))
            return reply
        return await endpoint.handler(request)

    def authorized(self, request: Request) -> bool:
        if self.token is None:
            return True  # loopback only (the config refuses a wider address without a token)
        scheme, _, given = request.headers.get(b"authorization", b"").partition(b" ")
        # Constant time: how much of a wrong token matched must not show in the timing.
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)

    # -- status ---------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self.worker.generation

    def draining(self) -> bool:
        return self.worker.mode is not None or self.board.header().draining

    def clusters(self) -> list[dict]:
        """Every worker of this generation, this one's figures fresh."""
        self.worker.publish()
        snapshots = [s.snapshot for s in self.board.slots()
                     if s.generation == self.generation and s.snapshot and "clusters" in s.snapshot]
        return aggregate(self.config, snapshots)

    async def livez(self, request: Request) -> Reply:
        return Reply(200, {"status": "alive", "pid": self.worker.pid, "worker": self.worker.index,
                           "generation": self.generation})

    async def readyz(self, request: Request) -> Reply:
        reasons = await readiness(self.config, self.clusters(), self.prober, self.draining())
        if reasons:
            return Reply(503, {"status": "not_ready", "reasons": reasons, "generation": self.generation})
        return Reply(200, {"status": "ready", "generation": self.generation})

    async def health(self, request: Request) -> Reply:
        status, body = await health(self.config, self.clusters(), self.prober, self.draining(),
                                    self.worker.gateway.redis,
                                    tuple(getattr(self.worker.gateway, "auth_key_sets", {}).values()))
        return Reply(status, {**body, "generation": self.generation})

    async def show_config(self, request: Request) -> Reply:
        # `document`: the declarative config as written (redacted), which
        # PUT /config takes back; `config`: everything in effect, defaults included.
        document = redact_document(self.config.document) if self.config.document is not None else None
        return Reply(200, {"generation": self.generation, "config": config_view(self.config), "document": document})

    async def show_routes(self, request: Request) -> Reply:
        return Reply(200, {"generation": self.generation, "routes": routes_view(self.config)})

    async def show_clusters(self, request: Request) -> Reply:
        clusters = self.clusters()
        workers = sum(1 for s in self.board.slots() if s.generation == self.generation)
        return Reply(200, {"generation": self.generation, "workers": workers, "clusters": clusters})

    async def metrics(self, request: Request) -> Reply:
        """Prometheus text: the shared table summed over every process
        (fastgw/observe/metrics.py), then the reload figures from the
        status board (the master's, so they survive every generation)."""
        process_metrics = self.worker.gateway.process_metrics
        if process_metrics is None:
            return error_reply(404, "metrics_off", "metrics are off (metrics.enabled: false)")
        text = render_prometheus(process_metrics.shared) + reload_metrics(self.board.header())
        return Reply(200, text, content_type=CONTENT_TYPE.encode())

    async def openapi(self, request: Request) -> Reply:
        return Reply(200, served_document(self.config.admin, request.headers.get(b"host")))

    # -- control --------------------------------------------------------------------
    async def request_reload(self) -> dict | None:
        """Ask the master to reload (SIGHUP) and wait until it has: the
        master counts reloads started and done on the board, so this waits
        for one that started after the request. Its result, or None when
        the master did not finish within RELOAD_WAIT."""
        target = self.board.header().reloads_started + 1
        os.kill(self.worker.master_pid, signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_WAIT
        while True:
            header = self.board.header()
            if header.reloads_done >= target:
                return header.last_result or {}
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(RELOAD_POLL)

    async def reload(self, request: Request) -> Reply:
        if self.board.header().draining:
            return error_reply(503, "draining", "the gateway is draining; it does not reload")
        result = await self.request_reload()
        if result is None:
            return error_reply(504, "reload_timeout", f"the master did not finish the reload within "
                                                      f"{RELOAD_WAIT:g}s; see its log")
        if result.get("ok"):
            return Reply(200, {"status": "reloaded", "generation": result["generation"]})
        code = result.get("code", "reload_failed")
        errors = result.get("errors", [])
        message = (f"the new config is invalid ({len(errors)} error(s)); the running config is unchanged"
                   if code == "invalid_config" else
                   "the reload failed; the running config is unchanged")
        return error_reply(400 if code in ("invalid_config", "reload_unavailable") else 500, code, message,
                           errors=errors, generation=result.get("generation"))

    # -- config changes (fastgw/admin/changes.py) ----------------------------------------
    async def put_config(self, request: Request) -> Reply:
        return await self.changes.put_config(request)

    async def patch_route(self, request: Request) -> Reply:
        return await self.changes.patch_entry(request, "routes", request.params["name"])

    async def patch_cluster(self, request: Request) -> Reply:
        return await self.changes.patch_entry(request, "clusters", request.params["name"])

    async def show_audit(self, request: Request) -> Reply:
        return await self.changes.show_audit(request)

    @staticmethod
    def reply(status: int, body: object) -> Reply:
        return Reply(status, body)

    @staticmethod
    def error(status: int, code: str, message: str, **extra) -> Reply:
        return error_reply(status, code, message, **extra)

    async def drain_gateway(self, request: Request) -> Reply:
        """SIGTERM to the master, once this answer is on its way."""
        settings = self.config.server
        self.loop.call_soon(os.kill, self.worker.master_pid, signal.SIGTERM)
        return Reply(202, {"status": "draining", "drain_delay": settings.drain_delay,
                           "drain_timeout": settings.drain_timeout})

    # -- drain ----------------------------------------------------------------------
    async def drain(self, gateway):
        """Idle admin connections close now; one in the middle of a request
        (a POST /reload waiting for its result) finishes first, until the
        worker's drain deadline."""
        while self.connections:
            for conn in list(self.connections):
                conn.close_if_idle()
            if not self.connections or self.loop.time() >= (gateway.drain_deadline or 0):
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.transport.abort()


def _fill(template: str, path: str) -> dict[str, str] | None:
    """{"name": ...} when `path` fits `template` ("/config/routes/{name}":
    one non-empty segment, percent-decoded), else None."""
    head, brace, rest = template.partition("{")
    if not brace or not path.startswith(head):
        return None
    value = path[len(head):]
    if not value or "/" in value:
        return None
    return {rest.rstrip("}"): unquote(value)}


def reload_metrics(header) -> bytes:
    """Prometheus lines for config reloads, from the status board header."""
    last = header.last_result
    ok = header.reloads_done - header.reloads_failed
    lines = [
        "# HELP fastgw_config_reloads_total Config reloads finished (SIGHUP, POST /reload), by result.",
        "# TYPE fastgw_config_reloads_total counter",
        f'fastgw_config_reloads_total{{result="ok"}} {ok}',
        f'fastgw_config_reloads_total{{result="failed"}} {header.reloads_failed}',
        "# HELP fastgw_config_last_reload_successful Whether the last reload succeeded (1 before any).",
        "# TYPE fastgw_config_last_reload_successful gauge",
        f"fastgw_config_last_reload_successful {0 if last is not None and not last.get('ok') else 1}",
        "# HELP fastgw_config_last_reload_timestamp_seconds When the last reload finished (0: none yet).",
        "# TYPE fastgw_config_last_reload_timestamp_seconds gauge",
        f"fastgw_config_last_reload_timestamp_seconds {header.last_time:.3f}",
        "# HELP fastgw_config_generation The generation of workers serving (1 + successful reloads).",
        "# TYPE fastgw_config_generation gauge",
        f"fastgw_config_generation {header.generation}",
    ]
    return ("\n".join(lines) + "\n").encode()




class AdminConnection(asyncio.Protocol):
    """One admin client connection: parse, dispatch, answer; keep-alive."""

    def __init__(self, server: AdminServer):
        self.server = server
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.head_bytes = 0
        self.body_bytes = 0
        self.body: list[bytes] = []
        self.busy = False
        self.closed = False
        self.idle_timer = None
        self.queue: deque[tuple[Request, bool]] = deque()

    # -- asyncio ----------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc):
        self.closed = True
        self.server.connections.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "bad_request", "the admin API does not upgrade connections")
        except httptools.HttpParserError as error:
            if not self.closed:
                self._fail(400, "bad_request", f"malformed request: {error}")

    def close_if_idle(self):
        if not self.busy:
            self.transport.close()

    # -- parser callbacks ---------------------------------------------------------------
    def on_message_begin(self):
        self.url = b""
        self.headers = {}
        self.head_bytes = 0
        self.body_bytes = 0
        self.body = []

    def on_url(self, url: bytes):
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes):
        self.headers[name.lower()] = value
        self._count_head(len(name) + len(value))

    def on_headers_complete(self):
        # curl sends `Expect: 100-continue` before a body over 1 KiB (PUT /config)
        # and waits a second for this unless it comes.
        if self.headers.get(b"expect", b"").lower() == b"100-continue" and not self.closed:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes):
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY_BYTES:
            self._fail(413, "body_too_large", f"admin requests carry at most {MAX_BODY_BYTES} body bytes")
            raise httptools.HttpParserError("body too large")
        self.body.append(body)

    def on_message_complete(self):
        if self.closed:
            return
        method = self.parser.get_method().decode("ascii", "replace")
        url = httptools.parse_url(self.url)
        path = url.path.decode("utf-8", "replace")
        query = (url.query or b"").decode("utf-8", "replace")
        peer = self.transport.get_extra_info("peername")
        peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else None
        request = Request(method, path, self.headers, query, b"".join(self.body), peer)
        self.body = []
        self.queue.append((request, self.parser.should_keep_alive()))
        if not self.busy:
            self.busy = True
            self.transport.pause_reading()  # pipelined requests already read wait in the queue
            self.server.loop.create_task(self._answer_queued())

    def _count_head(self, size: int):
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self._fail(431, "headers_too_large", f"admin request heads are at most {MAX_HEAD_BYTES} bytes")
            raise httptools.HttpParserError("head too large")

    # -- answering ------------------------------------------------------------------------
    async def _answer_queued(self):
        """Answer the queued requests in order, one at a time."""
        while self.queue and not self.closed:
            request, keep_alive = self.queue.popleft()
            try:
                reply = await self.server.dispatch(request)
            except Exception as error:
                log.exception("admin API: %s %s failed", request.method, request.path)
                reply = error_reply(500, "internal_error", f"internal error: {error!r}")
            if self.closed:
                return
            # A worker that is draining or retiring hands its clients on: a new
            # connection reaches a worker of the current generation.
            keep_alive = keep_alive and self.server.worker.mode is None
            self._send(reply, keep_alive)
            if not keep_alive:
                self.transport.close()
                self.closed = True
                return
        self.busy = False
        if not self.closed:
            self.transport.resume_reading()
            self._arm_idle()

    def _send(self, reply: Reply, keep_alive: bool):
        body = reply.body if isinstance(reply.body, bytes) else orjson.dumps(reply.body, option=orjson.OPT_INDENT_2)
        lines = [b"HTTP/1.1 %d %s" % (reply.status, _REASONS.get(reply.status, b"Unknown")),
                 b"Content-Type: " + reply.content_type,
                 b"Content-Length: %d" % len(body),
                 b"Cache-Control: no-store",
                 b"Connection: " + (b"keep-alive" if keep_alive else b"close")]
        lines += [name + b": " + value for name, value in reply.headers]
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)

    def _fail(self, status: int, code: str, message: str):
        if self.closed:
            return
        self._send(error_reply(status, code, message), keep_alive=False)
        self.transport.close()
        self.closed = True

    def _arm_idle(self):
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.idle_timer = self.server.loop.call_later(IDLE_TIMEOUT, self._idle_check)

    def _idle_check(self):
        if not self.busy and not self.closed:
            self.transport.close()


_REASONS = {200: b"OK", 202: b"Accepted", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
            404: b"Not Found", 405: b"Method Not Allowed", 409: b"Conflict", 413: b"Content Too Large",
            422: b"Unprocessable Content", 431: b"Request Header Fields Too Large",
            500: b"Internal Server Error", 503: b"Service Unavailable", 504: b"Gateway Timeout"}
