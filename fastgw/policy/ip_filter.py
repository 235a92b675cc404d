"""IP allow/deny lists (top level and route) as a stage of phase access,
before authentication: a refused address costs no signature check.

The address is the client's as the rate limits see it: the TCP peer, or the
X-Forwarded-For entry found through server.trusted_proxies (client_ip.py).
The top-level list is checked first, then the route's; each refuses an
address it denies, or one outside its allow list when that is not empty:
403 ip_denied. IPv4-mapped IPv6 peers (::ffff:10.0.0.1, from a dual-stack
listener) are judged as the IPv4 address they are.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache

from fastgw._native.errors import ProxyError
from fastgw.pipeline.phases import Phase
from fastgw.policy.client_ip import client_ip


@lru_cache(maxsize=8192)
def _address(text: bytes):
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


class IpFilterStage:
    def __init__(self, route_name: str, filters, trusted):
        self.route = route_name
        self.filters = tuple(filters)       # (IpFilter, ...): global first
        self.trusted = tuple(trusted)
        self.denied = 0
        self._verdicts = {}                 # address bytes -> allowed (bounded)

    def __repr__(self):
        return f"IpFilterStage({self.route!r})"

    def admit(self, ex):
        peer = ex.client.peer_ip
        if self.trusted:
            xff = [v for n, v in ex.request_headers if n.lower() == b"x-forwarded-for"]
            peer = client_ip(peer, xff, self.trusted)
        allowed = self._verdicts.get(peer)
        if allowed is None:
            allowed = self._judge(peer)
            if len(self._verdicts) > 8192:
                self._verdicts.clear()
            self._verdicts[peer] = allowed
        if allowed:
            return None
        self.denied += 1
        fields = ex.log_fields
        if fields is None:
            ex.log_fields = fields = {}
        fields["auth"] = "ip_denied"
        return ProxyError(403, "ip_denied", "requests from this address are not allowed on this route")

    def _judge(self, peer: bytes) -> bool:
        address = _address(peer)
        if address is None:
            return False  # not an address (a unix socket peer): nothing to match, so refused
        for rule in self.filters:
            if any(address in net for net in rule.deny if net.version == address.version):
                return False
            if rule.allow and not any(address in net for net in rule.allow if net.version == address.version):
                return False
        return True


class IpFilterPolicy:
    name = "ip_filter"
    phases = (Phase.ACCESS,)

    def prepare(self, gateway) -> None:
        pass

    def install(self, builder, route) -> None:
        config = builder.gateway.config
        filters = [f for f in (config.ip_filter, route.ip_filter) if f is not None]
        if filters:
            builder.add_stage(Phase.ACCESS, IpFilterStage(route.name, filters, config.server.trusted_proxies))


POLICY = IpFilterPolicy()
