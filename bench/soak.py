#!/usr/bin/env python3
"""Memory soak: the features config (2 workers) under wrk for a long time,
each worker's RSS sampled into a CSV, and the curve summarised.

    bench/soak.sh                          # 60 minutes, wrk -t1 -c16, keep-alive
    bench/soak.sh --minutes 10 --churn     # a new connection per request
    bench/soak.sh --minutes 10 --tracemalloc /tmp/gw   # worker snapshots (memtrace)
    bench/soak.py --summary soak.csv       # summarise a CSV again

Starts bench/upstream.py and the gateway (bench/run_features.sh, whose PID is
the master's), then wrk for the whole duration; every --interval seconds it
reads VmRSS of each child of the master from /proc/PID/status. A worker the
master restarts shows up under its new PID. At the end, or on Ctrl-C/SIGTERM,
wrk, the gateway (SIGINT: drain without delay) and the upstream are stopped
by their PIDs (then KILL after 5 s); nothing else is touched.

Everything runs under `nice -n 19` (--nice) so a shared machine's other work
comes first, and talks to 127.0.0.1 only.

CSV columns: elapsed_s, worker (0, 1, ... in order of first sight), pid, rss_kib,
and for the master (worker "m") too. The summary prints RSS per worker at
minutes 1, 5, 10, 15, ... (and at the end) and the least-squares slope over the last third of
the run in KiB/min.

Needs: wrk (apt-get install wrk), a Python with uvloop and httptools for the
upstream (the checkout's .venv), the gateway (.venv/bin/fastgw by default).
"""
from __future__ import annotations

