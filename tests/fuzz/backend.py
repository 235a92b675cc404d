"""The recording backend of the differential fuzzer.

A raw asyncio TCP server in its own thread. For every upstream connection
fastgw opens it keeps the exact bytes received, parses them with h11 (a
server-side parser independent of fastgw's llhttp) plus the strict head
check of tests/support/strict.py, and records each request: method, target,
body bytes, and whether the message completed. Anything h11 cannot frame is
recorded as an error of that connection: bytes a gateway sent that no strict
server can parse are a finding on their own.

How it answers depends on the request path:

  /e/...        "early": a 200 as soon as the head is parsed, then the body
                is read (and recorded) before the next request. Early
                answers are legal and common (nginx answers many requests
                without reading the body); they are what lets a gateway
                believe a connection is reusable while the upstream still
                expects body bytes.
  /r/<id>       a response script registered with `script()` (response-side
                fuzzing): raw bytes, delays, then keep / close / hang.
  /canary-...   the echo below with `Connection: close`, so the canary that
                ends each fuzz case also empties fastgw's pool: every case
                starts from the same state.
  anything else the echo: 200 after the whole body, keep-alive.

The echo carries `X-Fp`, a fingerprint of what this backend parsed (method,
target, body), so a client can tell whether the answer it got is the one for
its own request.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import h11

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.strict import head_violations  # noqa: E402

RAW_CAP = 256 * 1024


def fingerprint(method: str, target: str, body: bytes | None) -> str:
    """What the echo answers in X-Fp; body None for early answers (sent
    before the body was read)."""
    h = hashlib.sha1(method.encode("latin-1") + b"\0" + target.encode("latin-1") + b"\0")
    if body is not None:
        h.update(body)
    else:
        h.update(b"\0early")
    return h.hexdigest()[:16]


@dataclass
class UpRequest:
    seq: int
    conn_id: int
    index: int                    # 1 for the first request on its connection
    method: str
    target: str
    version: str
    headers: list[tuple[bytes, bytes]]
    raw_head: bytes
    violations: list[str]
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False

    def shape(self) -> str:
        return f"{self.method} {self.target} body={bytes(self.body)!r}" + ("" if self.complete else " (incomplete)")


@dataclass
class UpError:
    seq: int
    conn_id: int
    message: str
    context: bytes                # the bytes from the start of the message h11 could not frame


@dataclass
class UpConn:
    id: int
    raw: bytearray = field(default_factory=bytearray)
    closed: bool = False
    busy: bool = False            # a request is being read or answered
    last_rx: float = 0.0
    writer: asyncio.StreamWriter | None = None


@dataclass
class ResponseScript:
    """Raw bytes to answer with. `steps` are (bytes, delay after them);
    `end` is "keep" (keep reading requests on the connection, with a fresh
    parser), "close" or "hang" (send nothing more, keep the socket open
    until the gateway closes it). `after_body`: read the request body first."""
    steps: list[tuple[bytes, float]]
    end: str = "close"
    after_body: bool = True

    def data(self) -> bytes:
        return b"".join(b for b, _ in self.steps)


class RecordingBackend:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self.lock = threading.Lock()
        self.seq = 0
        self.conns: list[UpConn] = []
        self.requests: list[UpRequest] = []
        self.errors: list[UpError] = []
        self.scripts: dict[str, ResponseScript] = {}
        self.last_rx = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---- lifecycle ---------------------------------------------------------

    def start(self) -> "RecordingBackend":
        self._thread = threading.Thread(target=self._run, name="fuzz-backend", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fuzz backend did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(asyncio.start_server(self._serve, self.host, 0, backlog=256))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown():
            self._server.close()
            for c in self.conns:
                if c.writer is not None and not c.closed:
                    c.writer.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)
        self._loop = None

    # ---- what the runner reads ------------------------------------------------

    def script(self, path: str, script: ResponseScript) -> None:
        with self.lock:
            self.scripts[path] = script

    def mark(self) -> int:
        with self.lock:
            return self.seq

    def since(self, mark: int) -> tuple[list[UpRequest], list[UpError]]:
        with self.lock:
            return ([r for r in self.requests if r.seq > mark], [e for e in self.errors if e.seq > mark])

    def open_conns(self) -> list[UpConn]:
        with self.lock:
            return [c for c in self.conns if not c.closed]

    def quiet_for(self) -> float:
        """Seconds since the last byte arrived on any connection."""
        return time.monotonic() - self.last_rx

    def close_all(self) -> None:
        """Close every open upstream connection (the pool's state is reset)."""
        if self._loop is None:
            return

        async def close():
            for c in self.conns:
                if not c.closed and c.writer is not None:
                    c.writer.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # ---- one connection ----------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.lock:
            conn = UpConn(id=len(self.conns) + 1, writer=writer)
            self.conns.append(conn)
        try:
            await _Session(self, conn, reader, writer).run()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            with self.lock:
                conn.closed = True
                conn.busy = False
            try:
                writer.close()
            except Exception:
                pass


class _Session:
    def __init__(self, backend: RecordingBackend, conn: UpConn, reader, writer):
        self.b = backend
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self.fed = 0          # bytes given to the current parser
        self.base = 0         # offset in conn.raw where the current parser started
        self.event_end = 0    # offset (in conn.raw) where the last event ended
        self.eof = False

    async def _feed(self) -> None:
        data = b""
        if not self.eof:
            try:
                data = await self.reader.read(65536)
            except (ConnectionError, OSError):
                data = b""
        if not data:
            self.eof = True
        else:
            now = time.monotonic()
            with self.b.lock:
                if len(self.conn.raw) < RAW_CAP:
                    self.conn.raw += data
                self.conn.last_rx = now
                self.b.last_rx = now
        self.fed += len(data)
        self.h.receive_data(data)

    def _consumed(self) -> int:
        return self.base + self.fed - len(self.h.trailing_data[0])

    async def next_event(self):
        while True:
            event = self.h.next_event()
            if event is h11.NEED_DATA:
                if self.eof:
                    return h11.ConnectionClosed()
                await self._feed()
                continue
            return event

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def _error(self, message: str) -> None:
        start = self.event_end
        with self.b.lock:
            self.b.errors.append(UpError(self.b._next_seq(), self.conn.id, message,
                                         bytes(self.conn.raw[start:start + 400])))

    def _fresh_parser(self) -> None:
        """A new h11 parser for the rest of the connection (after a scripted
        answer h11 did not produce), keeping the bytes not yet parsed."""
        rest = bytes(self.h.trailing_data[0])
        self.base = self._consumed()
        self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self.fed = len(rest)
        self.h.receive_data(rest)
        if self.eof:
            self.h.receive_data(b"")

    async def run(self) -> None:
        while True:
            try:
                event = await self.next_event()
            except h11.RemoteProtocolError as exc:
                if not self.eof:  # a head cut short by a close is an abort, not a framing error
                    self._error(f"h11 cannot frame the request: {exc}")
                return
            if isinstance(event, h11.ConnectionClosed) or self.eof and event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                self._error(f"unexpected h11 event {event!r}")
                return
            end = self._consumed()
            raw_head = bytes(self.conn.raw[self.event_end:end])
            self.event_end = end
            with self.b.lock:
                self.conn.busy = True
                req = UpRequest(self.b._next_seq(), self.conn.id, 0, event.method.decode("latin-1"),
                                event.target.decode("latin-1"), event.http_version.decode("latin-1"),
                                list(event.headers), raw_head, head_violations(raw_head, "request"))
                req.index = sum(1 for r in self.b.requests if r.conn_id == self.conn.id) + 1
                self.b.requests.append(req)
            path = req.target.split("?", 1)[0]
            script = self.b.scripts.get(path) if path.startswith("/r/") else None
            try:
                if script is not None:
                    if script.after_body:
                        await self._read_body(req)
                    for data, delay in script.steps:
                        await self.send(data)
                        if delay:
                            await asyncio.sleep(delay)
                    if script.end == "close":
                        return
                    if script.end == "hang":
                        while not self.eof:
                            await self._feed()
                        return
                    if not script.after_body:
                        await self._read_body(req)
                    self._fresh_parser()
                    with self.b.lock:
                        self.conn.busy = False
                    continue
                if path.startswith("/e/"):
                    await self._answer(req, None)
                    await self._read_body(req)
                else:
                    await self._read_body(req)
                    await self._answer(req, bytes(req.body), close=path.startswith("/canary-"))
            except h11.RemoteProtocolError as exc:
                if not self.eof:  # a body cut short by a close: the request stays incomplete
                    self._error(f"h11 cannot frame the request body: {exc}")
                return
            with self.b.lock:
                self.conn.busy = False
            if self.h.our_state is h11.MUST_CLOSE or self.h.their_state is h11.MUST_CLOSE:
                return
            if self.h.our_state is h11.CLOSED or self.h.their_state is h11.CLOSED:
                return
            self.h.start_next_cycle()

    async def _read_body(self, req: UpRequest) -> None:
        while self.h.their_state is h11.SEND_BODY:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                req.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.event_end = self._consumed()
                with self.b.lock:
                    req.complete = True
                return
            elif isinstance(event, h11.ConnectionClosed):
                return
        if self.h.their_state in (h11.DONE, h11.MIGHT_SWITCH_PROTOCOL) and not req.complete:
            self.event_end = self._consumed()
            with self.b.lock:
                req.complete = True

    async def _answer(self, req: UpRequest, body: bytes | None, close: bool = False) -> None:
        fp = fingerprint(req.method, req.target, body)
        doc = json.dumps({"fp": fp, "conn": self.conn.id, "index": req.index}).encode()
        headers = [("X-Fp", fp), ("Content-Type", "application/json"), ("Content-Length", str(len(doc)))]
        if close:
            headers.append(("Connection", "close"))
        # 405 to CONNECT: a 2xx would switch protocols (oracle.py does the same).
        out = self.h.send(h11.Response(status_code=405 if req.method == "CONNECT" else 200, headers=headers))
        if req.method != "HEAD":
            out += self.h.send(h11.Data(data=doc))
        out += self.h.send(h11.EndOfMessage())
        await self.send(out)
