"""RedisClient: one pipelined connection to one Redis, for one event loop.

Why not redis-py: the gateway asks Redis one small question per request
(an EVALSHA) from many requests at once. This client encodes each command
once, queues it with a (callback, argument) pair instead of a Future and a
task, and sends everything queued during one loop iteration in one write;
hiredis parses the replies, which come back in order, so the FIFO of
waiting callbacks is the whole protocol. bench/redis_client.py measures it
against redis-py's asyncio client.

Failure behaviour (the gateway must never wait on a sick Redis):
- Not connected: `send` returns False at once and the caller decides
  (fail open or closed); nothing queues for seconds. Only during the very
  first dial are commands held, and only up to their deadline.
- Per-command deadline (`timeout`): when the oldest unanswered command is
  past it, every waiting command is answered with RedisUnavailable (they are
  queued behind it on the same connection, so they cannot be answered
  sooner) and the connection is "stalled": `send` returns False until the
  late replies have arrived and been dropped. If they do not arrive within
  `connect_timeout`, the connection is closed and redialled.
- A lost connection answers every waiting command with RedisUnavailable and
  is redialled in the background with exponential backoff (0.05 s doubling
  to 1 s). One log line when it goes down, one when it is back.
- EVALSHA answered NOSCRIPT (Redis restarted or SCRIPT FLUSH): the script is
  loaded (one SCRIPT LOAD per script, pipelined) and the command resent.
  Scripts registered with `register` are also loaded on every new connection.

AUTH and TLS: with `password` the handshake sends `AUTH [username]
password` first; with `ssl` (an SSLContext, fastgw/redis/tls.py) the
connection is TLS, the certificate checked against `server_hostname`. A
refused AUTH or a failed TLS handshake is one more reason Redis is
unavailable: logged once (naming the user and where the password came
from, never the password), retried with the same backoff.

Replies are hiredis values: bytes, int, list, None, or hiredis.ReplyError
(an error reply is handed to the callback as a value, never raised).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import ssl as _ssl
from collections import deque

import hiredis

log = logging.getLogger("fastgw")

RECONNECT_FIRST = 0.05
RECONNECT_MAX = 1.0


class RedisUnavailable(Exception):
    """Redis did not answer: not connected, timed out, or the connection was lost."""


def _arg(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()
    raise TypeError(f"a Redis argument must be bytes, str, int or float, got {type(value).__name__}")


def encode_bulk(value) -> bytes:
    data = _arg(value)
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_command(*args) -> bytes:
    """The RESP encoding of one command."""
    return b"*%d\r\n%b" % (len(args), b"".join(encode_bulk(a) for a in args))


class Script:
    """A Lua script known by its SHA1. `command(keys, args)` is the EVALSHA."""
    __slots__ = ("source", "sha", "load_command")

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.load_command = encode_command(b"SCRIPT", b"LOAD", source)

    def command(self, keys, args=()) -> bytes:
        return encode_command(b"EVALSHA", self.sha, len(keys), *keys, *args)


class _Protocol(asyncio.Protocol):
    """Feeds received bytes to the client; reports the connection's end."""
    __slots__ = ("client", "transport")

    def __init__(self, client: "RedisClient"):
        self.client = client
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.client._received(self, data)

    def connection_lost(self, exc):
        self.client._lost(self, exc)


# A FIFO entry: [callback, argument, deadline, command bytes, script or None].
# callback None: already answered (timed out); its reply is read and dropped.
_CALLBACK, _ARG, _DEADLINE, _COMMAND, _SCRIPT = range(5)


