"""The access log: one JSON line per request, buffered.

A line (keys always present, null when unknown):

    {"time": "2026-11-22T09:15:02.123Z", "request_id": "...", "trace_id": "4bf9...",
     "client_ip": "127.0.0.1", "method": "GET", "path": "/users/7?token=REDACTED",
     "route": "users", "status": 200, "bytes_in": 0, "bytes_out": 512,
     "duration_ms": 1.84, "upstream_ms": 1.52, "upstream": "127.0.0.1:9001",
     "retries": 0, "rate_limit": "allowed", "headers": {"user-agent": "curl/8"}}

`time` is when the exchange ended (UTC, ms); `duration_ms` runs from the
end of the request head to then, `upstream_ms` is the time spent on
upstream endpoints (checkout or dial to release, summed over attempts).
`path` is the request target as received with the values of the
`redact_query` parameters replaced by REDACTED; `headers` holds the request
headers named in `headers`, those in `redact_headers` as REDACTED. `status`
0 means the client got no response (it went away first). `rate_limit` is
null on routes without limits. `retries` counts upstream attempts after the
first (Exchange.retries). `trace_id` is the trace the upstream request was
sent in (tracing.propagate), else the client's valid traceparent's, else null.

Lines are buffered in the worker and written with one write() when the
buffer passes 64 KiB, every `flush_interval`, and at exit (drain). Each
worker opens the file with O_APPEND, and a write never splits a line, so
workers' lines never interleave; on a pipe (stdout under a supervisor) the
writes are cut at line ends into pieces of at most PIPE_BUF bytes, which
the kernel writes whole. A full pipe blocks the worker: point a busy
gateway's log at a file. `sampling` logs that share of requests, chosen at
random per request.

The line is built in C by fastgw/_native/accesslog.pyx (AccessLineBuffer,
which this class extends): Exchange._account hands it its typed fields
directly; `log(exchange)` takes any object with the exchange's attributes
(Observers, tests). Writing the buffer out stays here, off the request path.
"""
from __future__ import annotations

import logging
import os
import stat

from fastgw._native.accesslog import AccessLineBuffer

log = logging.getLogger("fastgw")

BUFFER_LIMIT = 64 * 1024


def make_access_log(settings, loop):
    """An AccessLog for this worker, or None when the log is off."""
    if not settings.enabled or settings.sampling <= 0:
        return None
    return AccessLog(settings, loop)


def _open(path):
    if path is None:
        return 1, False
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    return fd, True


class AccessLog(AccessLineBuffer):
    def __init__(self, settings, loop):
        super().__init__(settings.sampling, settings.headers, settings.redact_headers,
                         [q.encode() for q in settings.redact_query], BUFFER_LIMIT)
        self.settings = settings
        self.loop = loop
        self.fd, self.owns_fd = _open(settings.path)
        self.pipe = stat.S_ISFIFO(os.fstat(self.fd).st_mode)
        self.timer = loop.call_later(settings.flush_interval, self._tick)
        self.closed = False

    # -- writing ------------------------------------------------------------------
    def _tick(self):
        self.flush()
        if not self.closed:
            self.timer = self.loop.call_later(self.settings.flush_interval, self._tick)

    def flush(self) -> None:
        """Write the buffered lines (AccessLineBuffer calls this at `limit` bytes)."""
        data = self.take()
        if not data:
            return
        try:
            if self.pipe:
                self._write_pieces(data)
            else:
                _write_all(self.fd, data)
        except OSError as err:
            log.error("access log: write failed, %d lines lost: %s", data.count(b"\n"), err.strerror or err)

    def _write_pieces(self, data: bytes):
        """Pieces of whole lines, each at most PIPE_BUF bytes unless one line
        alone is longer (then that line by itself)."""
        limit = select_pipe_buf()
        start, end = 0, len(data)
        while start < end:
            if end - start <= limit:
                cut = end
            else:
                cut = data.rfind(b"\n", start, start + limit) + 1
                if cut <= start:  # one line longer than the limit
                    cut = data.index(b"\n", start) + 1
            _write_all(self.fd, data[start:cut])
            start = cut

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.timer.cancel()
        self.flush()
        if self.owns_fd:
            os.close(self.fd)


def select_pipe_buf() -> int:
    return 4096  # POSIX PIPE_BUF on Linux: writes up to this size are atomic


def _write_all(fd, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
