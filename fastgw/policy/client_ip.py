"""Which address a request counts as coming from.

The TCP peer is the client unless it is a trusted proxy. Then
X-Forwarded-For (every proxy appends the address it received from) is read
right to left, skipping addresses that are themselves trusted proxies; the
first untrusted address is the client. Entries to the left of it were written
by the client and could be anything, so they are never believed. A malformed
entry (not a bare IP address: `unknown`, `1.2.3.4:80`, a hostname) stops the
walk: the answer is then the last trusted hop, the one that handed over the
unreadable value. With no trusted proxies configured the header is ignored.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# The longest textual IP address (IPv4-mapped IPv6 with a zone aside) is 45 bytes;
# longer entries are malformed and never reach the cache, which stays small.
MAX_ADDRESS_TEXT = 45


def _parse(text: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return _parse_short(text) if len(text) <= MAX_ADDRESS_TEXT else None


@lru_cache(maxsize=4096)
def _parse_short(text: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None


def _trusted(text: bytes, trusted: tuple[Network, ...]) -> bool:
    return len(text) <= MAX_ADDRESS_TEXT and _trusted_short(text, trusted)


@lru_cache(maxsize=4096)
def _trusted_short(text: bytes, trusted: tuple[Network, ...]) -> bool:
    address = _parse(text)
    return address is not None and any(address in network for network in trusted)


def client_ip(peer: bytes, xff_values: list[bytes], trusted: tuple[Network, ...]) -> bytes:
    """The client address as bytes: `peer`, or an X-Forwarded-For entry
    (normalised, e.g. lower-case IPv6) when `peer` is a trusted proxy.
    `xff_values` are the X-Forwarded-For header values in the order received."""
    if not trusted or not xff_values or not _trusted(peer, trusted):
        return peer
    client = peer
    for value in reversed(xff_values):
        for entry in reversed(value.split(b",")):
            text = entry.strip()
            address = _parse(text)
            if address is None:
                return client
            if not _trusted(text, trusted):
                return str(address).encode("ascii")
            client = str(address).encode("ascii")
    return client  # every hop is trusted: the leftmost one is as far as we can see
