"""A route's `scope: redis` rate limits: an admission stage (phase 4) that
asks Redis, in one EVALSHA, whether the request may pass.

The limit holds across every gateway sharing the Redis: the state lives in
Redis and the script (fastgw/redis/ratelimit_lua.py) takes its clock from
Redis `TIME`. Keys are the same as the local scope's (the native LimitKeys
computes them: client IP with trusted X-Forwarded-For, header values,
route), stored as `fastgw:rl:ROUTE:POSITION:KEY` (route names cannot hold
':', so the layout is unambiguous).

Answers: 429 `rate_limited`, or the request passes; both with the
RateLimit-* / X-RateLimit-* headers (and Retry-After on a 429) formatted by
the same native code as local limits (fastgw._native.limiter.decision).

When Redis cannot answer (not connected, no reply within `redis.timeout`,
an error reply), `failure_mode` decides: "open" lets the request through
without limit headers, "closed" answers 503 `rate_limit_unavailable` with
Retry-After: 1. Never a 500. Each such decision is counted on the stage
(`admitted_unlimited`, `refused_unavailable`), and one log line per
`log_interval` says how many there were and why.
"""
from __future__ import annotations

import logging

from fastgw._native.limiter import LimitKeys, decision
from fastgw._native.proxy import WAIT
from fastgw.config.model import Config, Redis, Route
from fastgw.policy.client_ip import client_ip
from fastgw.policy.ratelimit import describe, key_parts
from fastgw.policy.redis_rate_limit import has_redis_limits
from fastgw.proxy.errors import ProxyError
from fastgw.redis.client import RedisClient, Script, encode_bulk
from fastgw.redis.ratelimit_lua import SOURCE
from fastgw.redis.tls import client_context

log = logging.getLogger("fastgw")

KEY_PREFIX = b"fastgw:rl:"
UNAVAILABLE_STATUS = 503
UNAVAILABLE_RETRY_AFTER = 1  # seconds; the client redials within about that


def script_args(limit) -> tuple[bytes, bytes, bytes]:
    """A limit's three script arguments (see ratelimit_lua.py)."""
    if limit.algorithm == "token_bucket":
        interval_ns = max(1, int(1e9 * limit.per / limit.requests))  # rounded down: never below the rate
        return b"t", b"%d" % interval_ns, b"%d" % limit.burst
    return b"w", b"%d" % round(limit.requests), b"%d" % round(limit.per * 1e6)


