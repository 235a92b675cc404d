"""The access log's pipe path (stdout under a supervisor is a pipe): lines
are written in pieces of whole lines of at most PIPE_BUF bytes, so a reader
of a pipe shared by several writers never sees a torn line."""
from __future__ import annotations

import asyncio
import json
import os
import threading
import types

from fastgw.config.model import AccessLog as Settings
from fastgw.observe.access_log import AccessLog


def _exchange(i: int):
    info = types.SimpleNamespace(sent_traceparent=None, traceparent=None)
    return types.SimpleNamespace(
        info=info, plan=None, upstream_ns=0, request_id=b"r-%08d" % i,
        client=types.SimpleNamespace(peer_ip=b"127.0.0.1"), method=b"GET", target=b"/p?x=" + b"y" * 700,
        status=404, body_bytes=0, bytes_out=0, duration_ns=1000, endpoint=None, retries=0, rate_limit=0,
        request_headers=[], log_fields=None)


def test_pipe_writes_are_whole_lines_within_pipe_buf(tmp_path, monkeypatch):
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    chunks: list[bytes] = []

    def read():
        with open(fifo, "rb", buffering=0) as f:
            while True:
                data = f.read(65536)
                if not data:
                    return
                chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    writes: list[int] = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(len(data)) or real_write(fd, data))
    loop = asyncio.new_event_loop()
    log = AccessLog(Settings(enabled=True, path=str(fifo)), loop)
    assert log.pipe
    for i in range(60):
        log.log(_exchange(i))
    log.close()
    reader.join(10)
    loop.close()
    lines = b"".join(chunks).split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]
    assert [p["request_id"] for p in parsed] == ["r-%08d" % i for i in range(60)]
    assert len(writes) > 1 and max(writes) <= 4096, writes
