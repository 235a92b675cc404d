"""Forward auth (Traefik ForwardAuth, nginx auth_request, Envoy ext_authz):
a stage of phase access, after `auth`, that asks an HTTP service.

The request to the service is a GET of `url` with X-Forwarded-Method,
X-Forwarded-Uri (path and query), X-Forwarded-Host and X-Forwarded-For (the
client address as resolved through the trusted proxies), plus the request
headers named in `headers`. Its answer decides:

- 2xx: the request goes on; the headers named in `copy_headers` are copied
  from the answer to the upstream request, after every client header of
  those names was removed (a client can't forge them, whether or not the
  service sends them).
- any other status: that status is the client's answer, with the service's
  body and its Content-Type, WWW-Authenticate, Location and Set-Cookie.
- no answer within `timeout`: 504 auth_timeout; a refused connection or a
  broken answer: 503 auth_unavailable. With failure_mode open, the request
  goes on instead (logged once per 10 s).

With `cache`, a 2xx decision is reused for that long for requests that send
the same values of `headers` (so the service's decision must depend on those
alone); a refusal is never cached. The stage waits without blocking the loop
(WAIT, then exchange.admission_done); one connection per call, no pool: the
service is expected on loopback or close by.
"""
from __future__ import annotations

import logging
import time

from fastgw._native.errors import ProxyError
from fastgw._native.proxy import WAIT, Answer
from fastgw.auth import fetch
from fastgw.pipeline.phases import Phase
from fastgw.policy.client_ip import client_ip

log = logging.getLogger("fastgw.auth")
PASSED_BACK = (b"content-type", b"www-authenticate", b"location", b"set-cookie")
CACHE_LIMIT = 10_000
LOG_EVERY = 10.0


class ForwardAuthStage:
    def __init__(self, route_name: str, config, loop, trusted):
        self.route = route_name
        self.config = config
        self.loop = loop
        self.trusted = tuple(trusted)
        self.watch = frozenset(config.headers)
        self.strip = frozenset(config.copy_headers)
        self.cache: dict[tuple, tuple[float, tuple]] = {}
        self.calls = 0
        self.allowed = 0
        self.denied = 0
        self.failed = 0
        self._last_log = float("-inf")

    def __repr__(self):
        return f"ForwardAuthStage({self.route!r})"

    def admit(self, ex):
        headers = ex.request_headers
        sent, xff, host = [], [], b""
        forged = False
        for name, value in headers:
            lname = name.lower()
            if lname in self.watch:
                sent.append((name, value))
            if lname in self.strip:
                forged = True
            elif lname == b"host":
                host = value
            elif lname == b"x-forwarded-for":
                xff.append(value)
        if forged:
            headers[:] = [pair for pair in headers if pair[0].lower() not in self.strip]
        key = tuple((name.lower(), value) for name, value in sent)
        if self.config.cache > 0:
            hit = self.cache.get(key)
            if hit is not None and hit[0] > time.monotonic():
                headers.extend(hit[1])
                self.allowed += 1
                return None
        peer = client_ip(ex.client.peer_ip, xff, self.trusted) if self.trusted else ex.client.peer_ip
        ask = tuple(sent) + ((b"X-Forwarded-Method", ex.method), (b"X-Forwarded-Uri", ex.path + ex.query),
                             (b"X-Forwarded-Host", host), (b"X-Forwarded-For", peer))
        self.calls += 1
        task = self.loop.create_task(fetch.get(self.config.url, self.config.timeout, ask))
        task.add_done_callback(lambda t: self._decided(ex, key, t))
        ex.on_finish(lambda _ex: task.cancel())
        return WAIT

    def _decided(self, ex, key, task):
        if task.cancelled() or ex.finished:
            return
        err = task.exception()
        if err is not None:
            ex.admission_done(self._failure(ex, err))
            return
        status, answer_headers, body = task.result()
        if 200 <= status < 300:
            copied = tuple((name, answer_headers[name]) for name in self.config.copy_headers
                           if name in answer_headers)
            ex.request_headers.extend(copied)
            if self.config.cache > 0:
                if len(self.cache) >= CACHE_LIMIT:
                    self.cache.clear()
                self.cache[key] = (time.monotonic() + self.config.cache, copied)
            self.allowed += 1
            self._log(ex, "allowed")
            ex.admission_done(None)
            return
        self.denied += 1
        self._log(ex, f"denied_{status}")
        lines = b"".join(name.title() + b": " + answer_headers[name] + b"\r\n"
                         for name in PASSED_BACK if name in answer_headers)
        status = status if 200 <= status <= 599 else 502
        ex.admission_done(Answer(status, lines, body))

    def _failure(self, ex, err):
        self.failed += 1
        timeout = isinstance(err, fetch.FetchTimeout)
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY:
            self._last_log = now
            log.warning("forward auth %s (route %s): %s", self.config.url, self.route, err)
        if self.config.failure_mode == "open":
            self._log(ex, "failed_open")
            return None
        self._log(ex, "timeout" if timeout else "unavailable")
        if timeout:
            return ProxyError(504, "auth_timeout", "the auth service did not answer in time")
        return ProxyError(503, "auth_unavailable", "the auth service could not be reached",
                          b"Retry-After: 1\r\n")

    @staticmethod
    def _log(ex, value):
        fields = ex.log_fields
        if fields is None:
            ex.log_fields = fields = {}
        fields["forward_auth"] = value


class ForwardAuthPolicy:
    name = "forward_auth"
    phases = (Phase.ACCESS,)

    def prepare(self, gateway) -> None:
        pass

    def install(self, builder, route) -> None:
        if route.forward_auth is not None:
            gateway = builder.gateway
            builder.add_stage(Phase.ACCESS, ForwardAuthStage(route.name, route.forward_auth, gateway.loop,
                                                             gateway.config.server.trusted_proxies))


POLICY = ForwardAuthPolicy()
