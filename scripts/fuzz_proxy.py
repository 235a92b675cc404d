#!/usr/bin/env python3
"""Long mode of the differential fuzzer (issue 17): a seeded campaign
through a real fastgw, new findings minimized and written to the corpus.

    nice .venv/bin/python scripts/fuzz_proxy.py --seconds 300 --seed 1 --mode both

Runs `python -m fastgw` from this checkout (FASTGW_BIN=1 runs the installed
console script instead, as tests/support/gateway.py explains). Each finding
kind (per mode) is reported once, with the time and number of cases it took,
minimized for up to --minimize-seconds and saved as
<corpus>/<mode>-<kinds>-s<seed>i<index>.json. The corpus is what
tests/fuzz/test_differential.py replays.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fuzz.campaign import Hit, campaign, issue17_class, minimize  # noqa: E402
from fuzz.runner import FuzzHarness, case_to_json, run_case  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="campaign time budget (default 120)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mode", choices=("request", "response", "both"), default="both")
    ap.add_argument("--max-cases", type=int, default=1_000_000, help="cases per mode at most")
    ap.add_argument("--corpus", type=Path, default=ROOT / "tests" / "fuzz" / "corpus")
    ap.add_argument("--no-save", action="store_true", help="report findings, write nothing")
    ap.add_argument("--minimize-seconds", type=float, default=60.0, help="per finding; 0 to keep cases as found")
    ap.add_argument("--skip-tag", action="append", default=[], metavar="PREFIX",
                    help="don't run generated cases with a tag starting with PREFIX (e.g. interim- while the "
                         "1xx hang is unfixed: each such case costs its whole time bound)")
    ap.add_argument("--stop-after", type=int, default=None, help="stop after this many distinct findings")
    args = ap.parse_args(argv)
    modes = ["request", "response"] if args.mode == "both" else [args.mode]

    workdir = Path(tempfile.mkdtemp(prefix="fuzz_proxy."))
    harness = FuzzHarness(workdir)
    started = time.monotonic()
    report: list[dict] = []
    distinct: list[Hit] = []
    seen: set = set()
    classes: dict[str, dict] = {}

    def on_hit(hit: Hit) -> None:
        cls = issue17_class(hit)
        if cls and cls not in classes:
            classes[cls] = {"seconds": round(hit.at_seconds, 1), "cases": hit.cases_run, "index": hit.index}
            print(f"[{hit.at_seconds:7.1f}s] issue 17 finding {cls}: {hit.mode} case {hit.cases_run}", flush=True)
        key = (hit.mode, frozenset(hit.outcome.kinds))
        if key in seen:
            return
        seen.add(key)
        distinct.append(hit)
        kinds = sorted(hit.outcome.kinds)
        print(f"[{hit.at_seconds:7.1f}s] {hit.mode} case {hit.cases_run} (index {hit.index}): {kinds} "
              f"tags={sorted(hit.case.tags)}", flush=True)
        for f in hit.outcome.findings:
            print(f"    {str(f)[:400]}", flush=True)
        report.append({"mode": hit.mode, "index": hit.index, "kinds": kinds, "seconds": round(hit.at_seconds, 1),
                       "cases": hit.cases_run, "tags": sorted(hit.case.tags)})

    try:
        _, counts = campaign(harness, modes, args.seed, args.max_cases, args.seconds, new_kinds_only=False,
                             on_hit=on_hit, stop=lambda: args.stop_after is not None
                             and len(distinct) >= args.stop_after, skip_tags=tuple(args.skip_tag))
        hits = distinct
        print(f"campaign: {counts} cases in {time.monotonic() - started:.1f}s, {len(hits)} distinct findings",
              flush=True)
        print("issue 17 findings (first hit): " + json.dumps(classes), flush=True)
        if not args.no_save:
            args.corpus.mkdir(parents=True, exist_ok=True)
            for hit in hits:
                name = f"s{args.seed}i{hit.index}"
                primary = sorted(hit.outcome.kinds)[0]
                case = hit.case
                if args.minimize_seconds > 0:
                    case = minimize(harness, case, name, primary, args.minimize_seconds)
                outcome = run_case(harness, case, name + "final")
                comment = (f"found by scripts/fuzz_proxy.py --seed {args.seed} --mode {hit.mode}: case "
                           f"{hit.cases_run} of the campaign, after {hit.at_seconds:.1f}s; minimized"
                           f"{'' if case is not hit.case else ' (not reproducible alone: as found)'}")
                doc = case_to_json(case, comment, [str(f) for f in outcome.findings] or
                                   [str(f) for f in hit.outcome.findings],
                                   {"seed": args.seed, "index": hit.index, "summary": outcome.summary})
                path = args.corpus / f"{hit.mode}-{'+'.join(sorted(hit.outcome.kinds))}-{name}.json"
                path.write_text(json.dumps(doc, indent=1) + "\n")
                print(f"saved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
    finally:
        harness.close()
    print(json.dumps(report, indent=1))
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main())
