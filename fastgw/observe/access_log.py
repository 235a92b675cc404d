"""The access log: one JSON line per request (orjson), buffered.

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
"""
from __future__ import annotations

import logging
import os
import random
import stat
import time

import orjson

from fastgw._native.headers import trace_id_of

log = logging.getLogger("fastgw")

BUFFER_LIMIT = 64 * 1024
REDACTED = "REDACTED"
RATE_LIMIT = (None, "allowed", "denied")


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


class AccessLog:
    def __init__(self, settings, loop):
        self.settings = settings
        self.loop = loop
        self.fd, self.owns_fd = _open(settings.path)
        self.pipe = stat.S_ISFIFO(os.fstat(self.fd).st_mode)
        self.sampling = settings.sampling
        self.headers = frozenset(settings.headers)
        self.redact_headers = frozenset(settings.redact_headers)
        self.redact_query = frozenset(q.encode() for q in settings.redact_query)
        self.buffer: list[bytes] = []
        self.size = 0
        self.timer = loop.call_later(settings.flush_interval, self._tick)
        self.closed = False

    # -- per request ------------------------------------------------------------
    def log(self, ex) -> None:
        if self.sampling < 1.0 and random.random() >= self.sampling:
            return
        info = ex.info
        trace_id = None
        if info is not None:
            sent = info.sent_traceparent  # b"traceparent: 00-<trace id>-<span id>-<flags>\r\n"
            trace_id = sent[16:48] if sent is not None else trace_id_of(info.traceparent)
        plan = ex.plan
        upstream_ns = ex.upstream_ns
        endpoint = ex.endpoint
        record = {
            "time": _now(),
            "request_id": ex.request_id.decode("latin-1"),
            "trace_id": trace_id.decode() if trace_id else None,
            "client_ip": ex.client.peer_ip.decode("latin-1"),
            "method": ex.method.decode("latin-1"),
            "path": self._path(ex.target),
            "route": plan.route.name if plan is not None else None,
            "status": ex.status,
            "bytes_in": ex.body_bytes,
            "bytes_out": ex.bytes_out,
            "duration_ms": ex.duration_ns // 1000 / 1000,   # ms, to the microsecond
            "upstream_ms": upstream_ns // 1000 / 1000 if endpoint is not None else None,
            "upstream": endpoint,
            "retries": ex.retries,
            "rate_limit": RATE_LIMIT[ex.rate_limit],
            "headers": self._headers(ex.request_headers) if self.headers else None,
        }
        fields = ex.log_fields  # added by plugins (Request.log); never over a built-in field
        if fields:
            for name, value in fields.items():
                record.setdefault(name, value)
        try:
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # a plugin logged something JSON can't hold: log it as text
            for name in fields:
                if record[name] is fields[name]:
                    record[name] = repr(fields[name])
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        self.buffer.append(line)
        self.size += len(line)
        if self.size >= BUFFER_LIMIT:
            self.flush()

    def _path(self, target):
        if target is None:
            return None
        q = target.find(b"?")
        if q < 0 or not self.redact_query:
            return target.decode("latin-1")
        parts = target[q + 1:].split(b"&")
        for i, part in enumerate(parts):
            name, eq, _ = part.partition(b"=")
            if name in self.redact_query:
                parts[i] = name + b"=" + REDACTED.encode()
        return (target[:q + 1] + b"&".join(parts)).decode("latin-1")

    def _headers(self, headers):
        out = {}
        if not headers:
            return out
        for name, value in headers:
            lower = name.lower()
            if lower in self.headers:
                key = lower.decode("latin-1")
                text = REDACTED if lower in self.redact_headers else value.decode("latin-1")
                out[key] = out[key] + ", " + text if key in out else text
        return out

    # -- writing ------------------------------------------------------------------
    def _tick(self):
        self.flush()
        if not self.closed:
            self.timer = self.loop.call_later(self.settings.flush_interval, self._tick)

    def flush(self) -> None:
        if not self.buffer:
            return
        lines, self.buffer, self.size = self.buffer, [], 0
        try:
            if self.pipe:
                self._write_pieces(lines)
            else:
                _write_all(self.fd, b"".join(lines))
        except OSError as err:
            log.error("access log: write failed, %d lines lost: %s", len(lines), err.strerror or err)

    def _write_pieces(self, lines):
        limit = select_pipe_buf()
        piece: list[bytes] = []
        size = 0
        for line in lines:
            if piece and size + len(line) > limit:
                _write_all(self.fd, b"".join(piece))
                piece, size = [], 0
            piece.append(line)
            size += len(line)
        if piece:
            _write_all(self.fd, b"".join(piece))

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


_second = -1
_second_text = ""


def _now() -> str:
    """UTC with milliseconds; the formatted second is reused within a second."""
    global _second, _second_text
    ms = time.time_ns() // 1_000_000
    second, millis = divmod(ms, 1000)
    if second != _second:
        _second = second
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
    return f"{_second_text}{millis:03d}Z"