import argparse
import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (the master's workers), sorted."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may hold spaces and parentheses: fields after the last ")".
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(name))
    return sorted(out)


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def stop(proc: subprocess.Popen | None, name: str, signum=signal.SIGTERM) -> None:
    """`signum`, up to 5 s, then KILL: only this process, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signum)
        proc.wait(5)
    except subprocess.TimeoutExpired:
        log(f"{name} (pid {proc.pid}) ignored {signal.Signals(signum).name} for 5 s: SIGKILL")
        proc.kill()
        proc.wait()


def default_gateway() -> str:
    venv = os.path.join(ROOT, ".venv", "bin", "fastgw")
    return os.environ.get("FASTGW_CMD") or (venv if os.path.exists(venv) else "fastgw")


def default_python() -> str:
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    return os.environ.get("BENCH_PYTHON") or (venv if os.path.exists(venv) else sys.executable)


# -- the curve ------------------------------------------------------------------
def slope_kib_per_min(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KiB) in KiB per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / sxx * 60.0


def summarise(rows: list[dict]) -> str:
    """RSS per worker at minutes 1, 5, 10, ... and the slope of the last third."""
    by_worker: dict[str, list[tuple[float, int]]] = {}
    for row in rows:
        by_worker.setdefault(row["worker"], []).append((float(row["elapsed_s"]), int(row["rss_kib"])))
    if not by_worker:
        return "no samples"
    end = max(t for pts in by_worker.values() for t, _ in pts)
    marks = [m for m in [1] + list(range(5, int(end // 60) + 1, 5)) if m * 60 <= end + 1]
    if not marks or end - marks[-1] * 60 > 30:  # and the end of the run
        marks.append(round(end / 60, 1))
    names = sorted(by_worker, key=lambda w: (w == "m", w))
    lines = ["minute | " + " | ".join(f"worker {w} MiB" if w != "m" else "master MiB" for w in names)]
    for minute in marks:
        cells = []
        for w in names:
            # the last sample at or before the mark
            before = [v for t, v in by_worker[w] if t <= minute * 60 + 1]
            cells.append(f"{before[-1] / 1024:.1f}" if before else "-")
        lines.append(f"{minute:>6g} | " + " | ".join(f"{c:>12}" for c in cells))
    tail = []
    for w in names:
        pts = by_worker[w]
        last_third = [(t, v) for t, v in pts if t >= pts[-1][0] * 2 / 3]
        tail.append(f"{'master' if w == 'm' else 'worker ' + w}: {slope_kib_per_min(last_third):+.0f} KiB/min")
    lines.append(f"slope over the last third ({end * 2 / 3 / 60:.0f}-{end / 60:.0f} min): " + ", ".join(tail))
    return "\n".join(lines)


def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- the run --------------------------------------------------------------------
def run(args) -> int:
    nice = ["nice", "-n", str(args.nice)] if args.nice else []
    work = tempfile.mkdtemp(prefix="fastgw-soak.")
    procs: dict[str, subprocess.Popen] = {}
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)
        raise KeyboardInterrupt

    # SIGINT too: a shell without job control starts background commands with
    # SIGINT ignored, and Python would inherit that.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rows: list[dict] = []
    csv_file = open(args.csv, "w", newline="")
    writer = csv.DictWriter(csv_file, fieldnames=["elapsed_s", "worker", "pid", "rss_kib"])
    writer.writeheader()
    try:
        upstream = args.upstream
        if upstream is None:
            port = free_port()
            procs["upstream"] = subprocess.Popen(
                nice + [default_python(), os.path.join(HERE, "upstream.py"), "--port", str(port)],
                stdout=open(os.path.join(work, "upstream.log"), "w"), stderr=subprocess.STDOUT)
            if not wait_port(port, procs["upstream"]):
                log("upstream did not start")
                return 1
            upstream = f"127.0.0.1:{port}"
        gw_port = free_port()
        env = dict(os.environ, FASTGW_CMD=args.fastgw, FASTGW_WORKERS=str(args.workers),
                   FEATURES_CONF=os.path.join(work, "features.yaml"), FASTGW_ADMIN="off")
        if args.tracemalloc:
            env["FASTGW_TRACEMALLOC"] = args.tracemalloc
            env["FASTGW_TRACEMALLOC_INTERVAL"] = str(args.snapshot_every)
        gw_log = os.path.join(work, "gateway.log")
        procs["gateway"] = gw = subprocess.Popen(
            nice + ["bash", os.path.join(HERE, "run_features.sh"), str(gw_port), upstream],
            env=env, stdout=open(gw_log, "w"), stderr=subprocess.STDOUT)
        if not wait_port(gw_port, gw):
            log(f"gateway did not start; log:\n{open(gw_log).read()}")
            return 1
        deadline = time.monotonic() + 10
        while len(children_of(gw.pid)) < args.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        duration = int(args.minutes * 60)
        wrk = nice + ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s",
                      "--timeout", "5s", "-s", os.path.join(HERE, "wrk", "report.lua")]
        if args.churn:
            wrk += ["-H", "Connection: close"]
        wrk.append(f"http://127.0.0.1:{gw_port}/")
        wrk_out = os.path.join(work, "wrk.out")
        log(f"gateway master {gw.pid}, workers {children_of(gw.pid)}, upstream {upstream}; "
            f"{' '.join(wrk)}; samples to {args.csv}")
        t0 = time.monotonic()
        procs["wrk"] = load = subprocess.Popen(wrk, stdout=open(wrk_out, "w"), stderr=subprocess.STDOUT)
        index: dict[int, str] = {}
        next_sample = t0
        while True:
            now = time.monotonic()
            if now >= next_sample:
                elapsed = round(now - t0, 1)
                pids = [("m", gw.pid)] + [(None, pid) for pid in children_of(gw.pid)]
                for name, pid in pids:
                    if name is None:
                        name = index.setdefault(pid, str(len(index)))
                    kib = rss_kib(pid)
                    if kib is not None:
                        row = {"elapsed_s": elapsed, "worker": name, "pid": pid, "rss_kib": kib}
                        rows.append(row)
                        writer.writerow(row)
                csv_file.flush()
                if args.progress and int(elapsed) % args.progress < args.interval:
                    log("t=%4.0fs " % elapsed + " ".join(
                        f"w{r['worker']}={r['rss_kib'] / 1024:.1f}MiB" for r in rows[-len(pids):]))
                next_sample += args.interval
            if load.poll() is not None:
                break
            if gw.poll() is not None:
                log(f"gateway exited ({gw.returncode}); log:\n{open(gw_log).read()[-2000:]}")
                return 1
            time.sleep(min(1.0, max(0.05, next_sample - time.monotonic())))
        print(open(wrk_out).read().strip())
    except KeyboardInterrupt:
        log("interrupted: stopping wrk, the gateway and the upstream")
    finally:
        stop(procs.get("wrk"), "wrk")
        # SIGINT: the gateway drains without SIGTERM's drain_delay (5 s by default);
        # the master stops its workers.
        stop(procs.get("gateway"), "gateway", signal.SIGINT)
        stop(procs.get("upstream"), "upstream")
        csv_file.close()
        if args.keep:
            log(f"scratch kept: {work}")
        else:
            subprocess.run(["rm", "-rf", work])
    print(summarise(rows))
    return 130 if stopping else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="load duration (default 60)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", "-c", type=int, default=16, help="wrk -c (default 16)")
    p.add_argument("--threads", "-t", type=int, default=1, help="wrk -t (default 1)")
    p.add_argument("--churn", action="store_true", help="Connection: close on every request")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--csv", default="soak.csv", help="where the samples go (default ./soak.csv)")
    p.add_argument("--fastgw", default=default_gateway(), help="gateway command (default .venv/bin/fastgw)")
    p.add_argument("--upstream", help="host:port of a running upstream (default: start bench/upstream.py)")
    p.add_argument("--tracemalloc", metavar="PREFIX", help="FASTGW_TRACEMALLOC for the workers")
    p.add_argument("--snapshot-every", type=float, default=60.0, help="seconds between snapshots (60)")
    p.add_argument("--nice", type=int, default=19, help="niceness of everything started (0: none)")
    p.add_argument("--progress", type=int, default=60, help="log RSS every N seconds (0: quiet)")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir (logs, wrk output)")
    p.add_argument("--summary", metavar="CSV", help="only summarise an existing CSV")
    args = p.parse_args(argv)
    if args.summary:
        print(summarise(read_csv(args.summary)))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
