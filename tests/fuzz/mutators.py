"""Generators of fuzz cases: raw client requests and raw upstream responses.

Every case is built from one `random.Random`, so (seed, index) reproduces it
exactly. Messages are first assembled from structured choices (request line,
headers, framing, body), each weighted towards the shapes that matter for a
proxy (framing headers that disagree, upgrade with a body, versions that are
not 1.0/1.1, chunk syntax, pipelining), then optionally damaged at the byte
level (truncation, a flipped/inserted/deleted byte). Tags record which
choices were made, so findings can be grouped by what triggered them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

PRINTABLE = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~"


@dataclass
class RequestCase:
    writes: list[bytes]           # sent in this order, as separate writes
    shutdown: bool = False        # half-close after sending (a truncated input)
    tags: set[str] = field(default_factory=set)

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


@dataclass
class ResponseCase:
    method: str                   # the client's request
    http10: bool
    keep_alive10: bool            # HTTP/1.0 client with Connection: keep-alive
    body: bytes | None            # request body (POST)
    expect: bool                  # Expect: 100-continue
    steps: list[tuple[bytes, float]]
    end: str                      # keep | close | hang (see backend.ResponseScript)
    tags: set[str] = field(default_factory=set)

    @property
    def data(self) -> bytes:
        return b"".join(b for b, _ in self.steps)


def pick(rng: random.Random, weighted: list[tuple[float, object]]):
    total = sum(w for w, _ in weighted)
    x = rng.random() * total
    for w, v in weighted:
        x -= w
        if x < 0:
            return v
    return weighted[-1][1]


def body_bytes(rng: random.Random, lo: int = 1, hi: int = 40) -> bytes:
    return bytes(rng.choice(PRINTABLE) for _ in range(rng.randint(lo, hi)))


# ---- requests ---------------------------------------------------------------------


def _request_line(rng: random.Random, tags: set[str], name: str) -> tuple[str, bytes]:
    method = pick(rng, [(30, "GET"), (35, "POST"), (5, "PUT"), (5, "HEAD"), (3, "OPTIONS"), (3, "DELETE"),
                        (4, "PATCH"), (1, "get"), (1, "G\x01T"), (1, "CONNECT"), (1, "GET GET")])
    # /e/ paths make the backend answer as soon as the head arrives (see backend.py).
    early = rng.random() < 0.5
    path = f"/{'e' if early else 'f'}/{name}"
    if early:
        tags.add("early")
    target = pick(rng, [(80, path), (3, path + "?q=1&r=%20"), (2, "http://x" + path), (1, "*"),
                        (1, path + " x"), (1, path + "\x7f"), (1, path + "#frag"), (1, "/" + path),
                        (1, path + "%00")])
    version = pick(rng, [(78, " HTTP/1.1"), (8, " HTTP/1.0"), (5, ""), (1, " HTTP/2.0"), (1, " HTTP/1.2"),
                         (1, " HTTP/0.9"), (1, " http/1.1"), (1, " HTTP/1.1 "), (1, " HTTP/11"),
                         (1, " HTTP/1.1x"), (1, " HTTP/ 1.1"), (1, " HTTP/9.9")])
    if version == "":
        tags.add("no-version")
    elif version != " HTTP/1.1":
        tags.add("odd-version" if version != " HTTP/1.0" else "http10")
    if method not in ("GET", "POST"):
        tags.add("method-" + method.encode("unicode_escape").decode())
    return method, f"{method} {target}{version}".encode("latin-1")


def _host_lines(rng: random.Random, tags: set[str]) -> list[bytes]:
    choice = pick(rng, [(86, "one"), (5, "none"), (4, "two"), (3, "empty"), (2, "odd")])
    if choice != "one":
        tags.add("host-" + choice)
    return {"one": [b"Host: fuzz.test"], "none": [], "two": [b"Host: a.test", b"Host: b.test"],
            "empty": [b"Host:"], "odd": [b"Host: a b"]}[choice]


def _noise_headers(rng: random.Random, tags: set[str]) -> list[bytes]:
    out = []
    for _ in range(rng.randint(0, 2)):
        kind = pick(rng, [(70, "plain"), (4, "space-before-colon"), (4, "no-colon"), (4, "obs-fold"),
                          (3, "ctl-in-value"), (2, "nul"), (3, "bad-name"), (3, "empty-value"),
                          (2, "leading-space-line"), (2, "long")])
        if kind != "plain":
            tags.add("hdr-" + kind)
        out.append({
            "plain": b"X-Fuzz: " + body_bytes(rng, 1, 12),
            "space-before-colon": b"X-Fuzz : v",
            "no-colon": b"X-Fuzz",
            "obs-fold": b"X-Fuzz: a\r\n b",
            "ctl-in-value": b"X-Fuzz: a\x01b",
            "nul": b"X-Fuzz: a\x00b",
            "bad-name": b"X(Fuzz): v",
            "empty-value": b"X-Fuzz:",
            "leading-space-line": b" X-Fuzz: v",
            "long": b"X-Fuzz: " + b"v" * 3000,
        }[kind])
    return out


def _connection_lines(rng: random.Random, tags: set[str]) -> list[bytes]:
    choice = pick(rng, [(62, None), (12, "ws"), (3, "ws-nokey"), (3, "h2c"), (2, "upgrade-only"),
                        (2, "conn-upgrade-only"), (5, "close"), (4, "keep-alive"), (2, "upgrade-close"),
                        (2, "names-header"), (1, "te-trailers")])
    if choice is None:
        return []
    tags.add("conn-" + choice)
    if choice.startswith(("ws", "h2c", "upgrade")):
        tags.add("upgrade")
    return {
        "ws": [b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
               b"Sec-WebSocket-Version: 13"],
        "ws-nokey": [b"Upgrade: websocket", b"Connection: Upgrade"],
        "h2c": [b"Upgrade: h2c", b"Connection: Upgrade, HTTP2-Settings", b"HTTP2-Settings: AAMAAABkAAQAAP__"],
        "upgrade-only": [b"Upgrade: foo/1"],
        "conn-upgrade-only": [b"Connection: upgrade"],
        "close": [b"Connection: close"],
        "keep-alive": [b"Connection: keep-alive"],
        "upgrade-close": [b"Upgrade: websocket", b"Connection: Upgrade, close"],
        "names-header": [b"Connection: X-Fuzz", b"X-Fuzz: dropped"],
        "te-trailers": [b"TE: trailers", b"Connection: TE"],
    }[choice]


def _chunk_size(rng: random.Random, n: int, tags: set[str]) -> bytes:
    kind = pick(rng, [(80, "hex"), (4, "upper"), (4, "zeros"), (5, "ext"), (2, "ext-quoted"), (2, "bad-ext"),
                      (1, "space"), (1, "0x"), (1, "neg"), (1, "huge")])
    if kind != "hex":
        tags.add("chunk-" + kind)
    return {
        "hex": b"%x" % n, "upper": b"%X" % n, "zeros": b"000%x" % n, "ext": b"%x;a=b" % n,
        "ext-quoted": b'%x;a="q;r"' % n, "bad-ext": b"%x;=" % n, "space": b"%x " % n, "0x": b"0x%x" % n,
        "neg": b"-%x" % n, "huge": b"ffffffffffffffff%x" % n,
    }[kind]


def _chunked_body(rng: random.Random, body: bytes, tags: set[str]) -> bytes:
    out = bytearray()
    cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randint(0, 2)))) if len(body) > 1 else []
    pos = 0
    for cut in cuts + [len(body)]:
        part = body[pos:cut]
        pos = cut
        if not part:
            continue
        size = len(part)
        if rng.random() < 0.04:
            tags.add("chunk-len-mismatch")
            size += rng.choice((-1, 1))
        out += _chunk_size(rng, size, tags) + b"\r\n" + part + (b"\r\n" if rng.random() > 0.03 else b"")
    last = pick(rng, [(85, b"0\r\n\r\n"), (5, b"0;e=1\r\n\r\n"), (6, b"0\r\nX-Trailer: t\r\n\r\n"),
                      (2, b"0\r\n"), (2, b"0\r\nContent-Length: 5\r\n\r\n")])
    if last != b"0\r\n\r\n":
        tags.add("last-chunk-variant")
    return bytes(out + last)


def _framing(rng: random.Random, method: str, tags: set[str]) -> tuple[list[bytes], bytes]:
    """Framing header lines and the body bytes that follow the head."""
    wants_body = method in ("POST", "PUT", "PATCH") or rng.random() < 0.1
    if not wants_body:
        return [], b""
    body = body_bytes(rng)
    kind = pick(rng, [(45, "cl"), (30, "chunked"), (3, "cl+te"), (2, "cl-dup-same"), (2, "cl-dup-diff"),
                      (2, "cl-plus"), (2, "cl-space"), (1, "cl-comma"), (2, "cl-short"), (2, "cl-long"),
                      (2, "te-caps"), (1, "te-twice"), (1, "te-identity"), (1, "te-gzip-chunked"),
                      (1, "te-x"), (1, "none")])
    tags.add("body")
    tags.add("fr-" + kind)
    n = len(body)
    if kind == "cl":
        return [b"Content-Length: %d" % n], body
    if kind == "chunked":
        tags.add("chunked")
        return [b"Transfer-Encoding: chunked"], _chunked_body(rng, body, tags)
    chunked = _chunked_body(rng, body, tags)
    return {
        "cl+te": ([b"Content-Length: %d" % n, b"Transfer-Encoding: chunked"], chunked),
        "cl-dup-same": ([b"Content-Length: %d" % n, b"Content-Length: %d" % n], body),
        "cl-dup-diff": ([b"Content-Length: %d" % n, b"Content-Length: %d" % (n + 1)], body),
        "cl-plus": ([b"Content-Length: +%d" % n], body),
        "cl-space": ([b"Content-Length: %d 0" % n], body),
        "cl-comma": ([b"Content-Length: %d, %d" % (n, n)], body),
        "cl-short": ([b"Content-Length: %d" % max(0, n - 3)], body),
        "cl-long": ([b"Content-Length: %d" % (n + 3)], body),
        "te-caps": ([b"Transfer-Encoding: Chunked"], chunked),
        "te-twice": ([b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"], chunked),
        "te-identity": ([b"Transfer-Encoding: identity"], body),
        "te-gzip-chunked": ([b"Transfer-Encoding: gzip, chunked"], chunked),
        "te-x": ([b"Transfer-Encoding: xchunked"], chunked),
        "none": ([], body),
    }[kind]


def build_request(rng: random.Random, name: str, tags: set[str]) -> bytes:
    method, line = _request_line(rng, tags, name)
    lines = [line] + _host_lines(rng, tags)
    framing, body = _framing(rng, method, tags)
    extra = _noise_headers(rng, tags) + _connection_lines(rng, tags)
    if rng.random() < 0.07:
        tags.add("expect")
        extra.append(pick(rng, [(8, b"Expect: 100-continue"), (1, b"Expect: 100-Continue"), (1, b"Expect: foo")]))
    headers = framing + extra
    rng.shuffle(headers)
    eol = b"\r\n"
    if rng.random() < 0.04:
        tags.add("bare-lf")
        eol = b"\n"
    head = eol.join(lines[:1] + lines[1:] + headers) + eol + eol
    return head + body


def _damage(rng: random.Random, data: bytes, tags: set[str]) -> bytes:
    pos = rng.randrange(len(data))
    kind = pick(rng, [(3, "flip"), (3, "insert"), (3, "delete"), (1, "dup")])
    tags.add("byte-" + kind)
    if kind == "flip":
        return data[:pos] + bytes([rng.choice(b"\r\n \t:;\x00\x7f0aZ")]) + data[pos + 1:]
    if kind == "insert":
        return data[:pos] + bytes([rng.choice(b"\r\n \t:;\x00")]) + data[pos:]
    if kind == "delete":
        return data[:pos] + data[pos + 1:]
    end = min(len(data), pos + rng.randint(1, 20))
    return data[:end] + data[pos:end] + data[end:]


def gen_request_case(rng: random.Random, name: str) -> RequestCase:
    tags: set[str] = set()
    count = pick(rng, [(75, 1), (15, 2), (10, 3)])
    if count > 1:
        tags.add("pipelined")
    data = b"".join(build_request(rng, f"{name}-{i}", tags) for i in range(count))
    if rng.random() < 0.12:
        data = _damage(rng, data, tags)
    shutdown = False
    if rng.random() < 0.08:
        tags.add("truncated")
        data = data[:rng.randrange(1, len(data))]
        shutdown = True
    writes = [data]
    if len(data) > 2 and rng.random() < 0.2:
        tags.add("split")
        cut = rng.randrange(1, len(data))
        writes = [data[:cut], data[cut:]]
    return RequestCase(writes, shutdown, tags)


# ---- responses ---------------------------------------------------------------------


def _status_line(rng: random.Random, status: int, tags: set[str]) -> bytes:
    kind = pick(rng, [(84, "ok"), (3, "http10"), (2, "no-reason"), (2, "no-space"), (1, "lower"), (1, "http2"),
                      (1, "two-digit"), (1, "four-digit"), (1, "bare-lf"), (1, "http12"), (1, "leading-space"),
                      (1, "999"), (1, "tab")])
    if kind != "ok":
        tags.add("sl-" + kind)
    return {
        "ok": b"HTTP/1.1 %d Fuzz" % status, "http10": b"HTTP/1.0 %d Fuzz" % status,
        "no-reason": b"HTTP/1.1 %d " % status, "no-space": b"HTTP/1.1 %d" % status,
        "lower": b"http/1.1 %d Fuzz" % status, "http2": b"HTTP/2 %d Fuzz" % status,
        "two-digit": b"HTTP/1.1 20 Fuzz", "four-digit": b"HTTP/1.1 2000 Fuzz",
        "bare-lf": b"HTTP/1.1 %d Fuzz\n" % status, "http12": b"HTTP/1.2 %d Fuzz" % status,
        "leading-space": b" HTTP/1.1 %d Fuzz" % status, "999": b"HTTP/1.1 999 Fuzz",
        "tab": b"HTTP/1.1\t%d Fuzz" % status,
    }[kind]


def _interim(rng: random.Random, tags: set[str]) -> list[bytes]:
    out = []
    for _ in range(pick(rng, [(70, 1), (25, 2), (5, 3)])):
        status = pick(rng, [(3, 100), (3, 102), (5, 103), (1, 199), (1, 101)])
        tags.add(f"interim-{status}")
        extra = b"Link: </s.css>; rel=preload\r\n" if status == 103 else b""
        out.append(b"HTTP/1.1 %d Interim\r\n" % status + extra + b"\r\n")
    return out


def gen_response_case(rng: random.Random, name: str) -> ResponseCase:
    tags: set[str] = set()
    method = pick(rng, [(70, "GET"), (10, "HEAD"), (20, "POST")])
    http10 = rng.random() < 0.15
    keep10 = http10 and rng.random() < 0.5
    if http10:
        tags.add("client-http10")
    body = body_bytes(rng) if method == "POST" else None
    expect = method == "POST" and rng.random() < 0.15
    if expect:
        tags.add("expect")
    steps: list[tuple[bytes, float]] = []
    end = "keep"
    if rng.random() < 0.3:
        for raw in _interim(rng, tags):
            steps.append((raw, 0.05 if rng.random() < 0.2 else 0.0))
        if rng.random() < 0.12:
            tags.add("close-after-interim")
            return ResponseCase(method, http10, keep10, body, expect, steps, "close", tags)
    status = pick(rng, [(70, 200), (4, 201), (4, 204), (3, 304), (5, 404), (5, 500), (3, 503), (2, 101),
                        (2, 302), (2, 206)])
    if status != 200:
        tags.add(f"status-{status}")
    payload = body_bytes(rng, 0, 60)
    lines = [_status_line(rng, status, tags), b"Content-Type: text/plain"]
    framing = pick(rng, [(45, "cl"), (30, "chunked"), (12, "close"), (2, "cl+te"), (2, "cl-dup-diff"),
                         (2, "cl-short"), (2, "cl-long"), (1, "te-gzip"), (1, "cl-bad"), (2, "te-caps")])
    tags.add("rfr-" + framing)
    chunks = bytearray()
    for i in range(0, len(payload), 16):
        part = payload[i:i + 16]
        size = b"%x" % len(part) + (b";x=y" if rng.random() < 0.1 else b"")
        chunks += size + b"\r\n" + part + b"\r\n"
    chunks += b"0\r\n" + (b"X-Trailer: t\r\n" if rng.random() < 0.1 else b"") + b"\r\n"
    n = len(payload)
    body_part = {"cl": payload, "chunked": bytes(chunks), "close": payload, "cl+te": bytes(chunks),
                 "cl-dup-diff": payload, "cl-short": payload, "cl-long": payload, "te-gzip": bytes(chunks),
                 "cl-bad": payload, "te-caps": bytes(chunks)}[framing]
    lines += {"cl": [b"Content-Length: %d" % n], "chunked": [b"Transfer-Encoding: chunked"], "close": [],
              "cl+te": [b"Content-Length: %d" % n, b"Transfer-Encoding: chunked"],
              "cl-dup-diff": [b"Content-Length: %d" % n, b"Content-Length: %d" % (n + 2)],
              "cl-short": [b"Content-Length: %d" % max(0, n - 2)], "cl-long": [b"Content-Length: %d" % (n + 5)],
              "te-gzip": [b"Transfer-Encoding: gzip, chunked"], "cl-bad": [b"Content-Length: 1x"],
              "te-caps": [b"Transfer-Encoding: CHUNKED"]}[framing]
    if framing in ("close", "cl-long"):
        end = "close"
    for _ in range(rng.randint(0, 2)):
        kind = pick(rng, [(80, "plain"), (4, "obs-fold"), (4, "no-colon"), (3, "space-before-colon"),
                          (3, "nul"), (3, "conn-close"), (3, "keep-alive")])
        if kind != "plain":
            tags.add("rhdr-" + kind)
        lines.append({"plain": b"X-Up: " + body_bytes(rng, 1, 10), "obs-fold": b"X-Up: a\r\n b",
                      "no-colon": b"X-Up", "space-before-colon": b"X-Up : v", "nul": b"X-Up: a\x00b",
                      "conn-close": b"Connection: close", "keep-alive": b"Connection: keep-alive"}[kind])
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    if status in (204, 304) or method == "HEAD":
        body_part = b"" if rng.random() < 0.8 else body_part
    data = head + body_part
    if rng.random() < 0.1:
        tags.add("excess")
        data += pick(rng, [(1, b"JUNK"), (1, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!"), (1, b"\r\n")])
    if rng.random() < 0.08:
        tags.add("resp-truncated")
        data = data[:rng.randrange(1, len(data))]
        end = "close"
    if rng.random() < 0.04:
        # An upstream that stops mid-answer and keeps the socket open: the
        # gateway's timeouts must end the exchange. (Stopping after a whole
        # answer would be a dead keep-alive connection: the next request's
        # 504 is then right, and tells nothing.)
        tags.add("hang")
        end = "hang"
        data = (head + body_part)[:rng.randrange(0, len(head) + len(body_part))]
    if len(data) > 4 and rng.random() < 0.12:
        tags.add("slow")
        cut = rng.randrange(1, len(data))
        steps += [(data[:cut], 0.1), (data[cut:], 0.0)]
    else:
        steps.append((data, 0.0))
    return ResponseCase(method, http10, keep10, body, expect, steps, end, tags)
