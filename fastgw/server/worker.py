"""A worker process: one uvloop event loop serving the inherited listening
sockets end to end (and the admin listener, off the request path), until a
signal ends it:

    SIGTERM   drain: answer with `Connection: close` at once, keep accepting
              for `server.timeouts.drain_delay`, then close the listeners and
              finish in-flight requests within `server.timeouts.drain`
    SIGINT    the same without the delay (an interactive Ctrl-C)
    SIGUSR2   retire (a reload replaced this generation): stop accepting at
              once, finish in-flight requests and open streams within
              `server.timeouts.reload_drain`

A second signal can only bring the deadline closer (SIGTERM while retiring:
the shutdown deadline applies).

Closing a listener without resetting what the kernel already accepted
    The listening sockets are shared by the master and every worker (one
    kernel socket, one accept queue, an fd in each process; with
    SO_REUSEPORT each worker's socket would have its own queue, reset when
    that worker closes it unless the host sets net.ipv4.tcp_migrate_req).
    When the last fd of a listening socket closes, the kernel
    resets every connection still in its accept queue: connections whose
    clients saw connect() succeed and may already have sent a request. So a
    worker keeps a spare fd of each listener (`dup`), and to stop accepting
    it closes the loop's server (which closes the loop's fd), then accepts
    whatever is queued on the spare until EAGAIN, closes the spare at once,
    and serves those connections like any other (`Connection: close`,
    within the drain deadline). The master closes its copies when the drain
    starts, so the last process to close is a worker, and it has just
    emptied the queue. What is left: a connection that completes its
    handshake between that last accept and the close (microseconds, longer
    only if the process is preempted right there), or whose handshake is in
    flight then (its SYN-ACK sent, its ACK not yet in), is still reset by
    the kernel; one that arrives after the close is refused. (nginx, for
    comparison, closes its listening sockets on a graceful shutdown without
    accepting what is queued, in the master and in each worker:
    ngx_close_listening_sockets from ngx_master_process_cycle and
    ngx_worker_process_cycle, src/os/unix/ngx_process_cycle.c; so whatever
    is queued at the last close is reset.)
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import signal
import socket

import uvloop

from fastgw.admin.server import AdminServer
from fastgw.admin.snapshot import worker_snapshot
from fastgw.observe.memtrace import install as install_memtrace
from fastgw.proxy.gateway import Gateway
from fastgw._native.proxy import ClientConnection

log = logging.getLogger("fastgw")

BACKLOG = 4096
_PR_SET_PDEATHSIG = 1
# How often a worker publishes its clusters' state on the status board.
PUBLISH_INTERVAL = 1.0
# At most this many connections are taken from one accept queue at the close
# (its length is bounded by the backlog anyway); bounds the loop under a flood.
MAX_QUEUED_ACCEPTS = BACKLOG


def _die_with_parent():
    """If the master is killed outright, its workers get SIGTERM and drain
    instead of serving on forever as orphans."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def run_worker(config, sockets, index: int, limit_table=None, metrics=None, *, admin_socket=None, board=None,
               slot=None, generation: int = 1, unblock=(), control=None) -> int:
    """`metrics`: the master's SharedMetrics (or None); this process records
    into the table's slot `slot` (its status-board slot: a reload runs two
    generations side by side, so slots are per process, not per index)."""
    _die_with_parent()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    profile_to = os.environ.get("FASTGW_PROFILE")
    if profile_to:  # a developer's switch: cProfile this worker until it exits
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    worker = Worker(loop, config, sockets, index, limit_table, admin_socket, board, slot, generation, metrics,
                    control)
    try:
        return loop.run_until_complete(worker.serve(unblock))
    finally:
        loop.close()
        if profile_to:
            profiler.disable()
            profiler.dump_stats(f"{profile_to}.{index}")


