"""systemd's readiness protocol (sd_notify), without libsystemd.

With `Type=notify` (packaging/systemd/fastgw.service) systemd sets
NOTIFY_SOCKET and waits for READY=1 before it calls the service started:
the master sends it once every worker of the first generation accepts, so
units ordered After=fastgw.service start against a serving gateway. A
reload (SIGHUP, `systemctl reload`) is bracketed by RELOADING=1 and READY=1
(what `Type=notify-reload` units expect), a drain announces STOPPING=1.
Without NOTIFY_SOCKET (not under systemd) every call does nothing.
"""
from __future__ import annotations

import os
import socket
import time


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to $NOTIFY_SOCKET; False when unset or
    unreachable (never raises: readiness reporting must not stop the gateway)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):            # an abstract socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall(state.encode())
        return True
    except OSError:
        return False


def reloading() -> bool:
    return notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
