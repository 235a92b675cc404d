"""Opt-in tracemalloc snapshots of a worker, to find what grows under load.

    FASTGW_TRACEMALLOC=/tmp/gw          # on: snapshots to /tmp/gw.<pid>.<n>
    FASTGW_TRACEMALLOC_FRAMES=8         # frames kept per allocation (default 6)
    FASTGW_TRACEMALLOC_INTERVAL=60      # seconds between snapshots; 0: on signal only

With the variable set, each worker starts tracemalloc when it starts, writes
snapshot 0 at once, then one every interval and one on SIGUSR1 sent to the
worker's PID (`kill -USR1 <worker pid>`). SIGUSR1 because SIGUSR2 already
means "retire" to a worker; the master's SIGUSR1 (metrics dump) is not
forwarded to workers, which otherwise ignore it. Snapshots are
`tracemalloc.Snapshot.dump` files: compare two with
`bench/memdiff.py A B` (statistics("traceback") diff).

Unset, nothing is imported or started: zero cost on the request path.
tracemalloc itself slows a worker down several times; it is a diagnostic.
"""
from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("fastgw")

ENV_PREFIX = "FASTGW_TRACEMALLOC"
ENV_FRAMES = "FASTGW_TRACEMALLOC_FRAMES"
ENV_INTERVAL = "FASTGW_TRACEMALLOC_INTERVAL"
DEFAULT_FRAMES = 6
DEFAULT_INTERVAL = 60.0


class MemTrace:
    """Writes numbered snapshots `<prefix>.<pid>.<n>` (n from 0)."""

    def __init__(self, loop, prefix: str, interval: float, frames: int):
        import tracemalloc
        self.tracemalloc = tracemalloc
        self.loop = loop
        self.prefix = prefix
        self.interval = interval
        self.count = 0
        self.timer = None
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)

    def start(self):
        self.snapshot()
        self.loop.add_signal_handler(signal.SIGUSR1, self.snapshot)
        if self.interval > 0:
            self.timer = self.loop.call_later(self.interval, self._tick)

    def _tick(self):
        self.snapshot()
        self.timer = self.loop.call_later(self.interval, self._tick)

    def snapshot(self) -> str | None:
        """Write the next snapshot; its path, or None when writing failed (a
        diagnostic must not take the worker down)."""
        path = f"{self.prefix}.{os.getpid()}.{self.count}"
        try:
            self.tracemalloc.take_snapshot().dump(path)
        except OSError as error:
            log.warning("tracemalloc snapshot to %s failed: %s", path, error)
            return None
        self.count += 1
        traced, peak = self.tracemalloc.get_traced_memory()
        log.info("tracemalloc snapshot %s (traced %.1f MiB, peak %.1f MiB)", path,
                 traced / 1048576, peak / 1048576)
        return path

    def close(self):
        """Stop the timer and write a last snapshot (the worker is ending)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.snapshot()


def install(loop, environ=os.environ) -> MemTrace | None:
    """Start snapshotting when FASTGW_TRACEMALLOC is set; else None, nothing done."""
    prefix = environ.get(ENV_PREFIX)
    if not prefix:
        return None
    try:
        frames = int(environ.get(ENV_FRAMES) or DEFAULT_FRAMES)
        interval = float(environ.get(ENV_INTERVAL) or DEFAULT_INTERVAL)
    except ValueError as error:
        log.warning("%s ignored: %s", ENV_PREFIX, error)
        return None
    trace = MemTrace(loop, prefix, interval, max(1, frames))
    trace.start()
    return trace
