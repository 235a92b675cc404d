"""What a strict HTTP/1.1 peer (h11) makes of the same bytes, and the rules
that compare it with what went through fastgw.

Request side: `parse_client_bytes` runs h11 as a server over the exact bytes
a fuzz client sent and lists the requests it accepts, in order, up to the
first point it cannot parse (or the point after which the connection must
close). `check_request_case` then holds the backend's records against that
list: everything the backend received must be one of those requests, in
order, with the same method, target and body; fastgw answering something
itself (a 4xx/5xx) instead of forwarding it is always fine.

Response side: `parse_upstream_response` runs h11 as a client over the exact
bytes the backend answered; `check_response_case` compares what the fuzz
client got through fastgw.

Known places where h11 is more lenient than an RFC 9112 proxy must be
(obs-fold, Content-Length with Transfer-Encoding) only make h11 accept more,
so fastgw refusing them passes these rules as "stricter".
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import h11


@dataclass
class Finding:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


# ---- request side ---------------------------------------------------------------


@dataclass
class ParsedRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False

    def shape(self) -> str:
        return f"{self.method} {self.target} body={bytes(self.body)!r}" + ("" if self.complete else " (incomplete)")


@dataclass
class ClientParse:
    requests: list[ParsedRequest]
    stop: str            # "end" (all bytes parsed, at a message boundary), "partial", "error: ...", "close"

    @property
    def complete(self) -> list[ParsedRequest]:
        return [r for r in self.requests if r.complete]


def _tokens(headers, name: bytes) -> list[bytes]:
    return [t.strip().lower() for n, v in headers if n.lower() == name for t in v.split(b",")]


def parse_client_bytes(data: bytes) -> ClientParse:
    """h11 (server side) over everything one client sent. Each complete
    request is answered with a non-101 200 (as the recording backend
    does), so upgrade requests continue as plain HTTP. HTTP/1.0 keep-alive,
    which h11 does not implement, continues on a fresh parser."""
    out: list[ParsedRequest] = []
    rest = data
    while True:
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        h.receive_data(rest)
        cur: ParsedRequest | None = None
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                return ClientParse(out, f"error: {exc}")
            if event is h11.NEED_DATA:
                return ClientParse(out, "partial" if cur is not None and not cur.complete or h.trailing_data[0]
                                   else "end")
            if isinstance(event, h11.Request):
                cur = ParsedRequest(event.method.decode("latin-1"), event.target.decode("latin-1"),
                                    event.http_version.decode("latin-1"), list(event.headers))
                out.append(cur)
            elif isinstance(event, h11.Data):
                assert cur is not None
                cur.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert cur is not None
                cur.complete = True
                # As the backend: 200, but 405 to CONNECT (a 2xx would switch protocols).
                status = 405 if cur.method == "CONNECT" else 200
                h.send(h11.Response(status_code=status, headers=[("Content-Length", "0")]))
                h.send(h11.EndOfMessage())
                if h.their_state is h11.MUST_CLOSE or h.our_state is h11.MUST_CLOSE:
                    conn = _tokens(cur.headers, b"connection")
                    if cur.version == "1.0" and b"keep-alive" in conn and b"close" not in conn:
                        rest = bytes(h.trailing_data[0])
                        break          # HTTP/1.0 keep-alive: continue on a fresh parser
                    return ClientParse(out, "close")
                h.start_next_cycle()
                cur = None
            else:
                return ClientParse(out, f"error: unexpected {event!r}")


def norm_target(target: str) -> str:
    """Absolute-form targets may legitimately go upstream in origin-form."""
    low = target.lower()
    if low.startswith(("http://", "https://")):
        rest = target.split("//", 1)[1]
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return target


def _same(up, exp: ParsedRequest) -> bool:
    return (up.method == exp.method and norm_target(up.target) == norm_target(exp.target)
            and bytes(up.body) == bytes(exp.body))


def _prefix(up, exp: ParsedRequest) -> bool:
    return (up.method == exp.method and norm_target(up.target) == norm_target(exp.target)
            and bytes(exp.body).startswith(bytes(up.body)))


def check_forwarded(parse: ClientParse, forwarded: list) -> list[Finding]:
    """Every request the backend got from this client must be an h11 request
    of the client's bytes, in order, same method/target/body. A backend
    request cut short (the exchange was aborted) only has to be a prefix."""
    findings: list[Finding] = []
    expected = parse.requests
    pos = 0
    for up in forwarded:
        match = None
        for i in range(pos, len(expected)):
            if (_same(up, expected[i]) and expected[i].complete) if up.complete else _prefix(up, expected[i]):
                match = i
                break
        if match is not None:
            pos = match + 1
            continue
        same_head = [e for e in expected if e.method == up.method and norm_target(e.target) == norm_target(up.target)]
        if same_head:
            findings.append(Finding("body-mismatch",
                                    f"backend got {up.shape()} but h11 parsed {same_head[0].shape()} from the client"))
        else:
            findings.append(Finding("forwarded-unparsed",
                                    f"backend got {up.shape()}, which h11 did not parse from the client's bytes "
                                    f"(h11: {[e.shape() for e in expected]}, stopped: {parse.stop})"))
    return findings


def check_upstream_side(forwarded: list, errors: list) -> list[Finding]:
    findings = [Finding("upstream-unframeable", f"conn {e.conn_id}: {e.message}; bytes {e.context[:200]!r}")
                for e in errors]
    for up in forwarded:
        if up.violations:
            findings.append(Finding("upstream-head-violation", f"{up.raw_head[:300]!r}: {up.violations}"))
    return findings


# ---- what a client read from the gateway -------------------------------------------


@dataclass
class ClientResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    interim: list[int]
    body: bytes = b""
    complete: bool = False

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def close_delimited(self) -> bool:
        """The body ends where the connection does (no Content-Length, not
        chunked): a cut-short body looks complete to the client."""
        return (self.header(b"content-length") is None
                and b"chunked" not in (self.header(b"transfer-encoding") or b"").lower())

    def is_gateway_error(self) -> bool:
        """fastgw's own error. The response scripts never use 502 or 504, so
        those are the gateway's (also to HEAD, where the JSON body is not
        sent); other statuses need fastgw's JSON error body."""
        if self.status in (502, 504):
            return True
        if self.status < 400 or not self.complete:
            return False
        try:
            doc = json.loads(self.body)
        except ValueError:
            return False
        return isinstance(doc, dict) and isinstance(doc.get("error"), dict)


