"""A WebSocket connection after the upstream's 101: a byte tunnel.

Bytes are passed through untouched in both directions with backpressure
(a side that can't keep up pauses reading on the other). The tunnel has its
own idle timeout, an hour by default, because a healthy WebSocket may be
quiet for a long time; it closes when either side closes.
"""
from __future__ import annotations

from fastgw._native.codes import STREAM_WS


class Tunnel:
    __slots__ = ("client", "upstream", "idle_timeout", "timer", "last_activity", "closed")

    def __init__(self, client, upstream, idle_timeout):
        self.client = client
        self.upstream = upstream
        self.idle_timeout = idle_timeout
        self.timer = None
        self.last_activity = 0.0
        self.closed = False
        upstream.tunnel = self
        upstream.exchange = None

    def start(self, from_upstream, to_upstream):
        """Begin with the bytes each side sent right after the handshake."""
        loop = self.client.loop
        self.last_activity = loop.time()
        metrics = self.client.gateway.metrics
        if metrics is not None:
            metrics.stream_opened(STREAM_WS)
        if self.idle_timeout:
            self.timer = loop.call_later(self.idle_timeout, self._idle_check)
        if from_upstream:
            self.client.transport.write(from_upstream)
        if to_upstream:
            self.upstream.transport.writelines(to_upstream)

    def from_client(self, data):
        self.last_activity = self.client.last_activity
        self.upstream.transport.write(data)

    def from_upstream(self, data):
        self.last_activity = self.client.gateway.deadlines.now
        self.client.transport.write(data)

    # Backpressure: the writer that is full pauses the reader on the other side.
    def client_write_paused(self):
        self.upstream.transport.pause_reading()

    def client_write_resumed(self):
        self.upstream.transport.resume_reading()

    def upstream_write_paused(self):
        self.client.transport.pause_reading()

    def upstream_write_resumed(self):
        self.client.transport.resume_reading()

    def client_lost(self):
        self._close()

    def upstream_lost(self):
        self._close()

    def _close(self):
        if self.closed:
            return
        self.closed = True
        metrics = self.client.gateway.metrics
        if metrics is not None:
            metrics.stream_closed(STREAM_WS)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # close() flushes what is buffered before the FIN.
        self.client.transport.close()
        self.upstream.transport.close()

    def _idle_check(self):
        self.timer = None
        if self.closed:
            return
        loop = self.client.loop
        quiet = loop.time() - self.last_activity
        if quiet >= self.idle_timeout:
            self._close()
        else:
            self.timer = loop.call_later(self.idle_timeout - quiet, self._idle_check)
