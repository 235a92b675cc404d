"""Runs fuzz cases through a real fastgw process and judges them.

`FuzzHarness` owns a `RecordingBackend` and a `Gateway` (tests/support,
1 worker, one cluster with the default pool settings so upstream
connections are reused). Each case:

1. (response cases) registers the scripted answer on the backend;
2. opens a client connection, sends the case's bytes, reads until fastgw
   closes, or everything h11 parsed is answered and both sides are quiet,
   or the time bound passes (a hang);
3. sends a canary on a second client connection: a well-formed GET or POST
   with a known body. The backend answers canaries with `Connection: close`,
   so the canary takes (and then retires) the upstream connection the case
   left in the pool: whatever the case left behind on that connection shows
   up in the canary's request or answer;
4. compares everything the backend recorded meanwhile with h11's reading of
   the same bytes (oracle.py).

Cases are judged independently: before each one the pool is empty.
"""
from __future__ import annotations

import base64
import json
import select
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from .backend import RecordingBackend, ResponseScript, fingerprint
from .mutators import RequestCase, ResponseCase
from .oracle import (Finding, check_forwarded, check_response_case, check_upstream_side,
                     parse_client_bytes, parse_gateway_output, parse_upstream_response)

# Timeouts given to fastgw; every bound below is derived from them.
RESPONSE_HEADER = 2.0
IDLE = 2.0
CLIENT_HEADER = 2.0
SLACK = 5.0
QUIET = 0.05          # both sides silent this long: the case is over


def gateway_config(backend_url: str) -> dict:
    return {
        "server": {"timeouts": {"client_header": f"{CLIENT_HEADER:g}s"}},
        "clusters": {"backend": {
            "endpoints": [{"url": backend_url}],
            "timeouts": {"connect": "2s", "response_header": f"{RESPONSE_HEADER:g}s", "idle": f"{IDLE:g}s"},
        }},
        # Retries off: a retried request would reach the backend twice and
        # blur what one client's bytes caused. (The gateway's one retry of a
        # stale pooled connection stays: it never reaches a live backend.)
        "routes": [{"name": "all", "match": {"prefix": "/"}, "cluster": "backend", "retries": "off"}],
    }


@dataclass
class Outcome:
    findings: list[Finding]
    elapsed: float
    summary: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}


