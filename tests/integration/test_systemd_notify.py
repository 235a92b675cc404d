"""systemd readiness (Type=notify) through the real gateway: the master
sends READY=1 once its workers accept, RELOADING=1 / READY=1 around a
SIGHUP reload, STOPPING=1 when it drains (fastgw/server/notify.py), to the
datagram socket named by NOTIFY_SOCKET, as systemd would read it."""
from __future__ import annotations

import signal
import socket

import pytest

from support import http_request, simple_config


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _next(sock) -> str:
    return sock.recv(4096).decode()


@pytest.mark.timeout(60)
def test_ready_reloading_and_stopping_are_announced(upstream, gateway_factory, notify_socket):
    gw = gateway_factory(simple_config(upstream.url), workers=2)
    assert _next(notify_socket) == "READY=1"
    # Ready means serving: the workers answer (the harness saw one; both are on the board).
    assert http_request(gw.port, "GET", "/echo/ready").status == 200

    gw.signal(signal.SIGHUP)
    reloading = _next(notify_socket).split("\n")
    assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
    assert int(reloading[1].partition("=")[2]) > 0
    assert _next(notify_socket) == "READY=1"
    assert "reload done: generation 2" in gw.stderr()

    # A failed reload still ends in READY=1: the old generation serves.
    gw.config_path.write_text("clusters: {}\n")
    gw.signal(signal.SIGHUP)
    assert _next(notify_socket).startswith("RELOADING=1")
    assert _next(notify_socket) == "READY=1"
    assert http_request(gw.port, "GET", "/echo/still").status == 200

    gw.signal(signal.SIGTERM)
    assert _next(notify_socket) == "STOPPING=1"
    assert gw.wait(15) == 0


@pytest.mark.timeout(30)
def test_no_notify_socket_changes_nothing(upstream, gateway_factory, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    gw = gateway_factory(simple_config(upstream.url))
    assert http_request(gw.port, "GET", "/echo/x").status == 200
    assert gw.stop() == 0
