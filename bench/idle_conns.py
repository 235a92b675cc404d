#!/usr/bin/env python3
"""Memory per idle keep-alive client connection in one fastgw worker.

Starts bench/upstream.py (a trivial upstream) and fastgw with one worker,
finds the worker (the master's child, /proc/<master>/task/<master>/children;
the master itself if it has none), then:
  1. warm-up: two rounds of BATCH concurrent connections, one request each,
     closed again (so the upstream pool and the allocator reach steady state);
  2. baseline: VmRSS of the worker (/proc/<pid>/status);
  3. opens CONNS client connections, BATCH at a time; each sends GET / and
     reads the whole response (a real keep-alive connection), then stays idle;
  4. after SETTLE seconds: VmRSS again, the worker's open fds, and how many
     client connections the gateway still holds open;
  5. closes them all and reads VmRSS once more (memory given back or not);
and prints KiB per idle connection = (RSS at 4 - RSS at 2) / connections open.

File descriptors: the script raises its own RLIMIT_NOFILE (soft up to the hard
limit, and the hard limit too when it is below what the run needs and this
runs as root) before spawning anything, so the gateway inherits it. It prints
the worker's own "Max open files" (from /proc/<pid>/limits) so you can see
whether fastgw raised or lowered it. --gateway-nofile SOFT[:HARD] starts the
gateway with other limits: `--gateway-nofile 1024` shows whether it raises a
low soft limit itself; `--gateway-nofile 1024:1024` caps it, to see how it
behaves when connections outnumber its fds.

The whole run is bounded by --time-limit (SIGALRM); every process started is
stopped on exit (TERM, then KILL after 5 s), workers included if the master
left them behind. Connections must be opened before the gateway's keep-alive
timeout (75 s by default) closes the first ones; the run reports how many
were still open when it measured.

Usage: python3 bench/idle_conns.py [--conns 10000] [--batch 250] [--settle 2]
           [--time-limit 180] [--gateway-nofile SOFT[:HARD]]
Environment: FASTGW_CMD (default `python3 -m fastgw`; this checkout goes on
PYTHONPATH when fastgw is not installed), PROXY_CMD (any other proxy, with
$PORT and $UPSTREAM substituted, e.g. ../shared/bench/raw_proxy.py).
Needs: Linux /proc, uvloop, httptools.
"""
import argparse
import asyncio
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import httptools
import uvloop

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REQUEST = b"GET / HTTP/1.1\r\nHost: idle-bench\r\n\r\n"


# ---------------------------------------------------------------- processes

