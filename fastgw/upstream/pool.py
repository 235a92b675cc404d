"""Keep-alive connection pools, one per endpoint, and the cluster that holds them.

Pool identity is the endpoint (host, port): a connection is reused only for
the endpoint it was opened to. Idle connections are kept LIFO (the most
recently used one is the least likely to have been timed out by the upstream)
and swept by one timer per worker, not one timer per connection.
"""
from __future__ import annotations

import asyncio
import socket

from fastgw.proxy.errors import ProxyError
from fastgw.upstream.balancer import make_balancer
from fastgw.upstream.connection import UpstreamConnection


class EndpointPool:
    __slots__ = ("loop", "endpoint", "idle", "max_idle", "idle_timeout", "connect_timeout",
                 "active", "created", "open")

    def __init__(self, loop, endpoint, cluster):
        self.loop = loop
        self.endpoint = endpoint
        self.idle: list[UpstreamConnection] = []
        self.max_idle = cluster.pool_max_idle
        self.idle_timeout = cluster.pool_idle_timeout
        self.connect_timeout = cluster.timeouts.connect
        self.active = 0    # exchanges using this endpoint now (least_request reads it)
        self.created = 0   # connections ever opened
        self.open = 0      # connections open now

    def acquire(self, exchange, fresh: bool = False):
        """Attach a connection to `exchange`: an idle one at once, else a new one
        when connected (`exchange.upstream_ready` or `exchange.upstream_connect_failed`)."""
        idle = self.idle
        while idle and not fresh:
            conn = idle.pop()
            if not conn.transport.is_closing():
                conn.reused = True
                conn.attach(exchange)
                exchange.upstream_ready(conn)
                return
        self.loop.create_task(self._connect(exchange))

    async def _connect(self, exchange):
        endpoint = self.endpoint
        timer = None
        try:
            task = asyncio.current_task()
            timer = self.loop.call_later(self.connect_timeout, task.cancel)
            transport, conn = await self.loop.create_connection(
                lambda: UpstreamConnection(self), endpoint.host, endpoint.port)
        except asyncio.CancelledError:
            if timer is not None and timer.cancelled():
                raise  # cancelled by someone else
            exchange.upstream_connect_failed(ProxyError(
                504, "upstream_timeout",
                f"connect to {endpoint.address} timed out after {self.connect_timeout:g}s"))
            return
        except OSError as err:
            exchange.upstream_connect_failed(ProxyError(
                502, "upstream_connect_failed",
                f"connect to {endpoint.address} failed: {err.strerror or err}"))
            return
        finally:
            if timer is not None:
                timer.cancel()
        self.created += 1
        self.open += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not exchange.wants_upstream():
            self.release(conn)  # the client left while we were connecting
            return
        conn.attach(exchange)
        exchange.upstream_ready(conn)

    def release(self, conn: UpstreamConnection):
        """Return a connection that finished an exchange cleanly."""
        conn.detach()
        if len(self.idle) >= self.max_idle or conn.transport.is_closing():
            conn.transport.close()
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def lost(self, conn: UpstreamConnection):
        self.open -= 1
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def sweep(self, now: float):
        """Close connections idle for longer than idle_timeout (oldest are first)."""
        idle = self.idle
        limit = now - self.idle_timeout
        expired = 0
        while expired < len(idle) and idle[expired].idle_since <= limit:
            expired += 1
        if expired:
            old, self.idle = idle[:expired], idle[expired:]
            for conn in old:
                conn.transport.close()

    def close_idle(self):
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.transport.close()


class ClusterRuntime:
    """A cluster inside one worker: its endpoint pools and its balancer."""

    __slots__ = ("config", "pools", "balancer")

    def __init__(self, loop, cluster):
        self.config = cluster
        self.pools = [EndpointPool(loop, ep, cluster) for ep in cluster.endpoints]
        self.balancer = make_balancer(cluster.lb, self.pools)

    def pick(self):
        return self.balancer.pick()
