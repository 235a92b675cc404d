"""The master process: binds the listeners, forks the workers, restarts a
worker that dies, reloads the config on SIGHUP, and turns SIGTERM/SIGINT
into a graceful drain.

Workers share the listening sockets bound here (accept on a shared socket),
so a restarted worker serves the same ports and no connection is refused
while one is down. The master runs no event loop: it waits for signals with
sigtimedwait, which keeps it simple and immune to signal races; a reload is
a plain blocking procedure (nothing else needs the master meanwhile: it
serves no traffic).

Generations and hot reload
    Every set of workers started from one config is a generation. SIGHUP
    (sent by an operator, or by a worker answering `POST /reload`) loads and
    validates the file again; an invalid config leaves everything running
    and every error is logged and recorded on the status board (board.py).
    A valid one gets a new generation: listeners whose address is unchanged
    keep their socket (the same kernel accept queue, so no connection is
    refused), new addresses are bound first (a bind failure fails the
    reload), the new workers are forked and must report ready, then the old
    generation is told to retire (SIGUSR2) and the reload counts as done once
    its workers report they no longer accept (so a connection made after
    `POST /reload` answered meets the new config): a retiring worker
    stops accepting at once, answers what it has in flight with
    `Connection: close`, and keeps open
    streams (WebSocket, SSE) until they end or its `reload_drain` deadline
    passes. Only then are removed listeners' sockets closed (the last copy
    closes with the last old worker). If a new worker dies or is not ready
    in time, the new generation is killed and the old one keeps serving.
    The rate-limit table is kept across a reload when its size is unchanged,
    so limits carry on counting.

Drain (SIGTERM, or `POST /drain`)
    The board's draining flag is set at once, so /readyz answers 503; the
    workers keep accepting for `server.timeouts.drain_delay` (for the load
    balancer to notice), answering with `Connection: close`, then close
    their listeners and finish in-flight requests within
    `server.timeouts.drain`. SIGINT (Ctrl-C) drains without the delay: no
    load balancer waits on an interactive run. The master closes its copies
    of the listening sockets first, so the last process to close one is a
    worker, and a worker accepts what the kernel has queued before it
    closes (worker.py, "Closing a listener"): a connection already accepted
    by the kernel is answered, not reset; one that comes after the close is
    refused. What remains is a connection completing its handshake in the
    microseconds between that last accept and the close; the delay exists
    so that, by then, the load balancer sends nothing more (a reload never
    closes a kept listener, so it has no such instant).
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
from collections.abc import Callable

from fastgw import __version__
from fastgw.config.errors import ConfigError
from fastgw.config.model import Config
from fastgw.config.schema import format_address
from fastgw.observe.metrics import create_metrics, render_prometheus
from fastgw.policy import concurrency
from fastgw.policy.ratelimit import create_table
from fastgw.observe import process_log
from fastgw.server.notify import notify
from fastgw.server.notify import reloading as notify_reloading
from fastgw.server.board import StatusBoard
# Imported here, before any fork: a worker that had to import its modules
# itself would start (and take over after a reload) that much later.
from fastgw.server.worker import run_worker
from fastgw.admin.control import Control

log = logging.getLogger("fastgw")

WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}
# Blocked in the master so that a freshly forked worker starts with them
# blocked and unblocks them once its handlers are installed.
BLOCKED = WATCHED | {signal.SIGUSR2}
RETIRE_SIGNAL = signal.SIGUSR2
# A worker that dies sooner than this after its start is restarted after a pause,
# so a worker that can't start doesn't become a fork loop.
QUICK_DEATH = 1.0
RESTART_PAUSE = 1.0
# The master gives workers this long beyond the drain deadline before SIGKILL.
KILL_GRACE = 5.0
# A reload's new workers must be serving within this, or the reload fails.
READY_TIMEOUT = 15.0
# Retiring workers confirm they stopped accepting within this (normally ms).
RETIRE_ACK_TIMEOUT = 5.0

Address = tuple[str, int]


class ListenError(Exception):
    pass


def serve(config: Config, reloader: Callable[[], Config] | None = None) -> int:
    """Run the gateway until drained. `reloader` loads and validates the
    config again (raising ConfigError); None when there is no file to reload."""
    process_log.install()
    # From the start: a SIGHUP or SIGTERM while binding waits for the loop
    # instead of killing the master by the default action.
    signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
    _raise_fd_limit()
    sockets: dict[Address, socket.socket] = {}
    try:
        for address, what in _addresses(config):
            sockets[address] = _bind(address, what)
    except ListenError as error:
        log.error("%s", error)
        for sock in sockets.values():
            sock.close()
        return 1
    workers = config.server.workers or os.cpu_count() or 1
    capacity = max(32, 4 * workers)
    board = StatusBoard(capacity)
    # Shared memory every worker must map: created once, here, before the forks.
    # The metrics table has a slot per board slot (a worker records into its
    # own; a reload runs two generations side by side) plus the master's.
    metrics = create_metrics(config, capacity)
    if metrics is not None:
        metrics.workers = workers  # what fastgw_workers shows: the configured count
    # Concurrency slots: a row per process that may run at once (both
    # generations of a reload), inherited by the forks.
    concurrency.create_table(config, capacity)
    # Config changes through the admin API (fastgw/admin/control.py): the
    # lock, the document handed to a reload, and the shared audit ring.
    control = Control()
    try:
        return Master(config, sockets, board, reloader, metrics, control).run()
    finally:
        control.close()


def _addresses(config: Config) -> list[tuple[Address, str]]:
    wanted = [((l.host, l.port), f"listener {l.name!r}") for l in config.listeners]
    if config.admin.enabled:
        wanted.append(((config.admin.host, config.admin.port), "admin listener"))
    return wanted


def _bind(address: Address, what: str) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(4096)
    except OSError as err:
        sock.close()
        raise ListenError(f"cannot listen on {format_address(host, port)} ({what}): {err.strerror or err}") from None
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


class Generation:
    """The workers started from one config, and what they serve."""

    def __init__(self, number: int, config: Config, sockets: dict[Address, socket.socket], limit_table):
        self.number = number
        self.config = config
        self.sockets = sockets           # every address this generation listens on
        self.limit_table = limit_table
        self.count = config.server.workers or os.cpu_count() or 1

    @property
    def public_sockets(self) -> list[socket.socket]:
        return [self.sockets[(l.host, l.port)] for l in self.config.listeners]

    @property
    def admin_socket(self) -> socket.socket | None:
        admin = self.config.admin
        return self.sockets[(admin.host, admin.port)] if admin.enabled else None


class WorkerProcess:
    __slots__ = ("pid", "index", "generation", "started", "slot", "kill_at")

    def __init__(self, pid: int, index: int, generation: Generation, slot: int):
        self.pid = pid
        self.index = index
        self.generation = generation
        self.started = time.monotonic()
        self.slot = slot
        self.kill_at: float | None = None  # set when retiring or stopping


class Master:
    def __init__(self, config: Config, sockets: dict[Address, socket.socket], board: StatusBoard,
                 reloader: Callable[..., Config] | None = None, metrics=None, control: Control | None = None):
        self.board = board
        self.reloader = reloader   # reloader() reads the file again, reloader(document) builds that document
        self.control = control
        self._change: str | None = None  # the id of the admin API change being reloaded, if any
        self.metrics = metrics  # SharedMetrics or None; render_prometheus(self.metrics)
        self.current = Generation(1, config, sockets, create_table(config))
        self.workers: dict[int, WorkerProcess] = {}
        self.restart_at: dict[int, float] = {}  # index -> when to restart (current generation)
        self.free_slots = list(range(board.capacity - 1, -1, -1))

    # -- the loop ------------------------------------------------------------------
    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
        self.board.set_generation(self.current.number)
        for index in range(self.current.count):
            self._spawn(self.current, index)
        config = self.current.config
        admin = (f"; admin API on {format_address(config.admin.host, config.admin.port)}"
                 if config.admin.enabled else "")
        log.info("fastgw %s listening on %s with %d worker(s) (config: %s)%s", __version__,
                 ", ".join(format_address(l.host, l.port) for l in config.listeners),
                 self.current.count, config.source, admin)
        # systemd (Type=notify): ready once the first workers accept. A worker
        # that died first is restarted by the loop below, which notifies then.
        ready = self._wait_ready(list(self.workers.values())) is None and notify("READY=1")
        while True:
            info = signal.sigtimedwait(WATCHED, 0.5)
            if info is None:
                self._restart_due()
                self._kill_overdue()
                if not ready and self.workers and all(self._accepting(w) for w in self.workers.values()):
                    ready = notify("READY=1") or True
                continue
            signum = info.si_signo
            if signum == signal.SIGCHLD:
                self._reap(stopping=False)
                self._restart_due()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                return self._stop(signal.Signals(signum))
            elif signum == signal.SIGUSR1:
                self._dump_metrics()
            elif signum == signal.SIGHUP:
                self._reload()

    def _dump_metrics(self):
        """A developer's and tests' switch (the admin listener serves
        /metrics): SIGUSR1 writes the Prometheus text to $FASTGW_METRICS_DUMP."""
        path = os.environ.get("FASTGW_METRICS_DUMP")
        if not path or self.metrics is None:
            log.warning("SIGUSR1 ignored: %s", "metrics are off" if path else "FASTGW_METRICS_DUMP is not set")
            return
        text = render_prometheus(self.metrics)
        with open(path + ".tmp", "wb") as out:
            out.write(text)
        os.replace(path + ".tmp", path)

    def _metrics_for(self, config: Config):
        """The shared table for workers of `config` (None: metrics off in it;
        a table exists only if the first config had metrics on)."""
        return self.metrics if config.observe.metrics.enabled else None

    def _spawn(self, generation: Generation, index: int) -> WorkerProcess:
        slot = self.free_slots.pop()
        keep = {sock.fileno() for sock in generation.sockets.values()}
        others = [s for g in self._generations() for s in g.sockets.values() if s.fileno() not in keep]
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                # Sockets of other generations (e.g. a listener being removed)
                # must not stay open because a new worker holds a copy.
                for sock in others:
                    sock.close()
                code = run_worker(generation.config, generation.public_sockets, index, generation.limit_table,
                                  self._metrics_for(generation.config), admin_socket=generation.admin_socket, board=self.board, slot=slot, control=self.control,
                                  generation=generation.number, unblock=BLOCKED)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        worker = WorkerProcess(pid, index, generation, slot)
        self.workers[pid] = worker
        log.info("worker %d started (pid %d, generation %d)", index, pid, generation.number)
        return worker

    def _generations(self) -> list[Generation]:
        gens = {id(w.generation): w.generation for w in self.workers.values()}
        gens[id(self.current)] = self.current
        return list(gens.values())

    def _reap(self, stopping: bool):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self.board.clear_slot(worker.slot)
            self.free_slots.append(worker.slot)
            if stopping:
                continue
            how = (f"was killed by {signal.Signals(-os.waitstatus_to_exitcode(status)).name}"
                   if os.WIFSIGNALED(status) else f"exited with {os.waitstatus_to_exitcode(status)}")
            if worker.generation.number > self.current.number:
                log.error("worker %d (pid %d) of the new generation %d %s before it was ready",
                          worker.index, pid, worker.generation.number, how)
                continue
            if worker.generation is not self.current or worker.kill_at is not None:
                log.info("worker %d (pid %d) of generation %d %s after retiring", worker.index, pid,
                         worker.generation.number, how)
                continue
            lived = time.monotonic() - worker.started
            log.error("worker %d (pid %d) %s after %.1fs; restarting it", worker.index, pid, how, lived)
            self.restart_at[worker.index] = time.monotonic() + (RESTART_PAUSE if lived < QUICK_DEATH else 0)

    def _restart_due(self):
        now = time.monotonic()
        for index, when in list(self.restart_at.items()):
            if when <= now:
                del self.restart_at[index]
                self._spawn(self.current, index)

    def _kill_overdue(self):
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.kill_at is not None and worker.kill_at <= now:
                log.error("worker %d (pid %d, generation %d) did not finish draining; killing it",
                          worker.index, worker.pid, worker.generation.number)
                _signal(worker.pid, signal.SIGKILL)
                worker.kill_at = float("inf")

    # -- reload ----------------------------------------------------------------------
    def _reload(self):
        self.board.reload_started()
        old = self.current
        # A worker answering PUT/PATCH /config left the validated document here.
        pending = self.control.take_pending() if self.control is not None else None
        # Its id goes into the result, so the worker knows the reload that ran was its own.
        self._change = pending["id"] if pending is not None else None
        log.info("SIGHUP: reloading %s", "the config given through the admin API" if pending is not None
                 else old.config.source)
        notify_reloading()
        try:
            return self._reload_generation(old, pending["document"] if pending is not None else None)
        finally:
            notify("READY=1")   # done or failed: a generation serves either way

    def _reload_generation(self, old, pending=None):
        if self.reloader is None:
            return self._reload_failed("reload_unavailable", [
                "started with --upstream: there is no config file to reload (use fastgw run --config FILE)"])
        try:
            config = self.reloader() if pending is None else self.reloader(pending)
        except ConfigError as error:
            return self._reload_failed("invalid_config", error.errors)
        except Exception as error:  # a bug must not take the running gateway down
            log.exception("reload: unexpected error while loading the config")
            return self._reload_failed("reload_failed", [f"unexpected error while loading the config: {error!r}"])

        fresh: list[socket.socket] = []
        sockets: dict[Address, socket.socket] = {}
        try:
            for address, what in _addresses(config):
                if address in old.sockets:
                    sockets[address] = old.sockets[address]
                else:
                    sockets[address] = _bind(address, what)
                    fresh.append(sockets[address])
        except ListenError as error:
            for sock in fresh:
                sock.close()
            return self._reload_failed("reload_failed", [str(error)])

        concurrency.table_for_reload(config)  # kept when the limits are the same ones
        generation = Generation(old.number + 1, config, sockets, self._limit_table_for(config))
        if self.metrics is not None:
            # Blocks for the new config's routes and endpoints, here before the
            # fork, so that every later generation inherits the same layout
            # (known names keep their cells: counters carry on).
            left_out = self.metrics.layout.adopt(config)
            if left_out:
                log.warning("metrics: no room left in the shared table for %s; restart to count them",
                            ", ".join(left_out))
        if generation.count > len(self.free_slots):
            for sock in fresh:
                sock.close()
            return self._reload_failed("reload_failed", [
                f"{generation.count} new workers while {len(self.workers)} run: more than this master can track "
                f"({self.board.capacity}); restart fastgw to change server.workers this much"])
        counted = self.metrics.workers if self.metrics is not None else 0
        if self.metrics is not None:
            self.metrics.workers = generation.count  # inherited by the new workers, which render /metrics
        started = [self._spawn(generation, index) for index in range(generation.count)]
        problem = self._wait_ready(started)
        if problem is not None:
            for worker in started:
                _signal(worker.pid, signal.SIGKILL)
            self._wait_gone(started)
            for sock in fresh:
                sock.close()
            if self.metrics is not None:
                self.metrics.workers = counted
            return self._reload_failed("reload_failed", [problem])

        self.current = generation
        self.board.set_generation(generation.number)
        self.restart_at.clear()  # the old generation's dead workers are not replaced now
        now = time.monotonic()
        retiring = []
        for worker in self.workers.values():
            if worker.generation is not generation and worker.kill_at is None:
                worker.kill_at = now + worker.generation.config.server.reload_drain + KILL_GRACE
                _signal(worker.pid, RETIRE_SIGNAL)
                retiring.append(worker)
        self._wait_not_accepting(retiring)
        for address, sock in old.sockets.items():
            if address not in sockets:
                sock.close()  # the retiring workers hold the last copies
        log.info("reload done: generation %d serving (%d worker(s)); generation %d retiring",
                 generation.number, generation.count, old.number)
        self.board.reload_done({"ok": True, "generation": generation.number, "errors": [], "change": self._change})

    def _reload_failed(self, code: str, errors: list[str]):
        for line in errors:
            log.error("reload: %s", line)
        log.error("reload failed (%s): generation %d keeps serving the previous config",
                  code, self.current.number)
        self.board.reload_done({"ok": False, "code": code, "generation": self.current.number, "errors": errors,
                                "change": self._change})

    def _limit_table_for(self, config: Config):
        """Reuse the shared rate-limit table when the new config wants one of
        the same size: the counts carry on across the reload."""
        old = self.current
        if old.limit_table is not None and any(r.rate_limits for r in config.routes) \
                and config.server.rate_limit_slots == old.config.server.rate_limit_slots:
            return old.limit_table
        return create_table(config)

    def _wait_ready(self, started: list[WorkerProcess]) -> str | None:
        """None once every new worker serves; otherwise what went wrong.
        Other signals stay pending meanwhile (a SIGTERM is handled after)."""
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = {w.pid: w for w in started}
        while waiting:
            for pid, worker in list(waiting.items()):
                if pid not in self.workers:
                    return (f"a new worker (pid {pid}) exited before it was ready; "
                            f"see the log above for its error")
                if self._accepting(worker):
                    del waiting[pid]
            if not waiting:
                return None
            if time.monotonic() > deadline:
                return f"the new workers were not ready within {READY_TIMEOUT:g}s"
            signal.sigtimedwait({signal.SIGCHLD}, 0.02)
            self._reap(stopping=False)
        return None

    def _wait_not_accepting(self, workers: list[WorkerProcess]):
        """Until the retiring workers have closed their listeners, so that a
        connection made after the reload's answer reaches the new config."""
        deadline = time.monotonic() + RETIRE_ACK_TIMEOUT
        waiting = list(workers)
        while waiting and time.monotonic() < deadline:
            waiting = [w for w in waiting if w.pid in self.workers and self._accepting(w)]
            if waiting:
                signal.sigtimedwait({signal.SIGCHLD}, 0.01)
                self._reap(stopping=False)
        for worker in waiting:
            log.warning("worker %d (pid %d) of generation %d still accepts %gs after it was told to retire",
                        worker.index, worker.pid, worker.generation.number, RETIRE_ACK_TIMEOUT)

    def _accepting(self, worker: WorkerProcess) -> bool:
        slot = self.board.slot(worker.slot)
        return slot is not None and slot.pid == worker.pid and slot.ready

    def _wait_gone(self, workers: list[WorkerProcess]):
        deadline = time.monotonic() + KILL_GRACE
        while any(w.pid in self.workers for w in workers) and time.monotonic() < deadline:
            signal.sigtimedwait({signal.SIGCHLD}, 0.05)
            self._reap(stopping=True)

    # -- drain -----------------------------------------------------------------------
    def _stop(self, signum: signal.Signals) -> int:
        self.board.set_draining()  # /readyz answers 503 from now on
        notify("STOPPING=1")
        settings = self.current.config.server
        delay = settings.drain_delay if signum == signal.SIGTERM else 0.0
        log.info("%s: draining %d worker(s): listeners close in %gs, then in-flight requests get %gs",
                 signum.name, len(self.workers), delay, settings.drain_timeout)
        # The workers hold their own copies: the listeners stay open until they
        # close them. Closed here first, so the last close is a worker's, which
        # empties the accept queue just before (a close here would reset it).
        for generation in self._generations():
            for sock in generation.sockets.values():
                sock.close()
        for pid in self.workers:
            _signal(pid, signum)
        deadline = time.monotonic() + delay + settings.drain_timeout + KILL_GRACE
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
