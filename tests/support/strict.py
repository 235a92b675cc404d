"""An independent, strict check of an HTTP/1.1 message head's raw bytes.

h11 parses what fastgw emits, but it is lenient in a few places a proxy must
not be (it unfolds obs-fold lines and accepts Content-Length together with
Transfer-Encoding). `head_violations` closes that gap: it looks at the exact
bytes of one head and lists every RFC 9112 rule they break.
"""
from __future__ import annotations

import re

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE_CHARS = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_REQUEST_LINE = re.compile(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(\d)\.(\d)$")
_STATUS_LINE = re.compile(rb"^HTTP/(\d)\.(\d) (\d{3}) ?([\t\x20-\x7e\x80-\xff]*)$")


def head_violations(raw: bytes, kind: str) -> list[str]:
    """Rules broken by `raw` (one whole head, ending in CRLF CRLF).

    kind is "request" (a head fastgw sent upstream) or "response" (a head
    fastgw sent to a client).
    """
    problems: list[str] = []
    if not raw.endswith(b"\r\n\r\n"):
        return ["head does not end with CRLF CRLF"]
    body = raw[:-4]
    # Every line must end in CRLF: no bare LF or bare CR anywhere.
    if re.search(rb"(?<!\r)\n", raw):
        problems.append("bare LF in head")
    if re.search(rb"\r(?!\n)", raw):
        problems.append("bare CR in head")
    lines = body.split(b"\r\n")
    start, fields = lines[0], lines[1:]
    if kind == "request":
        if not _REQUEST_LINE.match(start):
            problems.append(f"malformed request line {start!r}")
    else:
        if not _STATUS_LINE.match(start):
            problems.append(f"malformed status line {start!r}")
    names: list[bytes] = []
    values: dict[bytes, list[bytes]] = {}
    for line in fields:
        if line[:1] in (b" ", b"\t"):
            problems.append(f"obs-fold continuation line {line!r}")
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            problems.append(f"header line without colon {line!r}")
            continue
        if not _TOKEN.match(name):
            problems.append(f"invalid header name {name!r}")
            continue
        value = value.strip(b" \t")
        if _BAD_VALUE_CHARS.search(value):
            problems.append(f"control character in value of {name!r}")
        lname = name.lower()
        names.append(lname)
        values.setdefault(lname, []).append(value)
    cls = values.get(b"content-length", [])
    tes = values.get(b"transfer-encoding", [])
    if len(cls) > 1:
        problems.append(f"{len(cls)} Content-Length fields")
    for v in cls:
        if not v.isdigit():
            problems.append(f"invalid Content-Length {v!r}")
    if cls and tes:
        problems.append("both Content-Length and Transfer-Encoding")
    if tes:
        codings = [c.strip().lower() for v in tes for c in v.split(b",")]
        if kind == "request" and codings != [b"chunked"]:
            problems.append(f"Transfer-Encoding other than chunked: {codings!r}")
        if kind == "response" and b"chunked" in codings[:-1]:
            problems.append(f"chunked is not the last transfer coding: {codings!r}")
    if kind == "request":
        hosts = values.get(b"host", [])
        m = _REQUEST_LINE.match(start)
        if m and (m.group(3), m.group(4)) == (b"1", b"1") and len(hosts) != 1:
            problems.append(f"HTTP/1.1 request with {len(hosts)} Host fields")
    else:
        m = _STATUS_LINE.match(start)
        if m:
            status = int(m.group(3))
            if (status < 200 or status == 204) and (cls or tes):
                problems.append(f"{status} response with framing headers")
    return problems
