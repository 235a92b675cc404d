"""Raw-socket HTTP/1.1 clients whose responses are parsed by h11.

The tests send exact bytes (malformed ones included) and read what fastgw
answers with an independent, strict parser: h11 for the message structure and
`strict.head_violations` for the raw head bytes. Every read has a timeout, so
a gateway that hangs fails the test instead of stalling the run.
"""
from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import h11

from .strict import head_violations

Headers = Iterable[tuple[str, str]]


class ReadTimeout(AssertionError):
    """The gateway did not send what we waited for within the timeout."""


@dataclass
class HTTPResponse:
    status: int
    reason: str
    http_version: str
    headers: list[tuple[str, str]]          # names lower-cased by h11
    raw_head: bytes
    informational: list["HTTPResponse"] = field(default_factory=list)
    body: bytes = b""
    complete: bool = True                    # False: the body was cut short

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        assert len(values) <= 1, f"response has {len(values)} {name} headers: {values!r}"
        return values[0] if values else None

    def header_tokens(self, name: str) -> list[str]:
        """Comma-separated list values of every `name` field, lower-cased."""
        return [t.strip().lower() for v in self.header_all(name) for t in v.split(",") if t.strip()]

    def header_names(self) -> set[str]:
        return {n for n, _ in self.headers}

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise AssertionError(f"response body is not JSON ({exc}): {self.body[:500]!r}") from None

    def describe(self) -> str:
        return f"{self.status} {self.reason} headers={self.headers!r} body={self.body[:300]!r}"


def build_request(method: str, target: str, headers: Headers = (), body: bytes | None = None,
                  *, version: str = "1.1", host: str | None = "test.local") -> bytes:
    """Request bytes. Adds Host (unless host is None or one is given) and,
    for a body with no framing header, Content-Length."""
    hdrs = list(headers)
    names = {n.lower() for n, _ in hdrs}
    if host is not None and "host" not in names:
        hdrs.insert(0, ("Host", host))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in hdrs) + "\r\n"
    return head.encode("latin-1") + (body or b"")


def chunked(parts: Iterable[bytes]) -> bytes:
    """A chunked body (with the last-chunk and an empty trailer section)."""
    out = bytearray()
    for part in parts:
        if part:
            out += b"%x\r\n" % len(part) + part + b"\r\n"
    out += b"0\r\n\r\n"
    return bytes(out)


