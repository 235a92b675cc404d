"""Upstream servers for the integration tests: real sockets, real threads.

`UpstreamServer` is one configurable HTTP/1.1 origin. It parses every request
fastgw sends it with h11 (strict, independent of the gateway's httptools
parser) plus `strict.head_violations` on the raw head bytes, records what it
saw, and answers according to the first segment of the request path:

  /<anything else>  echo: JSON of method, target, version, headers, body
                    (?h=Name:Value adds a response header, ?status=NNN)
  /digest           reads the body streaming; JSON {sha256, length}
  /fixed            a small fixed body
  /big              ?mib=N|kib=N&mode=length|chunked&seed=S: streamed payload
  /chunked          ?parts=N small parts, chunked
  /sse              text/event-stream: one event at once, then holds the
                    stream open ?hold=S seconds (ends early if the peer closes)
  /slow             ?delay=S then echo
  /hang             never answers (holds until the peer closes)
  /die              head with Content-Length 1000, 10 body bytes, close
  /garbage          non-HTTP bytes, then holds the connection
  /ambiguous        a response with Content-Length and Transfer-Encoding
  /reset            closes without any response byte
  /partial-head     half a status head, then close
  /close-after      a normal keep-alive response, then a silent close
  /stale            answers the first request on a connection; closes the
                    connection, silently, when a later request arrives on it
  /status/NNN       status NNN (no body for 204/304, HEAD-aware)
  /hop-headers      a response carrying hop-by-hop headers
  /flaky            ?key=K&fail=N: the first N requests with key K (counted by
                    this server) fail, later ones echo; how they fail:
                    &status=NNN (default 503) [&retry_after=S] [&delay=S before
                    answering], or &action=reset (close, no byte) or
                    &action=hang (never answer)

`active` counts the requests being answered at this moment (from the head's
arrival to the end of the response or the connection) and `peak_active` the
most at once. Each server runs its own asyncio loop in its own thread; tests read the
records directly (same process) and wait on them with `wait_for`.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qs

import h11

from .data import MiB, payload_chunks
from .strict import head_violations
from .upstream_faults import FaultBehaviours

RAW_CAP = 1 * MiB  # per-connection raw bytes kept for inspection


@dataclass
class RequestRecord:
    server: str
    conn_id: int
    index_on_conn: int            # 1 for the first request on a connection
    method: str
    target: str
    http_version: str
    headers: list[tuple[str, str]]  # as received (original case, order kept)
    raw_head: bytes
    received_at: float
    body: bytes | None = None     # None until read (or for streamed paths)
    body_length: int = 0
    complete: bool = False        # the whole message (body included) arrived

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        assert len(values) <= 1, f"{name} appears {len(values)} times: {values!r}"
        return values[0] if values else None

    def header_names(self) -> set[str]:
        return {n.lower() for n, _ in self.headers}

    def as_json(self) -> dict:
        return {
            "server": self.server,
            "conn_id": self.conn_id,
            "index_on_conn": self.index_on_conn,
            "method": self.method,
            "target": self.target,
            "http_version": self.http_version,
            "headers": [[n, v] for n, v in self.headers],
            "body": (self.body or b"").decode("latin-1"),
        }


@dataclass
class ConnRecord:
    id: int
    opened_at: float
    raw: bytearray = field(default_factory=bytearray)
    requests: int = 0
    peer_closed_at: float | None = None   # we saw EOF / reset from the gateway
    closed_at: float | None = None        # the connection is gone (either side)
    closed_by_us: bool = False
    aborted: str | None = None            # why it ended abnormally, if it did

    def raw_bytes(self) -> bytes:
        return bytes(self.raw)


@dataclass
class Mark:
    name: str
    conn_id: int
    at: float


class _PeerClosed(Exception):
    pass


class UpstreamServer:
    def __init__(self, name: str = "upstream", host: str = "127.0.0.1", port: int = 0):
        self.name = name
        self.host = host
        self.port: int = port                      # 0: a free one, chosen at start
        # When set, echo requests (any path without its own behaviour) get this
        # status: an upstream that starts failing, for health and outlier tests.
        self.status_override: int | None = None
        self.heads: list[RequestRecord] = []       # every request head seen
        self.connections: list[ConnRecord] = []
        self.violations: list[str] = []            # protocol errors in what fastgw sent
        self.marks: list[Mark] = []
        # Requests being answered right now (head received, response not yet
        # all sent) and the most there ever were at once.
        self.active = 0
        self.peak_active = 0
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self.flaky_counts: dict[str, int] = {}     # /flaky: requests seen per key

    # ---- lifecycle -------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "UpstreamServer":
        self._thread = threading.Thread(target=self._run, name=f"upstream-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"upstream {self.name} did not start")
        if self._start_error:
            raise self._start_error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._on_connection, self.host, self.port, backlog=1024)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # pragma: no cover - reported to start()
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def stop(self) -> None:
        """Close the listener and every connection; a second call does nothing."""
        if not self._loop or not self._thread or not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=5)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # ---- what tests read ---------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Requests whose whole message arrived."""
        with self._cond:
            return [r for r in self.heads if r.complete]

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))

    def wait_mark(self, name: str, timeout: float = 5.0, count: int = 1) -> Mark:
        ok = self.wait_for(lambda: len(self.marks_named(name)) >= count, timeout)
        assert ok, f"upstream {self.name}: mark {name!r} x{count} not reached in {timeout}s"
        return self.marks_named(name)[count - 1]

    def marks_named(self, name: str) -> list[Mark]:
        return [m for m in self.marks if m.name == name]

    def connection(self, conn_id: int) -> ConnRecord:
        return self.connections[conn_id - 1]

    def _mark(self, name: str, conn: ConnRecord) -> None:
        with self._cond:
            self.marks.append(Mark(name, conn.id, time.monotonic()))
            self._cond.notify_all()

    # ---- connection handling ----------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._cond:
            conn = ConnRecord(id=len(self.connections) + 1, opened_at=time.monotonic())
            self.connections.append(conn)
            self._cond.notify_all()
        session = _Session(self, conn, reader, writer)
        try:
            await session.run()
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            try:
                writer.close()
            except Exception:
                pass
            with self._cond:
                if conn.closed_at is None:
                    conn.closed_at = time.monotonic()
                self._cond.notify_all()


