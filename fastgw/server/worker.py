"""A worker process: one uvloop event loop serving the inherited listening
sockets end to end, until SIGTERM/SIGINT starts a drain."""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal

import uvloop

from fastgw.proxy.gateway import Gateway
from fastgw._native.proxy import ClientConnection

log = logging.getLogger("fastgw")

BACKLOG = 4096
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """If the master is killed outright, its workers get SIGTERM and drain
    instead of serving on forever as orphans."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def run_worker(config, sockets, index: int, limit_table=None, metrics=None) -> int:
    _die_with_parent()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    profile_to = os.environ.get("FASTGW_PROFILE")
    if profile_to:  # a developer's switch: cProfile this worker until it exits
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    try:
        return loop.run_until_complete(_serve(loop, config, sockets, index, limit_table, metrics))
    finally:
        loop.close()
        if profile_to:
            profiler.disable()
            profiler.dump_stats(f"{profile_to}.{index}")


async def _serve(loop, config, sockets, index: int, limit_table, metrics) -> int:
    # `metrics` is the master's SharedMetrics: this worker records into slot `index`.
    gateway = Gateway(config, loop, limit_table, metrics.process(index) if metrics is not None else None)
    servers = [await loop.create_server(lambda: ClientConnection(gateway), sock=sock,
                                        backlog=BACKLOG)
               for sock in sockets]
    stop = loop.create_future()

    def on_stop_signal(signum):
        if not stop.done():
            stop.set_result(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop_signal, signum)
    # The master handles SIGHUP; a worker ignores it rather than dying.
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)  # the master's (metrics dump)

    signum = await stop
    deadline = loop.time() + config.server.drain_timeout
    log.info("worker %d draining (%s), %d connections open", index,
             signal.Signals(signum).name, len(gateway.connections))
    for server in servers:
        server.close()
    await gateway.drain(deadline)
    return 0