class RedisLimitStage:
    """The admission stage of one route with `scope: redis` limits."""

    def __init__(self, route: Route, client: RedisClient, script: Script, redis: Redis,
                 trusted_proxies: tuple = ()):
        limits = [limit for limit in route.rate_limits if limit.scope == "redis"]
        if not limits:
            raise ValueError(f"route {route.name!r} has no redis-scoped rate limits")
        self.route = route
        self.client = client
        self.script = script
        self.fail_closed = redis.failure_mode == "closed"
        self.log_interval = redis.log_interval
        self.keys = LimitKeys([key_parts(route, limit) for limit in limits], tuple(trusted_proxies), client_ip)
        self.prefixes = [KEY_PREFIX + b"%s:%d:" % (route.name.encode(), position)
                         for position in range(len(limits))]
        self.messages = [f"rate limit exceeded: {describe(limit)}" for limit in limits]
        # EVALSHA sha N <keys> <args>: everything but the keys is encoded once.
        self.head = (b"*%d\r\n" % (3 + 4 * len(limits)) + encode_bulk(b"EVALSHA") + encode_bulk(script.sha)
                     + encode_bulk(len(limits)))
        self.tail = b"".join(encode_bulk(arg) for limit in limits for arg in script_args(limit))
        # Counters (the metrics export reads them).
        self.admitted_unlimited = 0   # failure_mode open: passed without the limit
        self.refused_unavailable = 0  # failure_mode closed: 503
        self.limited = 0              # 429s
        self._unlogged = 0
        self._reason = ""
        self._log_handle = None

    def __repr__(self):
        return f"RedisLimitStage(route={self.route.name!r}, redis={self.client.address})"

    def command(self, peer_ip: bytes, headers: list) -> bytes:
        keys = self.keys.keys(peer_ip, headers)
        if len(keys) == 1:   # the common case, without the loop
            key = self.prefixes[0] + keys[0]
            return b"%b$%d\r\n%b\r\n%b" % (self.head, len(key), key, self.tail)
        parts = [self.head]
        for prefix, key in zip(self.prefixes, keys):
            parts.append(encode_bulk(prefix + key))
        parts.append(self.tail)
        return b"".join(parts)

    def admit(self, exchange):
        command = self.command(exchange.client.peer_ip, exchange.request_headers)
        if self.client.send(command, self._answered, exchange, self.script):
            return WAIT
        verdict = self._unavailable(self.client.last_error)
        if verdict is not None:
            # Refuse on the next loop turn, not from inside admit(): the
            # request (a GET) is complete by then, so the refusal keeps the
            # connection alive; a refusal before the request's end closes it.
            self.client.loop.call_soon(exchange.admission_done, verdict)
            return WAIT
        return None

    def _answered(self, exchange, reply) -> None:
        if type(reply) is list:
            allowed, limit, remaining, reset_ns, retry_ns, position = reply
            answer = decision(allowed, limit, remaining, reset_ns / 1e9, retry_ns / 1e9, self.messages[position])
            if allowed:
                exchange.add_response_headers(answer.headers)
                exchange.admission_done(None)
            else:
                self.limited += 1
                exchange.admission_done(ProxyError(answer.status, "rate_limited", answer.message, answer.headers))
            return
        # RedisUnavailable, or an error reply (OOM, a script error): the failure mode answers.
        reason = str(reply).removeprefix(f"redis at {self.client.address}: ")
        exchange.admission_done(self._unavailable(reason))

    def _unavailable(self, reason: str):
        self._reason = reason
        self._unlogged += 1
        if self._log_handle is None:
            self._log_handle = self.client.loop.call_later(self.log_interval, self._log)
        if self.fail_closed:
            self.refused_unavailable += 1
            return ProxyError(UNAVAILABLE_STATUS, "rate_limit_unavailable",
                              f"the rate limit store is unavailable; retry in {UNAVAILABLE_RETRY_AFTER} s",
                              b"Retry-After: %d\r\n" % UNAVAILABLE_RETRY_AFTER)
        self.admitted_unlimited += 1
        return None

    def _log(self) -> None:
        self._log_handle = None
        count, self._unlogged = self._unlogged, 0
        if not count:
            return
        what = "refused (503)" if self.fail_closed else "admitted without the limit"
        log.warning("redis at %s unavailable (%s): %d requests to route %r %s in the last %gs",
                    self.client.address, self._reason, count, self.route.name, what, self.log_interval)

    def close(self) -> None:
        if self._log_handle is not None:
            self._log_handle.cancel()
            self._log()


def create_client(loop, redis: Redis) -> RedisClient:
    """The worker's one client for every Redis use (these limits, the health check)."""
    context = None
    if redis.tls is not None:
        context = client_context(redis.tls)
        if redis.tls.insecure_skip_verify:
            log.warning("redis at %s: TLS certificate verification is OFF (redis.tls.insecure_skip_verify: "
                        "true): anyone on the network path can pose as this Redis and read its password",
                        redis.address)
    return RedisClient(loop, host=redis.host, port=redis.port, unix_path=redis.unix_path, db=redis.db,
                       username=redis.username, password=redis.password, password_source=redis.password_source,
                       ssl=context, server_hostname=redis.tls.server_name if redis.tls else None,
                       timeout=redis.timeout, connect_timeout=redis.connect_timeout)


def build_stages(config: Config, loop) -> tuple[RedisClient, dict[int, RedisLimitStage]]:
    """A worker's client and its stages (route.index -> stage). One pipelined
    connection per worker serves every route; it is dialled on the worker's
    loop as soon as the loop runs, not at the first request."""
    client = create_client(loop, config.redis)
    script = client.register(SOURCE)
    stages = {route.index: RedisLimitStage(route, client, script, config.redis, config.server.trusted_proxies)
              for route in config.routes if has_redis_limits(route)}
    loop.call_soon(client.start)
    return client, stages

