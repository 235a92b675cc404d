"""Deterministic pseudo-random payloads, identical on both ends of a test."""
from __future__ import annotations

import hashlib
import random
import time
from typing import Iterator

BLOCK = 64 * 1024
MiB = 1024 * 1024


def payload_chunks(total: int, seed: int = 1, block: int = BLOCK) -> Iterator[bytes]:
    """`total` bytes from a seeded PRNG, in `block`-sized pieces.

    The byte stream depends only on (total, seed), never on `block`: the PRNG
    always produces fixed BLOCK-sized units, which are then re-cut.
    """
    rng = random.Random(seed)
    remaining = total
    pending = b""
    while remaining > 0 or pending:
        while len(pending) < block and remaining > 0:
            n = min(BLOCK, remaining)
            pending += rng.randbytes(n)
            remaining -= n
        piece, pending = pending[:block], pending[block:]
        if not piece:
            break
        yield piece


def payload_sha256(total: int, seed: int = 1) -> str:
    h = hashlib.sha256()
    for chunk in payload_chunks(total, seed):
        h.update(chunk)
    return h.hexdigest()


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