class RawClient:
    """One client TCP connection to the gateway."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._leftover = b""
        self._eof = False
        self.reset = False              # the peer reset the connection
        self._h: h11.Connection | None = None
        self._head_acc: bytearray | None = None
        self._informational: list[HTTPResponse] = []

    # ---- plumbing ------------------------------------------------------------

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, target: str, headers: Headers = (), body: bytes | None = None,
                **kw) -> None:
        self.send(build_request(method, target, headers, body, **kw))

    def _recv(self, timeout: float | None = None) -> bytes:
        if self._eof:
            return b""
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            data = self.sock.recv(256 * 1024)
        except socket.timeout:
            raise ReadTimeout(f"no data from the gateway within {self.sock.gettimeout()}s") from None
        except ConnectionResetError:
            self.reset = True
            data = b""
        if not data:
            self._eof = True
        return data

    # ---- one response ----------------------------------------------------------

    def _begin(self, method: str, version: str) -> None:
        h = h11.Connection(h11.CLIENT, max_incomplete_event_size=1024 * 1024)
        # h11 only speaks 1.1 as a client; a 1.0 exchange is modelled as a
        # 1.1 one that ends the connection (the response framing rules that
        # matter here are the same).
        headers = [("Host", "h")] if version == "1.1" else [("Host", "h"), ("Connection", "close")]
        h.send(h11.Request(method=method, target="/", headers=headers))
        h.send(h11.EndOfMessage())
        if self._leftover:
            h.receive_data(self._leftover)
        if self._eof:
            h.receive_data(b"")
        self._head_acc = bytearray(self._leftover)
        self._leftover = b""
        self._h = h
        self._informational = []

    def _next_event(self, timeout: float | None = None):
        assert self._h is not None
        while True:
            try:
                event = self._h.next_event()
            except h11.RemoteProtocolError:
                raise
            if event is h11.NEED_DATA:
                data = self._recv(timeout)
                if self._head_acc is not None:
                    self._head_acc += data
                self._h.receive_data(data)
                continue
            return event

    def read_head(self, method: str = "GET", version: str = "1.1", *, informational: bool = False,
                  timeout: float | None = None) -> HTTPResponse:
        """The next response head. 1xx heads are collected into
        `.informational` of the final one, unless `informational` is set, in
        which case the first head (1xx or final) is returned as it comes."""
        if self._h is None:
            self._begin(method, version)
        while True:
            try:
                event = self._next_event(timeout)
            except h11.RemoteProtocolError as exc:
                got = bytes(self._head_acc or b"")
                if self._eof and not got:
                    raise AssertionError("the gateway closed the connection without sending a response"
                                         + (" (reset)" if self.reset else "")) from None
                raise AssertionError(
                    f"h11 rejected the gateway's response head: {exc}; bytes: {got[:2000]!r}"
                ) from None
            if isinstance(event, h11.ConnectionClosed):
                raise AssertionError("connection closed before a response head")
            assert isinstance(event, (h11.InformationalResponse, h11.Response)), event
            assert self._h is not None and self._head_acc is not None
            rest = len(self._h.trailing_data[0])
            raw_head = bytes(self._head_acc[: len(self._head_acc) - rest])
            self._head_acc = bytearray(self._h.trailing_data[0])
            problems = head_violations(raw_head, "response")
            assert not problems, f"gateway sent a bad response head {raw_head!r}: {problems}"
            resp = HTTPResponse(
                status=event.status_code,
                reason=event.reason.decode("latin-1"),
                http_version=event.http_version.decode("ascii"),
                headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers],
                raw_head=raw_head,
            )
            if isinstance(event, h11.InformationalResponse):
                if informational:
                    return resp
                self._informational.append(resp)
                continue
            self._head_acc = None
            resp.informational = self._informational
            return resp

    def read_chunk(self, timeout: float | None = None) -> bytes | None:
        """The next piece of the current response body; None at its end."""
        assert self._h is not None, "no response in progress"
        event = self._next_event(timeout)
        if isinstance(event, h11.Data):
            return bytes(event.data)
        assert isinstance(event, h11.EndOfMessage), event
        data, closed = self._h.trailing_data
        self._leftover = bytes(data)
        self._h = None
        return None

    def read_body(self, resp: HTTPResponse, *, sink: Callable[[bytes], None] | None = None,
                  allow_incomplete: bool = False, timeout: float | None = None) -> HTTPResponse:
        parts: list[bytes] = []
        try:
            while True:
                chunk = self.read_chunk(timeout)
                if chunk is None:
                    break
                if sink is not None:
                    sink(chunk)
                else:
                    parts.append(chunk)
        except h11.RemoteProtocolError as exc:
            if not (allow_incomplete and self._eof):
                raise AssertionError(f"h11 rejected the gateway's response body: {exc}") from None
            resp.complete = False
            self._h = None
        resp.body = b"".join(parts)
        return resp

    def read_response(self, method: str = "GET", version: str = "1.1", *,
                      sink: Callable[[bytes], None] | None = None, allow_incomplete: bool = False,
                      timeout: float | None = None) -> HTTPResponse:
        resp = self.read_head(method, version, timeout=timeout)
        return self.read_body(resp, sink=sink, allow_incomplete=allow_incomplete, timeout=timeout)

    # ---- connection state --------------------------------------------------------

    def assert_closed(self, timeout: float = 5.0) -> None:
        """The gateway closes the connection (EOF or reset) within `timeout`,
        sending nothing more."""
        extra = bytearray(self._leftover)
        self._leftover = b""
        deadline = time.monotonic() + timeout
        while not self._eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReadTimeout(f"gateway did not close the connection within {timeout}s")
            try:
                extra += self._recv(left)
            except ReadTimeout:
                raise ReadTimeout(f"gateway did not close the connection within {timeout}s") from None
        assert not extra, f"unexpected bytes before close: {bytes(extra)[:500]!r}"

    def is_open(self, wait: float = 0.2) -> bool:
        """True if the connection is still open after `wait` seconds of silence."""
        if self._eof:
            return False
        try:
            data = self._recv(wait)
        except ReadTimeout:
            return True
        if data:
            self._leftover += data
            return True
        return False


def http_request(port: int, method: str, target: str, headers: Headers = (), body: bytes | None = None,
                 *, timeout: float = 5.0, **kw) -> HTTPResponse:
    """One request on a fresh connection; the whole response."""
    with RawClient(port, timeout=timeout) as client:
        client.request(method, target, headers, body, **kw)
        return client.read_response(method, kw.get("version", "1.1"))


def assert_gateway_error(resp: HTTPResponse, status: int, code: str) -> dict:
    """fastgw's JSON error shape, with X-Request-ID matching the body."""
    assert resp.status == status, f"expected {status} {code}, got {resp.describe()}"
    ctype = (resp.header("content-type") or "").split(";")[0].strip().lower()
    assert ctype == "application/json", f"error Content-Type is {ctype!r}: {resp.describe()}"
    doc = resp.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), f"bad error body {doc!r}"
    err = doc["error"]
    assert err.get("code") == code, f"expected code {code!r}, got {err!r}"
    assert isinstance(err.get("message"), str) and err["message"], f"empty error message: {err!r}"
    request_id = resp.header("x-request-id")
    assert request_id, f"error response without X-Request-ID: {resp.describe()}"
    assert err.get("request_id") == request_id, f"body request_id {err.get('request_id')!r} != header {request_id!r}"
    return err
