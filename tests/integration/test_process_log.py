"""The process log as an operator's collector reads it: `fastgw run` with
its stdout not a terminal writes JSON lines there by default; --log-format
text and --log-level; FASTGW_LOG_FORMAT / FASTGW_LOG_LEVEL. The binary runs
for real and its lines are parsed."""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time

import pytest

from support import cluster, free_port, http_request, route
from support.command import Command, clean_env, fastgw_executable


@pytest.fixture
def commands(tmp_path):
    started: list[Command] = []

    def make(args, env=None) -> Command:
        cmd = Command(tmp_path, args, env)
        started.append(cmd)
        return cmd

    yield make
    for cmd in started:
        cmd.stop()


def json_lines(text: str) -> list[dict]:
    """Every line parsed: a line that is not one JSON object fails the test."""
    out = []
    for line in text.splitlines():
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        out.append(entry)
    return out


def _dead_cluster_config(tmp_path, port: int, dead: int, **access_log) -> str:
    import yaml
    path = tmp_path / "gw.yaml"
    config = {
        "listeners": [{"address": f"127.0.0.1:{port}"}],
        "server": {"workers": 2, "timeouts": {"drain": "2s", "drain_delay": "0s"}},
        "admin": {"enabled": False},
        "clusters": {"dead": cluster(f"http://127.0.0.1:{dead}",
                                     circuit_breaker={"failures": 1, "open_for": "30s"})},
        "routes": [route("all", "dead", prefix="/", retries="off")],
    }
    if access_log:
        config["access_log"] = access_log
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.timeout(60)
def test_json_lines_on_stdout_by_default_off_a_terminal(commands, tmp_path):
    port = free_port()
    gw = commands(["run", "--config", _dead_cluster_config(tmp_path, port, free_port())]).start(port)
    assert len(gw.wait_children(2)) == 2
    # A warning from a worker: the circuit opens on the first refused connect.
    assert http_request(port, "GET", "/x").status == 502
    deadline = time.monotonic() + 10
    while "opened" not in gw.stdout() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.stop() == 0
    entries = json_lines(gw.stdout())
    assert gw.stderr() == ""                    # nothing left on stderr
    for entry in entries:
        assert set(entry) == {"time", "level", "log", "logger", "pid", "message"}, entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]), entry
        assert entry["log"] == "process" and entry["logger"].startswith("fastgw")
    messages = [(e["level"], e["pid"], e["message"]) for e in entries]
    master = gw.proc.pid
    assert any(pid == master and m.startswith("fastgw ") and "listening on" in m for _, pid, m in messages)
    started = [m for _, pid, m in messages if pid == master and re.match(r"worker \d started", m)]
    assert len(started) == 2, messages
    opened = [(level, pid) for level, pid, m in messages if "circuit breaker: cluster 'dead' opened" in m]
    assert len(opened) == 1 and opened[0][0] == "warning" and opened[0][1] != master, messages
    assert messages[-1][2] == "stopped"


@pytest.mark.timeout(60)
def test_text_format_and_level_flags(commands, tmp_path):
    port = free_port()
    config = _dead_cluster_config(tmp_path, port, free_port())
    gw = commands(["run", "--config", config, "--log-format", "text", "--log-level", "warning"]).start(port)
    assert http_request(port, "GET", "/x").status == 502
    deadline = time.monotonic() + 10
    while "opened" not in gw.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.stop() == 0
    assert gw.stdout() == ""
    lines = gw.stderr().splitlines()
    assert lines and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} fastgw\[\d+\] (WARNING|ERROR) ", line)
                         for line in lines), lines
    assert any("circuit breaker: cluster 'dead' opened" in line for line in lines)
    assert not any("listening on" in line for line in lines)      # INFO is below the level


@pytest.mark.timeout(60)
def test_environment_variables_and_flags_win(commands, tmp_path):
    port = free_port()
    config = _dead_cluster_config(tmp_path, port, free_port())
    env = clean_env(FASTGW_LOG_FORMAT="text", FASTGW_LOG_LEVEL="error")
    gw = commands(["run", "--config", config, "--log-level", "info"], env).start(port)
    assert gw.stop() == 0
    assert gw.stdout() == "" and "listening on" in gw.stderr()    # text from env, info from the flag


def test_a_bad_variable_is_a_usage_error(commands, tmp_path):
    result = subprocess.run(fastgw_executable() + ["run", "--upstream", "http://127.0.0.1:1"], capture_output=True,
                            text=True, timeout=60, env=clean_env(FASTGW_LOG_FORMAT="yaml"))
    assert result.returncode == 2
    assert "env FASTGW_LOG_FORMAT: 'yaml' is not one of text, json" in result.stderr


@pytest.mark.timeout(60)
def test_json_lines_and_the_access_log_share_stdout(commands, tmp_path, upstream):
    """Both on stdout: every line is whole JSON, told apart by "log"."""
    import yaml
    port = free_port()
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({
        "listeners": [{"address": f"127.0.0.1:{port}"}],
        "server": {"workers": 2, "timeouts": {"drain": "2s", "drain_delay": "0s"}},
        "admin": {"enabled": False},
        "clusters": {"main": cluster(upstream.url)},
        "routes": [route("all", "main", prefix="/")],
        "access_log": {"path": "stdout", "flush_interval": "100ms"},
    }))
    gw = commands(["run", "--config", str(path)]).start(port)
    for i in range(50):
        assert http_request(port, "GET", f"/echo/{i}").status == 200
    assert gw.stop() == 0
    entries = json_lines(gw.stdout())
    access = [e for e in entries if e.get("log") != "process"]
    process = [e for e in entries if e.get("log") == "process"]
    assert sorted(e["path"] for e in access) == sorted(f"/echo/{i}" for i in range(50))
    assert any("listening on" in e["message"] for e in process)


@pytest.mark.timeout(60)
def test_text_by_default_on_a_terminal(tmp_path, upstream):
    """stdout a terminal (a pty): text on stderr, as before."""
    port = free_port()
    controller, terminal = pty.openpty()
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(fastgw_executable() + ["run", "--upstream", upstream.url, "--listen",
                                                       f"127.0.0.1:{port}", "--workers", "1"],
                                stdout=terminal, stderr=err, stdin=subprocess.DEVNULL, env=clean_env())
    os.close(terminal)
    try:
        deadline = time.monotonic() + 15
        while "listening on" not in err_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, err_path.read_text()
            time.sleep(0.05)
        assert re.search(r"fastgw\[\d+\] INFO fastgw \S+ listening on", err_path.read_text())
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(controller)