class _Session(FaultBehaviours):
    """One upstream connection: an h11 server state machine over a stream."""

    def __init__(self, server: UpstreamServer, conn: ConnRecord,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=1024 * 1024)
        self.eof = False
        self.head_acc: bytearray | None = None

    # ---- input -------------------------------------------------------------

    async def _read(self) -> bytes:
        if self.eof:
            return b""
        try:
            data = await self.reader.read(65536)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
            with self.server._cond:
                self.conn.peer_closed_at = time.monotonic()
                self.server._cond.notify_all()
        else:
            room = RAW_CAP - len(self.conn.raw)
            if room > 0:
                self.conn.raw += data[:room]
        return data

    async def next_event(self):
        while True:
            event = self.h.next_event()
            if event is h11.NEED_DATA:
                if self.eof:
                    raise _PeerClosed()
                data = await self._read()
                if self.head_acc is not None:
                    self.head_acc += data
                self.h.receive_data(data)
                continue
            return event

    async def wait_peer_close(self, timeout: float | None) -> bool:
        """Read (and buffer into h11) until the peer closes; True if it did."""
        async def loop() -> None:
            while not self.eof:
                data = await self._read()
                if data:
                    self.h.receive_data(data)
        try:
            await asyncio.wait_for(loop(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def read_body(self, req: RequestRecord, sink: Callable[[bytes], None] | None = None) -> bytes:
        """The request body (or feeds it to `sink`); sends 100 Continue if asked."""
        if self.h.client_is_waiting_for_100_continue:
            await self.send(h11.InformationalResponse(status_code=100, headers=[]))
        parts: list[bytes] = []
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                req.body_length += len(event.data)
                if sink is not None:
                    sink(bytes(event.data))
                else:
                    parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # pragma: no cover - h11 guarantees Data/EndOfMessage here
                raise AssertionError(f"unexpected event {event!r}")
        body = b"".join(parts)
        with self.server._cond:
            req.body = body if sink is None else None
            req.complete = True
            self.server._cond.notify_all()
        return body

    # ---- output ------------------------------------------------------------

    async def send(self, *events) -> None:
        for event in events:
            data = self.h.send(event)
            if data:
                self.writer.write(data)
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def respond(self, req: RequestRecord, status: int, headers: list[tuple[str, str]],
                      body: bytes = b"") -> None:
        headers = list(headers)
        no_body = req.method == "HEAD" or status in (204, 304) or status < 200
        if status not in (204, 304) and not any(n.lower() == "content-length" for n, _ in headers):
            headers.append(("Content-Length", str(len(body))))
        await self.send(h11.Response(status_code=status, headers=headers))
        if body and not no_body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    def close_now(self) -> None:
        with self.server._cond:
            self.conn.closed_by_us = True
            self.conn.closed_at = time.monotonic()
            self.server._cond.notify_all()
        self.writer.close()

    # ---- main loop ---------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                self.head_acc = bytearray(self.h.trailing_data[0])
                try:
                    event = await self.next_event()
                except _PeerClosed:
                    return
                if isinstance(event, h11.ConnectionClosed):
                    return
                assert isinstance(event, h11.Request), event
                head_len = len(self.head_acc) - len(self.h.trailing_data[0])
                raw_head = bytes(self.head_acc[:head_len])
                self.head_acc = None
                req = self._record(event, raw_head)
                self._count_active(+1)
                try:
                    keep_going = await self.dispatch(req)
                finally:
                    self._count_active(-1)
                if not keep_going:
                    self.close_now()
                    return
                # Discard any unread body, then start the next cycle.
                while self.h.their_state is h11.SEND_BODY:
                    event = await self.next_event()
                if self.h.our_state is h11.MUST_CLOSE or self.h.their_state is h11.MUST_CLOSE:
                    self.close_now()
                    return
                self.h.start_next_cycle()
        except _PeerClosed:
            self._abort("peer closed mid-message")
        except h11.RemoteProtocolError as exc:
            if self.eof:
                self._abort(f"peer closed mid-message: {exc}")
                return
            seen = bytes(self.head_acc) if self.head_acc is not None else b""
            self._violation(f"h11 rejected what fastgw sent: {exc}; head bytes: {seen[:1000]!r}")
            try:
                self.writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except Exception:
                pass
        except (ConnectionError, OSError) as exc:
            self._abort(f"{type(exc).__name__}: {exc}")
        except h11.LocalProtocolError as exc:
            # Our own misuse of h11 (a harness bug): make it loud.
            self._violation(f"harness upstream bug: {exc!r}")

    def _count_active(self, delta: int) -> None:
        with self.server._cond:
            self.server.active += delta
            self.server.peak_active = max(self.server.peak_active, self.server.active)
            self.server._cond.notify_all()

    def _abort(self, why: str) -> None:
        with self.server._cond:
            self.conn.aborted = why
            self.server._cond.notify_all()

    def _violation(self, what: str) -> None:
        with self.server._cond:
            self.server.violations.append(f"[{self.server.name} conn {self.conn.id}] {what}")
            self.server._cond.notify_all()

    def _record(self, event: h11.Request, raw_head: bytes) -> RequestRecord:
        for problem in head_violations(raw_head, "request"):
            self._violation(f"{problem} in request head {raw_head!r}")
        with self.server._cond:
            self.conn.requests += 1
            req = RequestRecord(
                server=self.server.name,
                conn_id=self.conn.id,
                index_on_conn=self.conn.requests,
                method=event.method.decode("ascii"),
                target=event.target.decode("latin-1"),
                http_version=event.http_version.decode("ascii"),
                headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers.raw_items()],
                raw_head=raw_head,
                received_at=time.monotonic(),
            )
            self.server.heads.append(req)
            self.server._cond.notify_all()
        return req

    # ---- behaviours --------------------------------------------------------

    async def dispatch(self, req: RequestRecord) -> bool:
        """Answer `req`; False when the connection must be closed after."""
        segments = req.path.split("/")
        first = segments[1] if len(segments) > 1 else ""
        query = {k: v[-1] for k, v in parse_qs(req.query, keep_blank_values=True).items()}
        handler = getattr(self, "do_" + first.replace("-", "_"), None)
        if handler is None or first.startswith("_"):
            return await self.do_echo(req, query)
        return await handler(req, query)

    async def do_echo(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        headers = [("Content-Type", "application/json")]
        for value in parse_qs(req.query).get("h", []):
            name, _, val = value.partition(":")
            headers.append((name, val))
        status = self.server.status_override or int(query.get("status", "200"))
        body = json.dumps(req.as_json()).encode()
        await self.respond(req, status, headers, body)
        return True

    async def do_digest(self, req: RequestRecord, query: dict) -> bool:
        digest = hashlib.sha256()
        await self.read_body(req, sink=digest.update)
        body = json.dumps({
            "sha256": digest.hexdigest(),
            "length": req.body_length,
            "transfer_encoding": req.header_all("transfer-encoding"),
            "content_length": req.header_all("content-length"),
        }).encode()
        await self.respond(req, 200, [("Content-Type", "application/json")], body)
        return True

    async def do_fixed(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        await self.respond(req, 200, [("Content-Type", "text/plain")], b"hello from upstream\n")
        return True

    async def do_big(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        if "kib" in query:
            total = int(query["kib"]) * 1024
        else:
            total = int(float(query.get("mib", "1")) * MiB)
        seed = int(query.get("seed", "1"))
        headers = [("Content-Type", "application/octet-stream")]
        if query.get("mode", "length") == "length":
            headers.append(("Content-Length", str(total)))
        await self.send(h11.Response(status_code=200, headers=headers))
        if req.method != "HEAD":
            watcher = asyncio.ensure_future(self.wait_peer_close(None))
            try:
                for chunk in payload_chunks(total, seed):
                    if self.eof:
                        self._abort("peer closed during big body")
                        return False
                    await self.send(h11.Data(data=chunk))
            except (ConnectionError, OSError) as exc:
                self._abort(f"peer went away during big body: {exc}")
                return False
            finally:
                watcher.cancel()
        self.server._mark("big-done", self.conn)
        await self.send(h11.EndOfMessage())
        return True

    async def do_chunked(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        parts = int(query.get("parts", "5"))
        await self.send(h11.Response(status_code=200, headers=[("Content-Type", "text/plain")]))
        if req.method != "HEAD":
            for i in range(parts):
                await self.send(h11.Data(data=f"part-{i}\n".encode()))
        await self.send(h11.EndOfMessage())
        return True

    async def do_sse(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        hold = float(query.get("hold", "5"))
        await self.send(h11.Response(status_code=200, headers=[
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-cache"),
        ]))
        await self.send(h11.Data(data=b"id: 1\ndata: first\n\n"))
        self.server._mark("sse-first-sent", self.conn)
        if await self.wait_peer_close(hold):
            self.server._mark("sse-peer-closed", self.conn)
            return False
        try:
            await self.send(h11.Data(data=b"id: 2\ndata: last\n\n"), h11.EndOfMessage())
        except (ConnectionError, OSError):
            return False
        self.server._mark("sse-done", self.conn)
        return True

    async def do_slow(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        self.server._mark("slow-received", self.conn)
        await asyncio.sleep(float(query.get("delay", "1")))
        body = json.dumps(req.as_json()).encode()
        await self.respond(req, 200, [("Content-Type", "application/json")], body)
        self.server._mark("slow-answered", self.conn)
        return True

    async def do_hang(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        self.server._mark("hang-received", self.conn)
        await self.wait_peer_close(120)
        self.server._mark("hang-peer-closed", self.conn)
        return False

    async def do_die(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        await self.send_raw(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 1000\r\n\r\n" + b"0123456789"
        )
        return False

    async def do_garbage(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        await self.send_raw(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02\xff\xfe not http at all\r\n\r\n")
        await self.wait_peer_close(30)
        return False

    async def do_ambiguous(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        await self.send_raw(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        await self.wait_peer_close(30)
        return False

    async def do_reset(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        return False

    async def do_partial_head(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        await self.send_raw(b"HTTP/1.1 200 OK\r\nContent-Ty")
        return False

    async def do_close_after(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        body = json.dumps(req.as_json()).encode()
        await self.respond(req, 200, [("Content-Type", "application/json")], body)
        return False  # closed silently: the response said nothing about it

    async def do_stale(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        if req.index_on_conn > 1:
            self.server._mark("stale-dropped", self.conn)
            return False  # as if our idle timer closed it just as the request came
        body = json.dumps(req.as_json()).encode()
        await self.respond(req, 200, [("Content-Type", "application/json")], body)
        return True

    async def do_status(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        segments = req.path.split("/")
        status = int(segments[2]) if len(segments) > 2 and segments[2].isdigit() else 200
        headers: list[tuple[str, str]] = []
        body = b""
        if status == 304:
            headers = [("ETag", '"v1"')]
        elif status != 204:
            headers = [("Content-Type", "text/plain")]
            body = f"status {status}\n".encode()
        await self.respond(req, status, headers, body)
        return True

    async def do_flaky(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        key = query.get("key", "")
        seen = self.server.flaky_counts.get(key, 0) + 1
        self.server.flaky_counts[key] = seen
        if "delay" in query:
            await asyncio.sleep(float(query["delay"]))
        if seen > int(query.get("fail", "1")):
            body = json.dumps(req.as_json()).encode()
            await self.respond(req, 200, [("Content-Type", "application/json")], body)
            return True
        action = query.get("action")
        if action == "reset":
            return False
        if action == "hang":
            return await self.do_hang(req, query)
        headers = [("Content-Type", "text/plain")]
        if "retry_after" in query:
            headers.append(("Retry-After", query["retry_after"]))
        await self.respond(req, int(query.get("status", "503")), headers, b"flaky\n")
        return True

    async def do_hop_headers(self, req: RequestRecord, query: dict) -> bool:
        await self.read_body(req)
        body = b"hop\n"
        await self.send(h11.Response(status_code=200, headers=[
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(body))),
            ("Connection", "X-Up-Secret"),
            ("Keep-Alive", "timeout=5, max=100"),
            ("Proxy-Connection", "keep-alive"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "h2c"),
            ("TE", "trailers"),
            ("X-Up-Secret", "do-not-forward"),
            ("X-Up-Normal", "forward-me"),
        ]))
        if req.method != "HEAD":
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())
        return True


class WebSocketEchoServer:
    """A `websockets` echo server on its own port, loop and thread."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self.paths: list[str] = []
        self.request_headers: list[list[tuple[str, str]]] = []
        self.closed: list[int | None] = []   # close codes seen by the server
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._server = None

    def start(self) -> "WebSocketEchoServer":
        self._thread = threading.Thread(target=self._run, name="ws-echo", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("websocket echo server did not start")
        return self

    def _run(self) -> None:
        from websockets.asyncio.server import serve

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def handler(ws) -> None:
            with self._cond:
                self.paths.append(ws.request.path)
                self.request_headers.append(list(ws.request.headers.raw_items()))
                self._cond.notify_all()
            try:
                async for message in ws:
                    await ws.send(message)
            finally:
                with self._cond:
                    self.closed.append(ws.close_code)
                    self._cond.notify_all()

        async def main() -> None:
            self._server = await serve(handler, self.host, 0, compression=None)
            self.port = list(self._server.sockets)[0].getsockname()[1]
            self._ready.set()

        loop.run_until_complete(main())
        loop.run_forever()
        loop.close()

    def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def stop(self) -> None:
        if not self._loop or not self._thread:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
                try:
                    await asyncio.wait_for(self._server.wait_closed(), 5)
                except asyncio.TimeoutError:
                    pass

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
