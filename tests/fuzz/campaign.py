"""A seeded campaign of generated cases, and minimization of what it finds.

Case `i` of seed `s` is generated from `random.Random(f"{s}:{mode}:{i}")`,
so any case can be regenerated from (seed, mode, index) alone.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace

from .mutators import RequestCase, ResponseCase, gen_request_case, gen_response_case
from .oracle import parse_client_bytes
from .runner import FuzzHarness, Outcome, run_case


@dataclass
class Hit:
    mode: str
    index: int
    case: object
    outcome: Outcome
    at_seconds: float         # campaign time when it was found
    cases_run: int            # cases run in this mode when it was found


def generate(mode: str, seed: int, index: int):
    rng = random.Random(f"{seed}:{mode}:{index}")
    if mode == "request":
        return gen_request_case(rng, f"s{seed}i{index}")
    return gen_response_case(rng, f"s{seed}i{index}")


def campaign(harness: FuzzHarness, modes: list[str], seed: int, max_cases: int, seconds: float,
             new_kinds_only: bool = True, on_hit=None, max_hits: int | None = None,
             stop=None, skip_tags: tuple[str, ...] = ()) -> tuple[list[Hit], dict]:
    """Alternate the modes until `max_cases` per mode or `seconds` overall
    (cases with a tag starting with one of `skip_tags` are not run).
    Returns the hits (first of each (mode, finding kinds) when
    new_kinds_only) and stats {mode: cases run}."""
    start = time.monotonic()
    hits: list[Hit] = []
    seen: set[tuple[str, frozenset]] = set()
    counts = {m: 0 for m in modes}
    i = 0
    while i < max_cases and time.monotonic() - start < seconds:
        for mode in modes:
            if time.monotonic() - start >= seconds:
                break
            case = generate(mode, seed, i)
            if skip_tags and any(t.startswith(skip_tags) for t in case.tags):
                continue      # a known finding whose cases would eat the budget
            outcome = run_case(harness, case, f"s{seed}i{i}")
            counts[mode] += 1
            if outcome.findings:
                key = (mode, frozenset(outcome.kinds))
                if not new_kinds_only or key not in seen:
                    seen.add(key)
                    hit = Hit(mode, i, case, outcome, time.monotonic() - start, counts[mode])
                    hits.append(hit)
                    if on_hit:
                        on_hit(hit)
                    if max_hits is not None and len(hits) >= max_hits:
                        return hits, counts
            if stop is not None and stop():
                return hits, counts
        i += 1
    return hits, counts


def issue17_class(hit: Hit) -> str | None:
    """Which finding of issue 17 a hit is an instance of (for the figures
    in bench/RESULTS.md), from the case's tags and the finding kinds."""
    kinds, tags = hit.outcome.kinds, hit.case.tags
    if hit.mode == "request":
        if "method-CONNECT" in tags and "hang" in kinds:
            return None           # the CONNECT + pipelined request hang, not one of the issue's
        if "upgrade" in tags and "body" in tags:
            if kinds & {"canary-corrupted", "canary-wrong-answer", "canary-no-answer", "upstream-unframeable"}:
                return "1: upgrade+body, cross-client desync"
            if "body-mismatch" in kinds:
                return "1: upgrade+body, body not forwarded"
            if "hang" in kinds:
                return "1: upgrade+body, client hangs"
        if "no-version" in tags and "forwarded-unparsed" in kinds:
            return "2: request line without version forwarded"
    elif "hang" in kinds and any(t.startswith("interim-") for t in tags):
        return "4: upstream 1xx hangs the client"
    return None


# ---- minimization ------------------------------------------------------------------------


def _ddmin(items: list, still_fails, budget_deadline: float) -> list:
    """Delta debugging over a list of pieces (lines or bytes)."""
    n = 2
    while len(items) >= 2 and time.monotonic() < budget_deadline:
        size = max(1, len(items) // n)
        reduced = False
        for start in range(0, len(items), size):
            candidate = items[:start] + items[start + size:]
            if candidate and still_fails(candidate):
                items = candidate
                n = max(n - 1, 2)
                reduced = True
                break
            if time.monotonic() >= budget_deadline:
                return items
        if not reduced:
            if size == 1:
                break
            n = min(len(items), n * 2)
    return items


def minimize(harness: FuzzHarness, case, name: str, kind: str, seconds: float = 60.0):
    """A smaller case that still produces a finding of `kind`: first whole
    lines are dropped, then single bytes (for short inputs)."""
    deadline = time.monotonic() + seconds
    tries = [0]

    if isinstance(case, RequestCase):
        def make(data: bytes) -> RequestCase:
            return RequestCase([data], case.shutdown, set(case.tags))
        data = case.data
    else:
        def make(data: bytes) -> ResponseCase:
            return replace(case, steps=[(data, 0.0)], tags=set(case.tags))
        data = case.data

    def h11_view(data: bytes):
        parse = parse_client_bytes(data)
        return len(parse.complete), parse.stop.split(":")[0]

    original_view = h11_view(data) if isinstance(case, RequestCase) else None

    def fails(data: bytes) -> bool:
        # A smaller request case must look the same to h11 (as many complete
        # requests, stopping the same way): otherwise dropping the body
        # "reproduces" a body finding with a request the client never ended.
        if original_view is not None and h11_view(data) != original_view:
            return False
        tries[0] += 1
        return kind in run_case(harness, make(data), f"{name}m{tries[0]}").kinds

    if not fails(data):
        return case           # not reproducible alone: keep the original
    lines = data.split(b"\n")
    pieces = [line + b"\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    pieces = _ddmin(pieces, lambda p: fails(b"".join(p)), deadline)
    data = b"".join(pieces)
    if len(data) <= 160:
        data = bytes(_ddmin(list(data), lambda p: fails(bytes(p)), deadline))
    return make(data)