class RedisClient:
    """See the module doc. Construct on the loop that will use it; nothing
    happens until `start()` (or the first `send`)."""

    def __init__(self, loop, *, host: str = "127.0.0.1", port: int = 6379, unix_path: str | None = None,
                 db: int = 0, username: str | None = None, password: str | None = None,
                 password_source: str | None = None, ssl: _ssl.SSLContext | None = None,
                 server_hostname: str | None = None, timeout: float = 0.05, connect_timeout: float = 1.0):
        self.loop = loop
        self.host, self.port, self.unix_path = host, port, unix_path
        self.db, self.username, self.password = db, username, password
        self.password_source = password_source   # for log lines: "env NAME", "file PATH", ...
        self.ssl = ssl
        self.server_hostname = (server_hostname or host) if ssl is not None else None
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.address = f"unix:{unix_path}" if unix_path else (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        self.scripts: list[Script] = []
        self.connected = False
        self.last_error = "not connected yet"   # why Redis is unavailable, for log lines
        # Counters (read by tests, benchmarks and metrics).
        self.writes = 0          # transport writes
        self.commands = 0        # commands sent (resends included)
        self.timeouts = 0        # commands answered RedisUnavailable because of the deadline
        self.reconnects = 0      # successful dials after the first
        self._protocol: _Protocol | None = None
        self._reader = None
        self._pending: deque = deque()
        self._out: list[bytes] = []
        self._flush_handle = None
        self._timer = None
        self._stall_timer = None
        self._stalled = False
        self._loading: set[str] = set()
        self._started = False
        self._first_dial = True
        self._closed = False
        self._dialer: asyncio.Task | None = None
        self._backoff = RECONNECT_FIRST
        self._was_up = False

    # -- public ---------------------------------------------------------------
    def register(self, source: str) -> Script:
        """A script this client loads on every connection (and on NOSCRIPT)."""
        script = Script(source)
        self.scripts.append(script)
        if self.connected:
            self._queue(script.load_command, _ignore, None, None)
        return script

    def start(self) -> None:
        """Begin dialling (idempotent)."""
        if not self._started and not self._closed:
            self._started = True
            self._dialer = self.loop.create_task(self._dial_loop())

    @property
    def available(self) -> bool:
        """Whether `send` would send now."""
        return (self.connected and not self._stalled) or (self._first_dial and not self._closed)

    def send(self, command: bytes, callback, arg, script: Script | None = None) -> bool:
        """Queue a RESP-encoded command; `callback(arg, reply)` runs once with
        the reply, a hiredis.ReplyError, or a RedisUnavailable. False (and no
        callback) when Redis is unavailable now: the caller answers itself."""
        if not self.connected or self._stalled:
            if not self._first_dial or self._closed:
                return False
            self.start()    # the very first dial: hold commands until it ends (or their deadline)
        self._queue(command, callback, arg, script)
        return True

    async def execute(self, *args, script: Script | None = None):
        """Send one command and wait for its reply; raises RedisUnavailable or
        hiredis.ReplyError."""
        future = self.loop.create_future()
        if not self.send(encode_command(*args), _settle, future, script):
            raise RedisUnavailable(f"redis at {self.address} unavailable: {self.last_error}")
        reply = await future
        return reply

    async def evalsha(self, script: Script, keys=(), args=()):
        future = self.loop.create_future()
        if not self.send(script.command(keys, args), _settle, future, script):
            raise RedisUnavailable(f"redis at {self.address} unavailable: {self.last_error}")
        return await future

    def close(self) -> None:
        """Close the connection and stop redialling; waiting commands get RedisUnavailable."""
        if not self._closed and self.commands:
            log.info("redis at %s: %d commands in %d writes, %d timed out, %d reconnects", self.address,
                     self.commands, self.writes, self.timeouts, self.reconnects)
        self._closed = True
        if self._dialer is not None:
            self._dialer.cancel()
        for handle in (self._flush_handle, self._timer, self._stall_timer):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._timer = self._stall_timer = None
        protocol, self._protocol = self._protocol, None
        self.connected = False
        self.last_error = "client closed"
        self._fail_all("client closed")
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    # -- sending ----------------------------------------------------------------
    def _queue(self, command: bytes, callback, arg, script) -> None:
        deadline = self.loop.time() + self.timeout
        self._pending.append([callback, arg, deadline, command, script])
        self._out.append(command)
        self.commands += 1
        if self._flush_handle is None and self.connected:
            self._flush_handle = self.loop.call_soon(self._flush)
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._check_deadline)

    def _flush(self) -> None:
        """Everything queued during this loop iteration, in one write."""
        self._flush_handle = None
        if not self._out or self._protocol is None:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self._protocol.transport.write(data)
        self.writes += 1

    # -- deadlines ----------------------------------------------------------------
    def _check_deadline(self) -> None:
        self._timer = None
        if self._stalled or not self._pending:
            return
        now = self.loop.time()
        head = self._pending[0]
        if head[_DEADLINE] > now:
            self._timer = self.loop.call_at(head[_DEADLINE], self._check_deadline)
            return
        # The oldest command is late: everything behind it waits on it too.
        answered = self._abandon_all(f"no reply within {self.timeout * 1000:g} ms")
        self.timeouts += answered
        if self.connected:
            self._stalled = True
            self.last_error = f"no reply within {self.timeout * 1000:g} ms"
            self._stall_timer = self.loop.call_later(self.connect_timeout, self._stall_expired)
        else:   # still dialling: drop what was held for the dial
            self._pending.clear()
            self._out.clear()

    def _stall_expired(self) -> None:
        self._stall_timer = None
        if self._stalled and self._protocol is not None:
            log.warning("redis at %s: no reply for %.1f s; reconnecting", self.address,
                        self.connect_timeout + self.timeout)
            self._protocol.transport.abort()   # _lost redials

    def _abandon_all(self, why: str) -> int:
        """Answer every waiting command with RedisUnavailable; keep the
        entries so their replies can still be matched and dropped."""
        error = RedisUnavailable(f"redis at {self.address}: {why}")
        answered = 0
        for entry in self._pending:
            callback = entry[_CALLBACK]
            if callback is not None:
                entry[_CALLBACK] = None
                answered += 1
                try:
                    callback(entry[_ARG], error)
                except Exception:  # a caller's bug must not break the connection
                    log.exception("redis reply callback failed")
        return answered

    def _fail_all(self, why: str) -> None:
        self._abandon_all(why)
        self._pending.clear()
        self._out.clear()
        self._loading.clear()
        self._stalled = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    # -- receiving ----------------------------------------------------------------
    def _received(self, protocol: _Protocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as error:
                log.error("redis at %s: protocol error (%s); reconnecting", self.address, error)
                protocol.transport.abort()
                return
            if reply is False:
                break
            if not pending:
                log.error("redis at %s: a reply nobody asked for; reconnecting", self.address)
                protocol.transport.abort()
                return
            entry = pending.popleft()
            callback = entry[_CALLBACK]
            if callback is None:
                continue
            if (type(reply) is hiredis.ReplyError and entry[_SCRIPT] is not None
                    and str(reply).startswith("NOSCRIPT")):
                self._reload(entry)
                continue
            try:
                callback(entry[_ARG], reply)
            except Exception:
                log.exception("redis reply callback failed")
        if self._stalled and not pending:
            # The late replies are in: Redis answers again.
            self._stalled = False
            if self._stall_timer is not None:
                self._stall_timer.cancel()
                self._stall_timer = None
        if pending and self._timer is None and not self._stalled:
            self._timer = self.loop.call_at(pending[0][_DEADLINE], self._check_deadline)

    def _reload(self, entry: list) -> None:
        """NOSCRIPT: load the script (once until that load is answered), then resend."""
        script = entry[_SCRIPT]
        if script.sha not in self._loading:
            self._loading.add(script.sha)
            self._queue(script.load_command, self._loaded, script.sha, None)
        self._queue(entry[_COMMAND], entry[_CALLBACK], entry[_ARG], script)

    def _loaded(self, sha: str, reply) -> None:
        self._loading.discard(sha)
        if isinstance(reply, Exception):
            log.error("redis at %s: SCRIPT LOAD failed: %s", self.address, reply)

    # -- connection -----------------------------------------------------------
    def _lost(self, protocol: _Protocol, exc) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        if not self.connected:
            # Mid-handshake: fail its steps; the dial loop reports and retries.
            self._fail_all(f"connection lost during the handshake: {exc}" if exc else "connection closed")
            return
        self.connected = False
        self.last_error = f"connection lost: {exc}" if exc else "connection closed by the server"
        self._fail_all(self.last_error)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._closed:
            log.warning("redis at %s: %s; reconnecting in the background", self.address, self.last_error)
            if self._dialer is None or self._dialer.done():   # else the dial loop is still trying
                self._dialer = self.loop.create_task(self._dial_loop())

    async def _dial_loop(self) -> None:
        while not self._closed:
            try:
                await asyncio.wait_for(self._dial(), self.connect_timeout)
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:  # refused, unreachable, timed out, AUTH refused, TLS failed
                self.last_error = self._describe(error)
                if self._first_dial:
                    self._first_dial = False
                    self._fail_all(self.last_error)
                    log.warning("redis at %s unavailable (%s); retrying in the background",
                                self.address, self.last_error)
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, RECONNECT_MAX)

    async def _dial(self) -> None:
        if self.unix_path:
            transport, protocol = await self.loop.create_unix_connection(lambda: _Protocol(self), self.unix_path)
        else:
            if self.ssl is not None:
                transport, protocol = await self.loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.server_hostname, ssl_handshake_timeout=self.connect_timeout)
            else:
                transport, protocol = await self.loop.create_connection(lambda: _Protocol(self), self.host, self.port)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = hiredis.Reader()
        self._protocol = protocol
        # The handshake goes out first, alone; what the first dial held (and
        # whatever is sent meanwhile) follows only once it has succeeded, so
        # no caller's command ever meets a NOAUTH.
        held_entries, self._pending = self._pending, deque()
        held_out, self._out = self._out, []
        handshake = []
        if self.password is not None:
            auth = (b"AUTH", self.username, self.password) if self.username else (b"AUTH", self.password)
            who = f"AUTH as user {self.username!r}" if self.username else "AUTH"
            if self.password_source:
                who += f" (password from {self.password_source})"
            handshake.append(self._handshake_step(encode_command(*auth), who))
        if self.db:
            handshake.append(self._handshake_step(encode_command(b"SELECT", self.db), "SELECT"))
        for script in self.scripts:
            handshake.append(self._handshake_step(script.load_command, "SCRIPT LOAD"))
        self._pending.extend(held_entries)
        if self._out:
            transport.write(b"".join(self._out))
            self.writes += 1
        self._out = held_out
        try:
            for step in handshake:
                await step
        except BaseException:
            transport.abort()
            raise
        self.connected = True
        self._stalled = False
        self._flush()
        if self._first_dial:
            self._first_dial = False
        else:
            self.reconnects += 1
        if self._was_up:
            log.info("redis at %s: connected again", self.address)
        self._was_up = True
        self._backoff = RECONNECT_FIRST

    def _handshake_step(self, command: bytes, what: str) -> asyncio.Future:
        future = self.loop.create_future()

        def answered(_, reply):
            if future.done():
                return
            if isinstance(reply, Exception):
                self.last_error = f"{what} failed: {reply}"
                future.set_exception(ConnectionError(self.last_error))
            else:
                future.set_result(reply)

        # Handshake commands have the connect deadline, not the per-command one.
        self._pending.append([answered, None, self.loop.time() + self.connect_timeout, command, None])
        self._out.append(command)
        self.commands += 1
        return future


    def _describe(self, error: BaseException) -> str:
        if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
            if self.ssl is not None and not self.connected:
                return "connect or TLS handshake timed out (is the port a TLS port?)"
            return "connect timed out"
        if isinstance(error, _ssl.SSLCertVerificationError):
            return (f"TLS certificate verification failed: {error.verify_message or error.reason} "
                    f"(checked against redis.tls.ca_file or the system store, for the name "
                    f"{self.server_hostname!r})")
        if isinstance(error, _ssl.SSLError):
            reason = (error.reason or str(error)).lower().replace("_", " ")
            return f"TLS handshake failed: {reason} (is the port a TLS port?)"
        if isinstance(error, OSError) and error.strerror:
            return error.strerror.lower()
        return str(error) or type(error).__name__


def _settle(future: asyncio.Future, reply) -> None:
    if future.done():
        return
    if isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(reply)


def _ignore(_, reply) -> None:
    if isinstance(reply, Exception):
        log.error("redis: %s", reply)
