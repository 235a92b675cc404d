"""Start the real fastgw as a subprocess on a free port, and stop it.

The command is `python -m fastgw run --config FILE --workers N` with
PYTHONPATH set to the repository root, or, when the FASTGW_BIN environment
variable is set, the installed console script (FASTGW_BIN=1 means the
`fastgw` next to the running interpreter, else on PATH; any other value is
the executable to run).
"""
from __future__ import annotations

import copy
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from .upstream import UpstreamServer

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

# Defaults every test config gets unless it says otherwise: a short drain and
# no drain delay, so teardown never waits long on a connection a test left
# hanging; the admin listener on a free port (gateways run side by side).
DEFAULT_SERVER = {"timeouts": {"drain": "5s", "drain_delay": "0s"}}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: each socket stays bound until all are
    chosen, so two calls of free_port can't hand out the same port twice."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def gateway_command(config_path: Path, workers: int) -> list[str]:
    choice = os.environ.get("FASTGW_BIN", "").strip()
    if not choice:
        base = [sys.executable, "-m", "fastgw"]
    else:
        if choice.lower() in ("1", "true", "yes"):
            # The console script next to this interpreter (a venv's bin/), else PATH.
            beside = Path(sys.executable).parent / "fastgw"
            exe = str(beside) if beside.exists() else shutil.which("fastgw")
        else:
            exe = shutil.which(choice) or choice
        if not exe:
            raise RuntimeError(f"FASTGW_BIN={choice!r}: no fastgw executable found")
        base = [exe]
    # Text on stderr: the tests read the process log there (tests/integration/
    # test_process_log.py covers the JSON default off a terminal).
    return base + ["run", "--config", str(config_path), "--workers", str(workers), "--log-format", "text"]


def cluster(*urls: str, **extra) -> dict:
    """A cluster entry: endpoints from URLs, plus any other keys as given."""
    return {"endpoints": [{"url": u} for u in urls], **extra}


def route(name: str, cluster_name: str, *, host: str | None = None, path: str | None = None,
          prefix: str | None = None, methods: list[str] | None = None, **extra) -> dict:
    match: dict = {}
    if host is not None:
        match["host"] = host
    if path is not None:
        match["path"] = path
    if prefix is not None:
        match["prefix"] = prefix
    if methods is not None:
        match["methods"] = methods
    return {"name": name, "match": match, "cluster": cluster_name, **extra}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _children_of(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return sorted(set(kids))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


class Gateway:
    """One fastgw master process started by a test."""

    _counter = 0

    def __init__(self, workdir: Path, config: dict, *, workers: int = 1, name: str | None = None):
        Gateway._counter += 1
        self.name = name or f"gw{Gateway._counter}"
        self.workdir = Path(workdir)
        self.workers = workers
        self.port, self.admin_port = free_ports(2)   # distinct: the config refuses one port for both
        self.config = _merge({"server": DEFAULT_SERVER,
                              "admin": {"address": f"127.0.0.1:{self.admin_port}"}}, config)
        self.config["listeners"] = [{"name": "test", "address": f"127.0.0.1:{self.port}"}]
        self.config_path = self.workdir / f"{self.name}.yaml"
        self.stdout_path = self.workdir / f"{self.name}.stdout"
        self.stderr_path = self.workdir / f"{self.name}.stderr"
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self._known_children: set[int] = set()

    # ---- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def write_config(self, config: dict) -> None:
        """Replace the config file (for a reload), keeping the listeners and
        harness defaults as start() wrote them."""
        merged = _merge({"server": DEFAULT_SERVER, "admin": self.config["admin"]}, config)
        merged["listeners"] = self.config["listeners"]
        self.config_path.write_text(yaml.safe_dump(merged, sort_keys=False))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Gateway":
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        for override in ("FASTGW_LISTEN", "FASTGW_WORKERS", "FASTGW_ADMIN"):
            env.pop(override, None)
        cmd = gateway_command(self.config_path, self.workers)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=env, cwd=str(self.workdir))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise GatewayStartError(
                    f"fastgw exited with code {self.proc.returncode} before listening on {self.port}\n"
                    f"command: {cmd}\n{self.logs()}"
                )
            if port_accepts(self.port) and self._worker_answers():
                self._known_children.update(self.children())
                return self
            time.sleep(0.05)
        self.stop()
        raise GatewayStartError(f"fastgw did not accept connections on {self.port} within "
                                f"{START_TIMEOUT}s\ncommand: {cmd}\n{self.logs()}")

    def _worker_answers(self) -> bool:
        """The master's socket accepts before any worker serves: with the admin
        API on, wait until a worker answers /livez (its loop is running)."""
        if self.config.get("admin", {}).get("enabled", True) is False:
            return True
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=1)
            conn.request("GET", "/livez")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def children(self) -> list[int]:
        """Live child processes of the master (its workers)."""
        if self.proc is None:
            return []
        kids = [k for k in _children_of(self.proc.pid) if _alive(k)]
        self._known_children.update(kids)
        return kids

    def wait_children(self, count: int, timeout: float = 10.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            kids = self.children()
            if len(kids) >= count or time.monotonic() > deadline:
                return kids
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self) -> int | None:
        """SIGTERM, wait up to 10 s, then SIGKILL; also reap orphaned workers."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.children()
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        # Workers this gateway started must not outlive the test.
        for kid in self._known_children:
            if _alive(kid) and self._is_fastgw(kid):
                try:
                    os.kill(kid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return self.returncode

    @staticmethod
    def _is_fastgw(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"fastgw" in f.read()
        except OSError:
            return False

    # ---- output ------------------------------------------------------------

    def stdout(self) -> str:
        return _tail(self.stdout_path)

    def stderr(self) -> str:
        return _tail(self.stderr_path)

    def logs(self) -> str:
        return (f"--- {self.name} config ({self.config_path}) ---\n"
                f"{self.config_path.read_text() if self.config_path.exists() else ''}"
                f"--- {self.name} stdout ---\n{self.stdout()}\n--- {self.name} stderr ---\n{self.stderr()}")


class GatewayStartError(RuntimeError):
    pass


def _tail(path: Path, limit: int = 20000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    if len(data) > limit:
        data = b"...[truncated]...\n" + data[-limit:]
    return data.decode("utf-8", "replace")


@dataclass
class Proxy:
    gw: Gateway
    up: "UpstreamServer"

    @property
    def port(self) -> int:
        return self.gw.port


def simple_config(upstream_url: str, *, limits: dict | None = None, route_extra: dict | None = None,
                  server: dict | None = None) -> dict:
    """One cluster `main` and one catch-all route to it."""
    config: dict = {
        "clusters": {"main": cluster(upstream_url)},
        "routes": [route("all", "main", prefix="/", **(route_extra or {}))],
    }
    if limits or server:
        config["server"] = dict(server or {})
        if limits:
            config["server"]["limits"] = limits
    return config


