#!/usr/bin/env python3
"""Where the instructions per request go: each function's exclusive Ir per
request in one bench/callgrind.sh run kept with KEEP=DIR, or the difference
between two such runs (a feature on minus off).

    KEEP=/tmp/on  CONFIG=bench/callgrind-accesslog.yaml     bash bench/callgrind.sh
    KEEP=/tmp/off CONFIG=bench/callgrind-metrics-trace.yaml bash bench/callgrind.sh
    python3 bench/callgrind_diff.py /tmp/on [/tmp/off] [--top 40]

Per request = (Ir(N2) - Ir(N1)) / (N2 - N1) in the worker's file (the one
that served requests, the one with most Ir among them) of DIR/N1 and DIR/N2,
as bench/callgrind.sh counts. (The master can count more than a worker that
served 1,000 requests: it is never taken.)
Needs callgrind_annotate (valgrind).
"""
import argparse
import collections
import pathlib
import re
import subprocess

LINE = re.compile(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)")


def totals(path: pathlib.Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return 0


def _served(path: pathlib.Path) -> bool:
    """The process ran the client protocol: a worker (or a peer proxy), not the master."""
    text = path.read_text(errors="replace")
    return "data_received" in text


def functions(path: pathlib.Path) -> collections.Counter:
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", str(path)],
                         capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    for line in out.splitlines():
        match = LINE.match(line)
        if match and ":" in match.group(2) and "PROGRAM TOTALS" not in line:
            name = re.sub(r"/tmp/python-build[^ ]*?/Python-[\d.]+/", "", match.group(2))
            if not name.startswith("???"):  # an unnamed function: its object file is its only name
                name = re.sub(r" \[[^]]*\]$", "", name)
            counts[name] += int(match.group(1).replace(",", ""))
    return counts


def per_request(run: pathlib.Path) -> dict:
    n1, n2 = sorted((d for d in run.iterdir() if d.is_dir()), key=lambda d: int(d.name))
    worker = [max(d.glob("callgrind.out.*"), key=lambda f: (_served(f), totals(f))) for d in (n1, n2)]
    a, b = functions(worker[0]), functions(worker[1])
    span = int(n2.name) - int(n1.name)
    return {name: (b[name] - a.get(name, 0)) / span for name in set(a) | set(b)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("baseline", nargs="?")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    cost = per_request(pathlib.Path(args.run))
    if args.baseline:
        base = per_request(pathlib.Path(args.baseline))
        cost = {name: cost.get(name, 0) - base.get(name, 0) for name in set(cost) | set(base)}
    print(f"{sum(cost.values()):9.0f}  total per request")
    for name, value in sorted(cost.items(), key=lambda item: -abs(item[1]))[:args.top]:
        print(f"{value:9.0f}  {name[:140]}")


if __name__ == "__main__":
    main()