class Procs:
    """Every process this script starts, stopped in reverse order on exit."""

    def __init__(self):
        self.procs = []
        self.orphans = set()  # worker pids to stop if their master leaves them

    def start(self, argv, stdout=subprocess.PIPE, **kw):
        proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.STDOUT, **kw)
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    print(f"pid {proc.pid} ignored SIGTERM for 5 s: SIGKILL", file=sys.stderr)
                    proc.kill()
                    proc.wait()
        for pid in self.orphans:
            if _alive(pid):
                print(f"worker {pid} outlived its master: SIGKILL", file=sys.stderr)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def nofile_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return soft, hard
    return "?", "?"


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            soft = hard = need
        except (ValueError, OSError):
            pass
    new_soft = hard if hard != resource.RLIM_INFINITY else max(soft, need)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def read_line(proc, prefix, timeout):
    """Wait for a stdout line starting with prefix (the upstream's READY)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line.decode().strip()
    raise RuntimeError(f"pid {proc.pid} did not print {prefix!r}")


def wait_listening(port, proc, log, timeout):
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"gateway exited with {proc.returncode}: {log.read().decode()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"gateway not listening on :{port} after {timeout} s")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- clients

class Client(asyncio.Protocol):
    """One keep-alive connection: one request, the whole response, then idle."""

    def __init__(self, answered):
        self.answered = answered
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.keep_alive = False
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport
        transport.write(REQUEST)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._done(exc)

    def on_headers_complete(self):
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self):
        self._done(None)

    def connection_lost(self, exc):
        self.closed = True
        self._done(exc or ConnectionError("closed before the response ended"))

    def _done(self, exc):
        if not self.answered.done():
            if exc is None:
                self.answered.set_result(self.status)
            else:
                self.answered.set_exception(exc)


async def open_one(loop, port, timeout):
    answered = loop.create_future()
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: Client(answered), "127.0.0.1", port), timeout)
    try:
        status = await asyncio.wait_for(answered, timeout)
    except BaseException:
        client.transport.close()
        raise
    return client, status


async def open_many(port, count, batch, timeout):
    """Open `count` connections, `batch` at a time; return (clients, errors)."""
    loop = asyncio.get_running_loop()
    clients, errors = [], {}
    for start in range(0, count, batch):
        n = min(batch, count - start)
        results = await asyncio.gather(*(open_one(loop, port, timeout) for _ in range(n)),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                key = type(r).__name__ + (f" {r}" if str(r) else "")
                errors[key[:100]] = errors.get(key[:100], 0) + 1
            else:
                client, status = r
                if status != 200:
                    errors[f"status {status}"] = errors.get(f"status {status}", 0) + 1
                clients.append(client)
    return clients, errors


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=250, help="connections opened concurrently")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds idle before measuring")
    ap.add_argument("--time-limit", type=int, default=180, help="seconds for the whole run")
    ap.add_argument("--gateway-nofile", metavar="SOFT[:HARD]", default="",
                    help="RLIMIT_NOFILE for the gateway (default: inherit the raised one)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)

    procs = Procs()

    def abort(signum, frame):
        # An exception raised here would be swallowed by uvloop's signal
        # callback, so stop everything from the handler and leave at once.
        why = f"time limit of {args.time_limit} s reached" if signum == signal.SIGALRM \
            else f"signal {signal.Signals(signum).name}"
        print(f"ABORTED: {why}", file=sys.stderr, flush=True)
        procs.stop_all()
        os._exit(3 if signum == signal.SIGALRM else 128 + signum)
    for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, abort)
    signal.alarm(args.time_limit)

    need = args.conns + 1000   # per process: the client sockets here, the accepted ones in the gateway
    soft, hard = raise_nofile(need)
    print(f"RLIMIT_NOFILE of this script (inherited by the gateway): soft {soft}, hard {hard}"
          f"{'' if soft >= need else f' -- below the {need} this run needs'}")
    try:
        return run(args, procs)
    finally:
        signal.alarm(0)
        procs.stop_all()


def run(args, procs):
    up = procs.start([sys.executable, os.path.join(HERE, "upstream.py"), "--port", "0"])
    up_port = int(read_line(up, b"READY ", 10).split()[1])
    upstream = f"127.0.0.1:{up_port}"

    port = free_port()
    env = dict(os.environ)
    template = os.environ.get("PROXY_CMD")
    if template:
        argv = shlex.split(template.replace("$PORT", str(port)).replace("$UPSTREAM", upstream))
    else:
        cmd = shlex.split(os.environ.get("FASTGW_CMD", f"{sys.executable} -m fastgw"))
        if cmd[1:3] == ["-m", "fastgw"] and subprocess.run(
                [cmd[0], "-c", "import fastgw.cli"], cwd="/", capture_output=True).returncode != 0:
            env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = cmd + ["run", "--listen", f"127.0.0.1:{port}", "--upstream", f"http://{upstream}",
                      "--workers", "1"]
    preexec = None
    if args.gateway_nofile:
        soft, _, hard = args.gateway_nofile.partition(":")
        limits = (int(soft), int(hard) if hard else resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        print(f"gateway started with RLIMIT_NOFILE soft {limits[0]}, hard {limits[1]}")
        preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limits)  # noqa: E731
    print("gateway:", " ".join(argv))
    # the gateway's output goes to a file: a pipe nobody reads would block it
    log = tempfile.TemporaryFile()
    gw = procs.start(argv, stdout=log, env=env, preexec_fn=preexec)
    wait_listening(port, gw, log, 20)

    deadline = time.monotonic() + 5   # the master forks its worker right after binding
    workers = children(gw.pid)
    while not workers and time.monotonic() < deadline:
        time.sleep(0.1)
        workers = children(gw.pid)
    if len(workers) > 1:
        print(f"note: master {gw.pid} has {len(workers)} children {workers}; measuring the first")
    worker = workers[0] if workers else gw.pid
    procs.orphans.update(workers)
    role = "worker (child of master %d)" % gw.pid if workers else "process (no child: single-process mode)"
    w_soft, w_hard = nofile_limit(worker)
    print(f"measuring pid {worker}, the gateway {role}; its Max open files: soft {w_soft}, hard {w_hard}")

    async def measure():
        for _ in range(2):   # warm-up: pool, allocator, code paths
            clients, errors = await open_many(port, args.batch, args.batch, 10)
            for c in clients:
                c.transport.close()
            await asyncio.sleep(0.5)
        await asyncio.sleep(args.settle)
        base = status_kib(worker, "VmRSS")
        base_fds = fd_count(worker)

        t0 = time.monotonic()
        clients, errors = await open_many(port, args.conns, args.batch, 15)
        t_open = time.monotonic() - t0
        await asyncio.sleep(args.settle)
        open_now = sum(1 for c in clients if not c.closed)
        rss = status_kib(worker, "VmRSS")
        hwm = status_kib(worker, "VmHWM")
        fds = fd_count(worker)
        alive = _alive(worker)

        for c in clients:
            c.transport.close()
        await asyncio.sleep(args.settle)
        rss_closed = status_kib(worker, "VmRSS") if _alive(worker) else -1
        return dict(base=base, base_fds=base_fds, t_open=t_open, answered=len(clients),
                    errors=errors, open_now=open_now, rss=rss, hwm=hwm, fds=fds,
                    alive=alive, rss_closed=rss_closed)

    r = uvloop.run(measure())
    delta = r["rss"] - r["base"]
    per_conn = delta / r["open_now"] if r["open_now"] else float("nan")
    print()
    print(f"connections asked {args.conns}, answered {r['answered']} (opened in {r['t_open']:.1f} s, "
          f"{args.batch} at a time), still open after {args.settle:g} s idle: {r['open_now']}")
    if r["errors"]:
        print("errors:", ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())))
    print(f"worker fds: {r['base_fds']} before, {r['fds']} with the connections open")
    print(f"worker VmRSS: {r['base']} KiB before, {r['rss']} KiB with the connections open "
          f"(+{delta} KiB; VmHWM {r['hwm']} KiB), {r['rss_closed']} KiB after closing them")
    print(f"RESULT idle_conns={r['open_now']} rss_delta_kib={delta} kib_per_idle_conn={per_conn:.2f}")
    if not r["alive"]:
        print("the worker died during the run", file=sys.stderr)
        return 1
    return 0 if r["open_now"] == args.conns and not r["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