class Worker:
    def __init__(self, loop, config, sockets, index, limit_table, admin_socket, board, slot, generation,
                 metrics=None, control=None):
        self.loop = loop
        self.config = config
        self.sockets = sockets
        self.index = index
        self.admin_socket = admin_socket
        self.control = control  # fastgw/admin/control.py: config changes through the admin API
        self.board = board
        self.slot = slot
        self.generation = generation
        self.pid = os.getpid()
        self.master_pid = os.getppid()
        metrics_slot = slot if slot is not None else index
        self.gateway = Gateway(config, loop, limit_table,
                               metrics.process(metrics_slot) if metrics is not None else None)
        self.admin = None
        self.listeners: list[Listener] = []
        self.stopping = loop.create_future()
        self.close_listeners_at = 0.0
        self.close_now = asyncio.Event()
        self.mode = None  # None, "stop" or "retire"
        self._publisher = None
        self.accepting = False  # the listeners are being served (the board's "ready")

    async def serve(self, unblock) -> int:
        loop = self.loop
        gateway = self.gateway
        for sock in self.sockets:
            await self._listen(sock, lambda: ClientConnection(gateway))
        if self.admin_socket is not None:
            self.admin = AdminServer(self)
            await self._listen(self.admin_socket, self.admin.connection)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            loop.add_signal_handler(signum, self.on_signal, signum)
        # The master handles SIGHUP; a worker ignores it rather than dying.
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)  # the master's (metrics dump)
        # Opt-in (FASTGW_TRACEMALLOC): snapshots on SIGUSR1 and a timer; else None.
        memtrace = install_memtrace(loop)
        if unblock:  # blocked by the master across the fork: handlers are in place now
            signal.pthread_sigmask(signal.SIG_UNBLOCK, unblock)
        self.accepting = True
        self.publish()
        if self.admin is not None:  # the snapshots are read by the admin API only
            self._publisher = loop.call_later(PUBLISH_INTERVAL, self._publish_periodically)

        await self.stopping
        wait = self.close_listeners_at - loop.time()
        if wait > 0:  # still accepting: the load balancer is taking us out
            try:
                await asyncio.wait_for(self.close_now.wait(), wait)
            except TimeoutError:
                pass
        queued = self._stop_accepting()
        log.info("worker %d (generation %d) stops accepting; %d connections open, %d of them taken from "
                 "the accept queues at the close", self.index, self.generation,
                 len(gateway.connections) + len(queued), len(queued))
        # Tell the master: a reload's answer waits until the old workers stop accepting.
        self.accepting = False
        self.publish()
        # Registered as connections before the drain counts what is open.
        await asyncio.gather(*(self._serve_accepted(factory, conn) for factory, conn in queued))
        drains = [gateway.drain(gateway.drain_deadline)]
        if self.admin is not None:
            drains.append(self.admin.drain(gateway))
        await asyncio.gather(*drains)
        if self._publisher is not None:
            self._publisher.cancel()
        if memtrace is not None:
            memtrace.close()
        return 0

    async def _listen(self, sock: socket.socket, factory):
        # The spare fd keeps the kernel socket (and its queue) alive after the
        # loop's server closes its own fd: see "Closing a listener" above.
        spare = sock.dup()
        spare.setblocking(False)
        server = await self.loop.create_server(factory, sock=sock, backlog=BACKLOG)
        self.listeners.append(Listener(server, spare, factory))

    def _stop_accepting(self) -> list[tuple]:
        """Close every listener this worker serves, first taking what its
        accept queue holds: [(protocol factory, accepted socket)]."""
        queued = []
        for listener in self.listeners:
            listener.server.close()   # the loop no longer accepts on it
        for listener in self.listeners:
            # No await between the last accept and the close: the window in
            # which a new arrival could still be reset stays microseconds.
            taken = accept_queued(listener.spare)
            listener.spare.close()
            queued += [(listener.factory, conn) for conn in taken]
        self.listeners.clear()
        return queued

    async def _serve_accepted(self, factory, conn: socket.socket):
        try:
            await self.loop.connect_accepted_socket(factory, conn)
        except OSError as error:   # e.g. the client is already gone
            log.info("worker %d: a connection taken from the accept queue failed: %s", self.index, error)
            conn.close()

    def on_signal(self, signum):
        now = self.loop.time()
        server = self.config.server
        if signum == signal.SIGUSR2:
            deadline = now + server.reload_drain
            close_at = now
        else:
            delay = server.drain_delay if signum == signal.SIGTERM and self.mode is None else 0.0
            close_at = now + delay
            deadline = close_at + server.drain_timeout
        if self.mode is not None:  # already going: only ever sooner (a second Ctrl-C: now)
            self.gateway.drain_deadline = min(self.gateway.drain_deadline, deadline)
            if close_at < self.close_listeners_at:
                self.close_listeners_at = close_at
                self.close_now.set()
            return
        self.mode = "retire" if signum == signal.SIGUSR2 else "stop"
        log.info("worker %d (generation %d): %s", self.index, self.generation,
                 f"retiring after a reload, deadline {server.reload_drain:g}s" if self.mode == "retire"
                 else f"{signal.Signals(signum).name}: draining, listeners close in {close_at - now:g}s")
        # From now on responses say `Connection: close`, so clients move on.
        self.gateway.draining = True
        self.gateway.drain_deadline = deadline
        self.close_listeners_at = close_at
        self.stopping.set_result(None)

    # -- status board ------------------------------------------------------------
    def publish(self):
        if self.board is None:
            return
        self.board.publish(self.slot, self.pid, self.generation, self.index, self.accepting,
                           worker_snapshot(self.gateway))

    def _publish_periodically(self):
        try:
            self.publish()
        except Exception as error:  # the board is diagnostics: never let it stop serving
            log.warning("status board publish failed: %r", error)
        self._publisher = self.loop.call_later(PUBLISH_INTERVAL, self._publish_periodically)


class Listener:
    """One listening socket a worker serves: the loop's server, and a spare fd
    of the same kernel socket for emptying its accept queue at the close."""
    __slots__ = ("server", "spare", "factory")

    def __init__(self, server, spare: socket.socket, factory):
        self.server = server
        self.spare = spare
        self.factory = factory


def accept_queued(sock: socket.socket, limit: int = MAX_QUEUED_ACCEPTS) -> list[socket.socket]:
    """Accept, without blocking, what the kernel has queued on `sock`."""
    taken = []
    while len(taken) < limit:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            break
        except OSError as error:
            if error.errno == errno.ECONNABORTED:   # reset by the client while queued: the next one
                continue
            # EMFILE/ENFILE/ENOBUFS: what is still queued is reset by the close.
            log.warning("accepting the queued connections at the close: %s", error)
            break
        conn.setblocking(False)
        taken.append(conn)
    return taken