def parse_gateway_output(data: bytes, eof: bool, methods: list[str], http10: bool = False
                         ) -> tuple[list[ClientResponse], str]:
    """Responses in `data` (what one client read), one per entry of
    `methods` (HEAD has no body). Returns (responses, state): state "more"
    (the last one is unfinished), "done" (all parsed, boundary) or
    "error: ..." (h11 rejects what the gateway sent)."""
    out: list[ClientResponse] = []
    rest = data
    for method in methods:
        if not rest and not eof:
            return out, "done"
        h = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
        headers = [("Host", "h")] + ([("Connection", "close")] if http10 else [])
        h.send(h11.Request(method=method, target="/", headers=headers))
        h.send(h11.EndOfMessage())
        h.receive_data(rest)
        if eof:
            h.receive_data(b"")
        cur: ClientResponse | None = None
        interim: list[int] = []
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                if cur is not None and eof:
                    out.append(cur)          # cut short: complete stays False
                    return out, "done"
                if cur is None and eof and not rest:
                    return out, "done"
                return out, f"error: {exc}"
            if event is h11.NEED_DATA:
                if cur is not None:
                    out.append(cur)
                return out, "more"
            if isinstance(event, h11.ConnectionClosed):
                return out, "done"
            if isinstance(event, h11.InformationalResponse):
                interim.append(event.status_code)
            elif isinstance(event, h11.Response):
                cur = ClientResponse(event.status_code, list(event.headers), interim)
            elif isinstance(event, h11.Data):
                assert cur is not None
                cur.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert cur is not None
                cur.complete = True
                out.append(cur)
                if h.their_state is h11.MUST_CLOSE:
                    return out, "done"
                rest = bytes(h.trailing_data[0])
                break
    return out, "done"


