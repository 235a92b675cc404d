"""One keep-alive connection to an upstream endpoint.

The protocol parses responses with httptools and hands each event to the
exchange it is serving. Between exchanges it sits in its pool with reading on,
so an upstream that closes an idle connection is noticed and dropped at once.
"""
from __future__ import annotations

import asyncio

import httptools

# Bounds on a response head; beyond them the response is refused as bad (502).
MAX_RESPONSE_HEADERS = 256
MAX_RESPONSE_HEAD_BYTES = 64 * 1024


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("pool", "transport", "parser", "exchange", "headers", "head_bytes",
                 "reason", "reused", "idle_since", "tunnel", "got_bytes", "reset_parser",
                 "feeding", "release_pending")

    def __init__(self, pool):
        self.pool = pool
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange = None
        self.headers = []
        self.head_bytes = 0
        self.reason = b""
        self.reused = False
        self.idle_since = 0.0
        self.tunnel = None
        self.got_bytes = False     # any response byte for the current exchange
        self.reset_parser = False  # a HEAD response ended at its head
        self.feeding = False       # inside parser callbacks
        self.release_pending = None  # exchange_done() deferred until feeding ends

    # -- asyncio.Protocol --------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.tunnel is not None:
            self.tunnel.from_upstream(data)
            return
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the upstream is out of step. Drop it.
            self.transport.close()
            return
        self.got_bytes = True
        client = exchange.client
        client.cork()
        self.feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            exchange.upstream_upgraded(self, data[upgrade.args[0]:])
        except httptools.HttpParserCallbackError as err:
            exchange.upstream_broken(self, err.__context__ or err)
        except httptools.HttpParserError as err:
            exchange.upstream_bad_response(self, f"malformed response from upstream: {err}")
        finally:
            self.feeding = False
            if self.reset_parser:
                self.reset_parser = False
                self.parser = httptools.HttpResponseParser(self)
            if self.release_pending is not None:
                reusable, self.release_pending = self.release_pending, None
                self._finish_exchange(reusable)
            client.uncork()

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc):
        self.pool.lost(self)
        if self.tunnel is not None:
            self.tunnel.upstream_lost()
            return
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.upstream_lost(self, exc)

    def pause_writing(self):
        if self.exchange is not None:
            self.exchange.upstream_write_paused()
        elif self.tunnel is not None:
            self.tunnel.upstream_write_paused()

    def resume_writing(self):
        if self.exchange is not None:
            self.exchange.upstream_write_resumed()
        elif self.tunnel is not None:
            self.tunnel.upstream_write_resumed()

    # -- httptools callbacks -----------------------------------------------
    def on_message_begin(self):
        self.headers = []
        self.head_bytes = 0
        self.reason = b""

    def on_status(self, reason):
        self.reason += reason

    def on_header(self, name, value):
        self.head_bytes += len(name) + len(value) + 4
        self.headers.append((name, value))
        if len(self.headers) > MAX_RESPONSE_HEADERS or self.head_bytes > MAX_RESPONSE_HEAD_BYTES:
            raise ResponseHeadTooLarge("upstream response head too large")

    def on_headers_complete(self):
        parser = self.parser
        self.exchange.response_head(
            self, parser.get_status_code(), self.reason, self.headers,
            parser.get_http_version() == "1.1")

    def on_body(self, body):
        exchange = self.exchange
        if exchange is not None:
            exchange.response_body(body)

    def on_message_complete(self):
        exchange = self.exchange
        if exchange is not None:
            exchange.response_end(self)

    # -- pool side ---------------------------------------------------------
    def attach(self, exchange):
        self.exchange = exchange
        self.got_bytes = False

    def exchange_done(self, reusable: bool):
        """The exchange is over: back to the pool, or closed.

        Inside parser callbacks the hand-back waits until feed_data returns, so
        the rest of this message is never mistaken for the next exchange's."""
        self.exchange = None
        if self.feeding:
            self.release_pending = reusable
        else:
            self._finish_exchange(reusable)

    def _finish_exchange(self, reusable):
        if reusable and self.transport is not None and not self.transport.is_closing():
            self.pool.release(self)
        elif self.transport is not None:
            self.transport.close()

    def detach(self):
        self.exchange = None
        if not self.transport.is_reading():
            self.transport.resume_reading()


class ResponseHeadTooLarge(Exception):
    pass
