"""Run the installed `fastgw` console script with any arguments and
environment, as an operator would type it, and stop it again.

`Gateway` (gateway.py) always writes a config file; the one-line
`fastgw run --upstream URL`, the FASTGW_* variables and the log flags need
the command line itself. The executable is the `fastgw` next to the running
interpreter (the venv's bin/, what `pip install` put there), else the one on
PATH, else `python -m fastgw`.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .gateway import REPO_ROOT, _alive, _children_of, port_accepts

START_TIMEOUT = 15.0


def fastgw_executable() -> list[str]:
    beside = Path(sys.executable).parent / "fastgw"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("fastgw")
    return [found] if found else [sys.executable, "-m", "fastgw"]


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without FASTGW_* (a developer's shell may
    set them), plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTGW_")}
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(overrides)
    return env


class Command:
    """One `fastgw ...` process; stdout and stderr go to files in `workdir`."""

    _counter = 0

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str] | None = None):
        Command._counter += 1
        self.name = f"cmd{Command._counter}"
        self.args = fastgw_executable() + list(args)
        self.env = clean_env() if env is None else env
        self.stdout_path = Path(workdir) / f"{self.name}.stdout"
        self.stderr_path = Path(workdir) / f"{self.name}.stderr"
        self.proc: subprocess.Popen | None = None
        self.workers: set[int] = set()

    def start(self, port: int, *, admin_port: int | None = None) -> "Command":
        """Start it and wait until `port` accepts (and `admin_port`, if given)."""
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=str(self.stdout_path.parent))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args} exited with {self.proc.returncode}\n{self.logs()}")
            if port_accepts(port) and (admin_port is None or port_accepts(admin_port)):
                self.children()
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"{self.args}: port {port} not accepting after {START_TIMEOUT}s\n{self.logs()}")

    def children(self) -> list[int]:
        kids = [k for k in _children_of(self.proc.pid) if _alive(k)] if self.proc else []
        self.workers.update(kids)
        return kids

    def wait_children(self, count: int, timeout: float = 10.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(kids := self.children()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return kids

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.children()
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for kid in self.workers:       # never leave a worker behind
            if _alive(kid):
                try:
                    os.kill(kid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return self.proc.returncode

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def logs(self) -> str:
        return f"--- stdout ---\n{self.stdout()}\n--- stderr ---\n{self.stderr()}"
