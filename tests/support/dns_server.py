"""A DNS server on loopback whose answers the test sets: `records[name]` is
the list of addresses (IPv4 and IPv6) it answers for `name`; a name not in
`records` gets NXDOMAIN. UDP, one thread, A and AAAA only: enough to point
`dns: {resolver: ...}` at and change what a name resolves to, with no root
and no /etc/hosts. `queries` counts the questions asked per (name, type)."""
from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from collections import Counter

A, AAAA = 1, 28


class DnsServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.records: dict[str, list[str]] = {}
        self.queries: Counter = Counter()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dns-server", daemon=True)

    def start(self) -> "DnsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            answer = self.answer(data)
            if answer:
                self.sock.sendto(answer, peer)

    def answer(self, query: bytes) -> bytes | None:
        ident, _, qdcount = struct.unpack_from("!HHH", query)
        if qdcount != 1:
            return None
        labels, offset = [], 12
        while (length := query[offset]) != 0:
            labels.append(query[offset + 1:offset + 1 + length].decode("ascii").lower())
            offset += 1 + length
        qtype, _ = struct.unpack_from("!HH", query, offset + 1)
        question = query[12:offset + 5]
        name = ".".join(labels)
        self.queries[(name, qtype)] += 1
        addresses = self.records.get(name)
        if addresses is None:
            return struct.pack("!HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question   # NXDOMAIN
        rdata = []
        for text in addresses:
            ip = ipaddress.ip_address(text)
            if (ip.version == 4) == (qtype == A):
                rdata.append(ip.packed)
        records = b"".join(struct.pack("!HHHIH", 0xC00C, qtype, 1, 0, len(r)) + r for r in rdata)
        return struct.pack("!HHHHHH", ident, 0x8180, 1, len(rdata), 0, 0) + question + records
