#!/usr/bin/env python3
"""Compare two tracemalloc snapshots of a worker (fastgw/observe/memtrace.py).

    bench/memdiff.py /tmp/gw.1234.1 /tmp/gw.1234.9 [--top 15] [--key traceback|lineno]

Prints the traced totals of both, then the allocation sites whose size grew
the most between them (statistics(key) diff, tracemalloc's own frames
filtered out), each with its traceback when the key is "traceback".

Allocations made from the compiled modules (fastgw/_native: no Python frames)
all end in `loop.run_until_complete` in worker.py; for those, `--sizes` shows
which block sizes grew (e.g. 216-byte sets with 512-byte tables and 32-byte
ints: the deadline wheel's slots, issue 17 #6).
"""
import argparse
import collections
import tracemalloc


def load(path):
    snap = tracemalloc.Snapshot.load(path)
    return snap.filter_traces((
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<unknown>"),
    ))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--key", default="traceback", choices=("traceback", "lineno", "filename"))
    p.add_argument("--sizes", action="store_true", help="also the block sizes whose count grew most")
    args = p.parse_args()
    old, new = load(args.old), load(args.new)
    total_old = sum(s.size for s in old.statistics("filename"))
    total_new = sum(s.size for s in new.statistics("filename"))
    blocks_old = sum(s.count for s in old.statistics("filename"))
    blocks_new = sum(s.count for s in new.statistics("filename"))
    print(f"traced: {total_old / 1024:.0f} KiB in {blocks_old} blocks -> "
          f"{total_new / 1024:.0f} KiB in {blocks_new} blocks ({(total_new - total_old) / 1024:+.0f} KiB)")
    for stat in new.compare_to(old, args.key)[:args.top]:
        print(f"\n{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+8d} blocks "
              f"(now {stat.size / 1024:.1f} KiB in {stat.count})")
        frames = stat.traceback.format() if args.key == "traceback" else [f"  {stat.traceback[0]}"]
        for line in frames:
            print("    " + line)
    if args.sizes:
        before = collections.Counter(t.size for t in old.traces)
        after = collections.Counter(t.size for t in new.traces)
        grown = sorted(((after[n] - before[n]) * n, n) for n in after.keys() | before.keys())
        print("\nblock size: count before -> after (KiB grown)")
        for grew, size in reversed(grown[-args.top:]):
            print(f"{size:>10} B: {before[size]:>7} -> {after[size]:<7} ({grew / 1024:+.1f} KiB)")


if __name__ == "__main__":
    main()
