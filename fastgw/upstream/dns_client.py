"""A minimal DNS stub resolver over UDP, for `dns: {resolver: HOST:PORT}`.

The system resolver (getaddrinfo) follows /etc/hosts and /etc/resolv.conf,
which a process can't point elsewhere; nginx (`resolver`) and Envoy
(`dns_resolvers`) let the operator name the DNS server instead, e.g. a
cluster's DNS service or a local caching resolver on a non-standard port.
This asks that server for the name's A and AAAA records, both at once, and
returns the addresses; nothing is cached (the watcher asks every interval).

Only what a recursive server's answer needs is parsed: the header, the
question echoed back, and answer records (compressed names skipped; CNAME
records skipped, the server's addresses that follow them kept).
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import struct

A, AAAA = 1, 28
RCODES = {1: "format error", 2: "server failure", 3: "no such name", 4: "not implemented", 5: "refused"}


class DnsError(OSError):
    pass


def build_query(ident: int, name: str, qtype: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p for p in (part.encode("idna") for part in name.rstrip(".").split(".")))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length & 0xC0 == 0xC0:        # a pointer ends the name
            return offset + 2
        offset += 1 + length
        if length == 0:
            return offset


def parse_answer(data: bytes, ident: int) -> list[str]:
    """The addresses in a response; DnsError for an error rcode."""
    if len(data) < 12:
        raise DnsError("short DNS answer")
    got, flags, qd, an, _, _ = struct.unpack_from("!HHHHHH", data)
    if got != ident or not flags & 0x8000:
        raise DnsError("DNS answer does not match the query")
    rcode = flags & 0xF
    if rcode:
        raise DnsError(RCODES.get(rcode, f"DNS error {rcode}"))
    offset = 12
    for _ in range(qd):
        offset = _skip_name(data, offset) + 4
    found = []
    for _ in range(an):
        offset = _skip_name(data, offset)
        rtype, _, _, length = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        rdata = data[offset:offset + length]
        offset += length
        if rtype == A and length == 4:
            found.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == AAAA and length == 16:
            found.append(str(ipaddress.IPv6Address(rdata)))
    return found


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, waiting: dict[int, asyncio.Future]):
        self.waiting = waiting

    def datagram_received(self, data, addr):
        if len(data) >= 2:
            future = self.waiting.get(struct.unpack_from("!H", data)[0])
            if future is not None and not future.done():
                future.set_result(data)

    def error_received(self, exc):
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(DnsError(f"DNS server unreachable: {exc.strerror or exc}"))


async def resolve(loop: asyncio.AbstractEventLoop, server: tuple[str, int], name: str) -> list[str]:
    """A and AAAA addresses of `name` from `server` (the caller bounds the
    wait). A name with records of neither kind gives []."""
    waiting: dict[int, asyncio.Future] = {}
    queries = {}
    for qtype in (A, AAAA):
        ident = int.from_bytes(os.urandom(2), "big")
        while ident in waiting:
            ident = (ident + 1) & 0xFFFF
        waiting[ident] = loop.create_future()
        queries[ident] = build_query(ident, name, qtype)
    transport, _ = await loop.create_datagram_endpoint(lambda: _Exchange(waiting), remote_addr=server)
    try:
        for data in queries.values():
            transport.sendto(data)
        found: list[str] = []
        for ident, future in waiting.items():
            found += parse_answer(await future, ident)
        return found
    finally:
        transport.close()
