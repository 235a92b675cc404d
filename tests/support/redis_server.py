"""A real redis-server for the tests, on a free port, without persistence.

`RedisServer().start()` runs `redis-server --port PORT --save "" --appendonly no`
(the binary from $REDIS_SERVER, else PATH, else /usr/sbin and /usr/bin) and
waits until it answers PING. `stop()` kills it by its PID (SIGKILL: an
outage, not a shutdown); `start()` again brings it back on the same port,
empty. `command(...)` talks to it with a plain blocking socket, so tests do
not depend on the client under test to inspect Redis.

`RedisServer(tmp, tls=certs)` (tests/support/certs.py) listens on TLS only
(`--port 0 --tls-port PORT`, `--tls-auth-clients` from `tls_auth_clients`);
`command` then talks TLS too, trusting the test CA and presenting the
client certificate. `admin_password` is how `command` authenticates
(e.g. with `--requirepass`), as the default user.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import hiredis

from .gateway import free_port

START_TIMEOUT = 10.0


def redis_server_binary() -> str | None:
    for candidate in (os.environ.get("REDIS_SERVER"), shutil.which("redis-server"),
                      "/usr/sbin/redis-server", "/usr/bin/redis-server"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _major_version(binary: str) -> int:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    for word in out.split():
        if word.startswith("v="):
            return int(word[2:].split(".")[0])
    return 0


def _encode(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None, extra_args: tuple[str, ...] = (), tls=None,
                 tls_auth_clients: str = "no", admin_password: str | None = None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.extra_args = extra_args
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.admin_password = admin_password
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "RedisServer":
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server not found (scripts/test.sh installs it with apt-get)")
        if self.tls is not None:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.server_cert),
                      "--tls-key-file", str(self.tls.server_key), "--tls-ca-cert-file", str(self.tls.ca),
                      "--tls-auth-clients", self.tls_auth_clients]
        else:
            listen = ["--port", str(self.port)]
        cmd = [binary, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.workdir), *self.extra_args]
        if _major_version(binary) >= 7:   # DEBUG (SLEEP) is off by default since 7; older ones refuse the option
            cmd += ["--enable-debug-command", "local"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.command("PING") == b"PONG":
                    return self
            except OSError:
                pass
            except hiredis.ReplyError as error:
                if str(error).startswith("NOAUTH"):   # up, with --requirepass
                    return self
                raise
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on {self.port} within {START_TIMEOUT}s\n{self.log()}")

    def stop(self) -> None:
        """SIGKILL by PID: the gateway sees the connection drop, as in a crash."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the connection stays open but nothing answers (a hung server)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.tls is None:
            return sock
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return context.wrap_socket(sock, server_hostname="127.0.0.1")

    def command(self, *args, timeout: float = 5.0, password: str | None = None):
        """One command over a fresh blocking connection (after AUTH with
        `password`, else `admin_password`, for a server started with
        --requirepass); error replies are raised."""
        password = password if password is not None else self.admin_password
        with self._connect(timeout) as sock:
            if password is not None:
                sock.sendall(_encode("AUTH", password) + _encode(*args))
            else:
                sock.sendall(_encode(*args))
            reader = hiredis.Reader()
            authenticated = password is None
            while True:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("redis closed the connection")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    if isinstance(reply, hiredis.ReplyError):
                        raise reply
                    if authenticated:
                        return reply
                    authenticated = True   # that was AUTH's OK: the command's reply comes next

    def send_only(self, *args) -> socket.socket:
        """Send a command without waiting (e.g. DEBUG SLEEP); close the socket later."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(_encode(*args))
        return sock

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""
