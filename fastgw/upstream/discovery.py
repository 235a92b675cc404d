"""Endpoint discovery beyond the static list: a DNS name re-resolved on an
interval, or a watched endpoints file. Each hands its cluster a new endpoint
set with `apply(endpoints)`; the cluster adds pools for new endpoints and
drains the pools of removed ones (ClusterRuntime.set_endpoints).

Both run in every worker's event loop, like the health checks: a stat() a
second per worker, or one getaddrinfo per interval per worker, costs nothing
worth sharing, and each worker's set is where its balancer reads it. Workers
may see a change up to one interval apart.

A failure (DNS error or empty answer; file missing, unreadable or invalid)
keeps the last good set and is logged once per distinct error, with the
config key and, for a file, the entry at fault; the next good answer applies.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket

from fastgw.config.endpoints_file import EndpointsFileError, read_endpoints_file
from fastgw.config.model import Endpoint
from fastgw.upstream import dns_client

log = logging.getLogger("fastgw")

# A resolver that hangs is given up on after this long (or the interval, if shorter).
DNS_TIMEOUT = 10.0


class _Watcher:
    __slots__ = ("loop", "config", "name", "keypath", "apply", "task", "last_error", "count")

    def __init__(self, loop, config, cluster_name: str, key: str, apply, count: int):
        self.loop = loop
        self.config = config
        self.name = cluster_name
        self.keypath = f"clusters.{cluster_name}.{key}"
        self.apply = apply
        self.task = None
        self.last_error = None
        self.count = count  # endpoints in the last good set, for the log

    def start(self) -> None:
        self.task = self.loop.create_task(self._run())

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _failed(self, problem: str) -> None:
        if problem != self.last_error:
            self.last_error = problem
            log.error("discovery: cluster '%s': %s: %s; keeping the last good set (%d endpoints)",
                      self.name, self.keypath, problem, self.count)

    def _good(self, endpoints: tuple[Endpoint, ...]) -> None:
        if self.last_error is not None:
            log.info("discovery: cluster '%s': %s is good again", self.name, self.keypath)
            self.last_error = None
        self.count = len(endpoints)
        self.apply(endpoints)


class DnsWatcher(_Watcher):
    """`dns: {name, port, interval}`: the name's addresses, each an endpoint
    of weight 1 on `port`, resolved when the worker starts and every
    `interval`. Until the first answer the cluster has no endpoint (503
    `no_endpoint`); the first lookup starts with the worker, before it has
    accepted much, and a local resolver answers in well under a millisecond.
    A lookup that fails at start leaves the cluster empty until one succeeds."""

    __slots__ = ()

    async def _run(self) -> None:
        while True:
            await self.resolve()
            await asyncio.sleep(self.config.interval)

    async def resolve(self) -> None:
        dns = self.config
        try:
            addresses = await asyncio.wait_for(self._lookup(), min(DNS_TIMEOUT, dns.interval))
        except TimeoutError:
            self._failed(f"resolving {dns.name!r} took longer than {min(DNS_TIMEOUT, dns.interval):g}s")
            return
        except OSError as err:
            self._failed(f"resolving {dns.name!r} failed: {err.strerror or err}")
            return
        endpoints: list[Endpoint] = []
        for host in addresses:
            endpoint = Endpoint(host=host, port=dns.port)
            if endpoint not in endpoints:
                endpoints.append(endpoint)
        if not endpoints:
            self._failed(f"{dns.name!r} resolved to no address")
            return
        self._good(tuple(endpoints))


    async def _lookup(self) -> list[str]:
        """The name's addresses: from `resolver` when configured, else the
        system resolver (the event loop's getaddrinfo: /etc/hosts, then DNS)."""
        dns = self.config
        if dns.resolver is not None:
            return await dns_client.resolve(self.loop, dns.resolver, dns.name)
        infos = await self.loop.getaddrinfo(dns.name, dns.port, type=socket.SOCK_STREAM)
        return [address[0] for family, _, _, _, address in infos if family in (socket.AF_INET, socket.AF_INET6)]


class FileWatcher(_Watcher):
    """`endpoints_file`: the file is stat()ed every interval; a change of
    inode, size or mtime (an in-place write, or an atomic rename such as
    consul-template's or a Kubernetes ConfigMap's symlink swap) re-reads it.
    Write it with a rename where you can: a reader that catches an in-place
    write half done sees a shorter list (applied until the next check sees
    the rest) or an invalid file (ignored)."""

    __slots__ = ("signature",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.signature = None

    async def _run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self.config.interval)

    def poll(self) -> None:
        path = self.config.path
        try:
            st = os.stat(path)
        except OSError as err:
            self.signature = None
            self._failed(f"{path}: {err.strerror or err}")
            return
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if signature == self.signature:
            return
        self.signature = signature
        try:
            endpoints = read_endpoints_file(path)
        except EndpointsFileError as err:
            self._failed("; ".join(err.lines))
            return
        self._good(endpoints)