class _Reader:
    """One client connection to the gateway, read without blocking."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.data = bytearray()
        self.eof = False
        self.last_rx = time.monotonic()

    def send(self, data: bytes) -> None:
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        except OSError:
            pass        # the gateway may close early (a rejected head); what it answered is still read
        finally:
            self.sock.setblocking(False)

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def poll(self, timeout: float) -> None:
        if self.eof:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            self.data += chunk
            self.last_rx = time.monotonic()
        else:
            self.eof = True

    def close(self) -> None:
        self.sock.close()


class FuzzHarness:
    def __init__(self, workdir: Path):
        from support.gateway import Gateway   # tests/ is on sys.path (conftest or the script)
        self.backend = RecordingBackend().start()
        self.gw = Gateway(Path(workdir), gateway_config(self.backend.url), workers=1, name="fuzzgw")
        self.gw.start()
        self.canaries = 0

    def close(self) -> None:
        self.gw.stop()
        self.backend.stop()

    # ---- shared steps --------------------------------------------------------------

    def _read_until_done(self, client: _Reader, methods: list[str], bound: float, http10: bool = False,
                         settle: float = QUIET) -> tuple[list, str, bool]:
        """Read until EOF, or all `methods` answered and quiet, or `bound`.
        Returns (responses, parse state, hung)."""
        start = time.monotonic()
        while True:
            client.poll(0.01)
            now = time.monotonic()
            got, state = parse_gateway_output(bytes(client.data), client.eof, methods, http10)
            if client.eof or state.startswith("error"):
                return got, state, False
            answered = len([r for r in got if r.complete]) >= len(methods)
            if got and got[-1].complete and (got[-1].header(b"connection") or b"").lower() == b"close":
                answered = True
            quiet = now - client.last_rx >= settle and self.backend.quiet_for() >= settle
            if answered and quiet:
                return got, state, False
            if now - start > bound:
                return got, state, not answered

    def _canary(self, findings: list[Finding], get_only: bool = False) -> None:
        """A well-formed request on its own connection; it must get its own
        answer, and the backend must receive it exactly. GET and POST
        alternate; `get_only` after an upstream that closed at the end of its
        answer: should fastgw pick that connection before it has read the
        close, a GET is retried on a fresh one, a POST would get a 502 that
        says nothing about the case."""
        self.canaries += 1
        n = self.canaries
        if n % 2 or get_only:
            method, target, body = "GET", f"/canary-{n}", b""
            raw = f"GET {target} HTTP/1.1\r\nHost: canary.test\r\n\r\n".encode()
        else:
            method, target, body = "POST", f"/canary-{n}", b"canary-body-%d" % n
            raw = (f"POST {target} HTTP/1.1\r\nHost: canary.test\r\nContent-Length: {len(body)}\r\n\r\n"
                   .encode() + body)
        mark = self.backend.mark()
        client = _Reader(self.gw.port)
        try:
            client.send(raw)
            got, state, hung = self._read_until_done(client, [method], RESPONSE_HEADER + SLACK, settle=0.0)
        finally:
            client.close()
        want = fingerprint(method, target, body)
        if hung or not got or not got[0].complete:
            findings.append(Finding("canary-no-answer", f"{method} {target}: got {client.data[:300]!r}"))
        elif got[0].status != 200 or got[0].header(b"x-fp") != want.encode():
            findings.append(Finding("canary-wrong-answer",
                                    f"{method} {target}: got {got[0].status} x-fp={got[0].header(b'x-fp')!r} "
                                    f"(want {want}) body {got[0].body[:200]!r}"))
        reqs, _ = self.backend.since(mark)
        mine = [r for r in reqs if r.target == target]
        if len(mine) != 1 or not mine[0].complete or bytes(mine[0].body) != body or mine[0].method != method:
            findings.append(Finding("canary-corrupted",
                                    f"backend records for {method} {target} body={body!r}: "
                                    f"{[r.shape() for r in mine]}; all since: {[r.shape() for r in reqs]}"))

    def _retire_pooled(self, findings: list[Finding]) -> None:
        """More GET canaries while the backend still has idle connections
        open (one the first canary did not take): each takes one from
        fastgw's pool, is checked like the first, and closes it."""
        for _ in range(3):
            deadline = time.monotonic() + 0.1
            while time.monotonic() < deadline:
                if not [c for c in self.backend.open_conns() if not c.busy]:
                    return
                time.sleep(0.005)
            self._canary(findings, get_only=True)

    def _settle_pool(self) -> None:
        """Leave no upstream connection for the next case: canaries retire
        pooled ones; anything still open after that is closed here."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if not [c for c in self.backend.open_conns() if not c.busy]:
                return
            time.sleep(0.005)
        self.backend.close_all()
        time.sleep(0.2)   # let fastgw read those closes before the next case picks a connection

    def _begin(self) -> int:
        self._settle_pool()
        # Whatever the last case still had in flight lands before the mark.
        deadline = time.monotonic() + 1.0
        while self.backend.quiet_for() < 0.02 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.backend.mark()

    # ---- request cases ------------------------------------------------------------------

    def run_request_case(self, case: RequestCase) -> Outcome:
        start = time.monotonic()
        mark = self._begin()
        parse = parse_client_bytes(case.data)
        findings: list[Finding] = []
        client = _Reader(self.gw.port)
        bound = max(CLIENT_HEADER, RESPONSE_HEADER, IDLE) + SLACK
        try:
            for i, chunk in enumerate(case.writes):
                if i:
                    time.sleep(0.005)
                client.send(chunk)
            # A client whose bytes stop mid-request half-closes, as a real
            # one would (fastgw aborts then; no timeout needed).
            if case.shutdown or parse.stop == "partial":
                client.shutdown()
            methods = [r.method for r in parse.complete] or ["GET"]
            got, state, hung = self._read_until_done(client, methods, bound)
            if hung:
                findings.append(Finding("hang", f"no answer to every request h11 parsed and no close within "
                                                f"{bound:.0f}s; h11 parsed {[r.shape() for r in parse.requests]}"))
            self._canary(findings)
            self._retire_pooled(findings)
        finally:
            client.close()
        reqs, errors = self.backend.since(mark)
        forwarded = [r for r in reqs if not r.target.startswith("/canary-")]
        findings = check_upstream_side(reqs, errors) + check_forwarded(parse, forwarded) + findings
        summary = (f"h11: {[r.shape() for r in parse.requests]} stop={parse.stop}; "
                   f"backend: {[r.shape() for r in forwarded]}")
        return Outcome(findings, time.monotonic() - start, summary)

    # ---- response cases -------------------------------------------------------------------

    def run_response_case(self, case: ResponseCase, name: str) -> Outcome:
        start = time.monotonic()
        mark = self._begin()
        path = f"/r/{name}"
        self.backend.script(path, ResponseScript(list(case.steps), case.end))
        version = "1.0" if case.http10 else "1.1"
        head = f"{case.method} {path} HTTP/{version}\r\nHost: fuzz.test\r\n"
        if case.keep_alive10:
            head += "Connection: keep-alive\r\n"
        if case.body is not None:
            head += f"Content-Length: {len(case.body)}\r\n"
        if case.expect:
            head += "Expect: 100-continue\r\n"
        raw = head.encode() + b"\r\n" + (case.body or b"")
        delays = sum(d for _, d in case.steps)
        bound = RESPONSE_HEADER + IDLE + delays + SLACK
        client = _Reader(self.gw.port)
        findings: list[Finding] = []
        try:
            client.send(raw)
            got, state, hung = self._read_until_done(client, [case.method], bound, case.http10)
            up = parse_upstream_response(case.method, case.data, case.end == "close")
            findings += check_response_case(up, got, state, hung, case.http10, case.expect, bound)
            self._canary(findings, get_only=case.end == "close")
            self._retire_pooled(findings)
        finally:
            client.close()
        reqs, errors = self.backend.since(mark)
        findings = check_upstream_side(reqs, errors) + findings
        summary = (f"upstream h11: interim={up.interim} status={up.status} complete={up.complete} "
                   f"error={up.error}; client: {[(r.interim, r.status, r.complete, r.body[:40]) for r in got]} "
                   f"eof={client.eof}")
        return Outcome(findings, time.monotonic() - start, summary)


# ---- corpus files ---------------------------------------------------------------------------


def _enc(data: bytes) -> dict:
    """Readable when the bytes are text, exact always."""
    return {"text": data.decode("latin-1"), "b64": base64.b64encode(data).decode()}


def _dec(doc: dict) -> bytes:
    return base64.b64decode(doc["b64"])


def case_to_json(case, comment: str, found: list[str], extra: dict | None = None) -> dict:
    doc: dict = {"comment": comment, "found": found}
    if isinstance(case, RequestCase):
        doc.update(mode="request", writes=[_enc(w) for w in case.writes], shutdown=case.shutdown,
                   tags=sorted(case.tags))
    else:
        doc.update(mode="response", method=case.method, http10=case.http10, keep_alive10=case.keep_alive10,
                   body=None if case.body is None else _enc(case.body), expect=case.expect,
                   steps=[{"data": _enc(b), "delay": d} for b, d in case.steps], end=case.end,
                   tags=sorted(case.tags))
    doc.update(extra or {})
    return doc


def case_from_json(doc: dict):
    if doc["mode"] == "request":
        return RequestCase([_dec(w) for w in doc["writes"]], doc.get("shutdown", False), set(doc.get("tags", ())))
    return ResponseCase(doc["method"], doc.get("http10", False), doc.get("keep_alive10", False),
                        None if doc.get("body") is None else _dec(doc["body"]), doc.get("expect", False),
                        [(_dec(s["data"]), float(s.get("delay", 0))) for s in doc["steps"]], doc["end"],
                        set(doc.get("tags", ())))


def load_corpus(directory: Path) -> list[tuple[str, dict]]:
    return [(p.stem, json.loads(p.read_text())) for p in sorted(Path(directory).glob("*.json"))]


def run_case(harness: FuzzHarness, case, name: str) -> Outcome:
    if isinstance(case, RequestCase):
        return harness.run_request_case(case)
    return harness.run_response_case(case, name)
