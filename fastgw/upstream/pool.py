"""A cluster inside one worker: one keep-alive pool per endpoint and a balancer.

Pool identity is the endpoint (host, port): a connection is reused only for
the endpoint it was opened to. The pool itself (`EndpointPool`) is native,
in fastgw/_native/proxy.pyx, because it is called for every request.
"""
from __future__ import annotations

from fastgw._native.proxy import EndpointPool
from fastgw.upstream.balancer import make_balancer


class ClusterRuntime:
    """A cluster inside one worker: its endpoint pools and its balancer."""

    __slots__ = ("config", "pools", "balancer")

    def __init__(self, loop, cluster):
        self.config = cluster
        self.pools = [EndpointPool(loop, ep, cluster) for ep in cluster.endpoints]
        self.balancer = make_balancer(cluster.lb, self.pools)

    def pick(self):
        return self.balancer.pick()
