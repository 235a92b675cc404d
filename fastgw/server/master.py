"""The master process: binds the listeners, forks the workers, restarts a
worker that dies, and turns SIGTERM/SIGINT into a graceful drain.

Workers share the listening sockets bound here (accept on a shared socket),
so a restarted worker serves the same ports and no connection is refused
while one is down. The master runs no event loop: it waits for signals with
sigtimedwait, which keeps it simple and immune to signal races.
"""
from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import sys
import time
import traceback

from fastgw import __version__
from fastgw.config.model import Config
from fastgw.observe.metrics import create_metrics, render_prometheus
from fastgw.policy import concurrency
from fastgw.policy.ratelimit import create_table
from fastgw.proxy.gateway import setup_logging

log = logging.getLogger("fastgw")

WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}
# A worker that dies sooner than this after its start is restarted after a pause,
# so a worker that can't start doesn't become a fork loop.
QUICK_DEATH = 1.0
RESTART_PAUSE = 1.0
# The master gives workers this long beyond the drain deadline before SIGKILL.
KILL_GRACE = 5.0


def serve(config: Config) -> int:
    setup_logging()
    _raise_fd_limit()
    sockets = []
    for listener in config.listeners:
        try:
            sockets.append(_bind(listener.host, listener.port))
        except OSError as err:
            log.error("cannot listen on %s:%d (listener %r): %s", listener.host, listener.port,
                      listener.name, err.strerror or err)
            return 1
    workers = config.server.workers or os.cpu_count() or 1
    # Shared memory every worker must map: created once, here, before the forks.
    limit_table = create_table(config)
    metrics = create_metrics(config, workers)
    concurrency.create_table(config, workers)  # inherited by the forks (fastgw/policy/concurrency.py)
    return Master(config, sockets, workers, limit_table, metrics).run()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def _raise_fd_limit():
    """One fd per client plus one per upstream connection: use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


class Master:
    def __init__(self, config: Config, sockets, count: int, limit_table, metrics=None):
        self.config = config
        self.sockets = sockets
        self.limit_table = limit_table
        self.metrics = metrics  # SharedMetrics or None; render_prometheus(self.metrics)
        self.count = count
        self.workers: dict[int, tuple[int, float]] = {}  # pid -> (index, started at)
        self.restart_at: dict[int, float] = {}           # index -> when to restart

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        for index in range(self.count):
            self._spawn(index)
        addresses = ", ".join(f"{l.host}:{l.port}" for l in self.config.listeners)
        log.info("fastgw %s listening on %s with %d worker(s) (config: %s)",
                 __version__, addresses, self.count, self.config.source)
        while True:
            info = signal.sigtimedwait(WATCHED, 0.5)
            if info is None:
                self._restart_due()
                continue
            signum = info.si_signo
            if signum == signal.SIGCHLD:
                self._reap(stopping=False)
                self._restart_due()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                return self._stop(signal.Signals(signum).name)
            elif signum == signal.SIGUSR1:
                self._dump_metrics()
            elif signum == signal.SIGHUP:
                log.warning("SIGHUP ignored: hot reload is not implemented yet; "
                            "restart fastgw to apply a new config")

    def _dump_metrics(self):
        """A developer's and tests' switch until the admin listener serves
        /metrics: SIGUSR1 writes the Prometheus text to $FASTGW_METRICS_DUMP."""
        path = os.environ.get("FASTGW_METRICS_DUMP")
        if not path or self.metrics is None:
            log.warning("SIGUSR1 ignored: %s", "metrics are off" if path else "FASTGW_METRICS_DUMP is not set")
            return
        text = render_prometheus(self.metrics)
        with open(path + ".tmp", "wb") as out:
            out.write(text)
        os.replace(path + ".tmp", path)

    def _spawn(self, index: int):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
                from fastgw.server.worker import run_worker
                code = run_worker(self.config, self.sockets, index, self.limit_table, self.metrics)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        self.workers[pid] = (index, time.monotonic())
        log.info("worker %d started (pid %d)", index, pid)

    def _reap(self, stopping: bool):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.workers.pop(pid, None)
            if entry is None:
                continue
            index, started = entry
            if stopping:
                continue
            how = (f"was killed by {signal.Signals(-os.waitstatus_to_exitcode(status)).name}"
                   if os.WIFSIGNALED(status) else f"exited with {os.waitstatus_to_exitcode(status)}")
            lived = time.monotonic() - started
            log.error("worker %d (pid %d) %s after %.1fs; restarting it", index, pid, how, lived)
            self.restart_at[index] = time.monotonic() + (RESTART_PAUSE if lived < QUICK_DEATH else 0)

    def _restart_due(self):
        now = time.monotonic()
        for index, when in list(self.restart_at.items()):
            if when <= now:
                del self.restart_at[index]
                self._spawn(index)

    def _stop(self, why: str) -> int:
        log.info("%s: draining %d worker(s), deadline %gs", why, len(self.workers),
                 self.config.server.drain_timeout)
        for sock in self.sockets:
            sock.close()  # new connections are refused from now on
        for pid in self.workers:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.server.drain_timeout + KILL_GRACE
        while self.workers and time.monotonic() < deadline:
            signal.sigtimedwait({signal.SIGCHLD}, 0.2)
            self._reap(stopping=True)
        for pid in self.workers:
            log.error("worker pid %d did not finish draining; killing it", pid)
            _signal(pid, signal.SIGKILL)
        log.info("stopped")
        return 0


def _signal(pid: int, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