# ---- response side ------------------------------------------------------------------


@dataclass
class UpstreamParse:
    interim: list[int]
    status: int | None          # the final status h11 accepted, if any
    body: bytes
    complete: bool              # h11 parsed a whole final response
    error: str | None
    reusable: bool              # h11 would keep the connection after it


def parse_upstream_response(method: str, data: bytes, closed: bool, upgrade: bool = False) -> UpstreamParse:
    h = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
    headers = [("Host", "h")]
    if upgrade:
        headers += [("Connection", "upgrade"), ("Upgrade", "websocket")]
    h.send(h11.Request(method=method, target="/", headers=headers))
    h.send(h11.EndOfMessage())
    h.receive_data(data)
    if closed:
        h.receive_data(b"")
    interim: list[int] = []
    status = None
    body = bytearray()
    while True:
        try:
            event = h.next_event()
        except (h11.RemoteProtocolError, h11.LocalProtocolError) as exc:
            return UpstreamParse(interim, status, bytes(body), False, str(exc), False)
        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return UpstreamParse(interim, status, bytes(body), False, None if not closed else "closed early", False)
        if isinstance(event, h11.InformationalResponse):
            interim.append(event.status_code)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            reusable = h.their_state is h11.DONE and not h.trailing_data[0]
            return UpstreamParse(interim, status, bytes(body), True, None, reusable)


def check_response_case(up: UpstreamParse, got: list[ClientResponse], state: str, hung: bool,
                        http10: bool, expect_sent: bool, bound: float) -> list[Finding]:
    """What the client got through fastgw against h11's reading of the
    backend's bytes. Allowed: the same final status and body (1xx forwarded
    to HTTP/1.1 clients, never to HTTP/1.0 ones), fastgw's own 5xx error
    (stricter than h11, or a timeout), or a response cut short by a close.
    Not allowed: a hang, a complete answer h11 would not have accepted, a
    different status or body, invented 1xx."""
    if hung:
        return [Finding("hang", f"no complete answer and no close within {bound:.1f}s "
                                f"(got {[(r.status, r.complete) for r in got]}); h11 read "
                                f"interim={up.interim} status={up.status} complete={up.complete} error={up.error}")]
    if state.startswith("error"):
        return [Finding("gateway-output-unparseable", f"h11 rejects what fastgw sent the client: {state}")]
    if not got:
        return []      # closed without an answer: not nice, but bounded and not wrong
    resp = got[0]
    findings: list[Finding] = []
    if resp.is_gateway_error():
        return []
    relayed_1xx = [s for s in resp.interim if s != 100 or not expect_sent]
    if http10 and resp.interim:
        findings.append(Finding("interim-to-http10", f"HTTP/1.0 client got 1xx {resp.interim}"))
    extra = [s for s in relayed_1xx if s not in up.interim]
    if extra:
        findings.append(Finding("invented-interim", f"client got 1xx {extra}, upstream sent {up.interim}"))
    if up.status is None:
        findings.append(Finding("relayed-unparseable",
                                f"client got {resp.status} (complete={resp.complete}) but h11 finds no valid "
                                f"final response in the upstream's bytes ({up.error})"))
        return findings
    if resp.status != up.status:
        findings.append(Finding("status-mismatch", f"client got {resp.status}, upstream's final is {up.status}"))
    elif resp.complete and not up.complete and resp.close_delimited() and up.body.startswith(resp.body):
        pass   # cut short, told by a close: all an HTTP/1.0 (or close-delimited) answer can say
    elif resp.complete and not up.complete:
        findings.append(Finding("completed-invalid",
                                f"client got a complete {resp.status} with body {resp.body[:80]!r}; h11: {up.error}"))
    elif resp.complete and resp.body != up.body:
        findings.append(Finding("body-mismatch", f"client body {resp.body[:80]!r} != upstream body {up.body[:80]!r}"))
    return findings
