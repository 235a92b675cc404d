"""The command line as an operator types it: the README's first command and
the FASTGW_* variables, run as the installed `fastgw` process with real
traffic through it (tests/config/test_cli.py checks what the CLI hands to
serve() without serving)."""
from __future__ import annotations

import re
import shlex
import signal
from pathlib import Path

import pytest

from support import cluster, free_port, http_request, route
from support.command import Command, clean_env
from support.gateway import REPO_ROOT


def readme_first_command() -> list[str]:
    """The `fastgw run ...` of the README's first shell block, as words."""
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    line = next(part for part in re.split(r"&&|\n", block) if part.strip().startswith("fastgw run"))
    return shlex.split(line)[1:]


def _retarget(args: list[str], listen: str, upstream: str) -> list[str]:
    """The README's command with its example addresses replaced."""
    out = list(args)
    out[out.index("--listen") + 1] = listen
    out[out.index("--upstream") + 1] = upstream
    return out


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


@pytest.mark.timeout(60)
def test_the_readmes_first_command_proxies_traffic(upstream, commands):
    args = readme_first_command()
    assert args[:1] == ["run"] and "--upstream" in args and "--listen" in args, args
    port = free_port()
    gw = commands(_retarget(args, f"127.0.0.1:{port}", upstream.url)).start(port)
    for i in range(5):
        resp = http_request(port, "GET", f"/any/path/{i}?q=1")
        assert resp.status == 200, resp.describe()
        assert resp.json()["target"] == f"/any/path/{i}?q=1"
    assert [r.target for r in upstream.requests] == [f"/any/path/{i}?q=1" for i in range(5)]
    assert gw.stop() == 0


@pytest.mark.timeout(60)
def test_fastgw_listen_and_workers_with_upstream(upstream, commands):
    port = free_port()
    env = clean_env(FASTGW_LISTEN=f"127.0.0.1:{port}", FASTGW_WORKERS="2")
    gw = commands(["run", "--upstream", upstream.url], env).start(port)
    assert len(gw.wait_children(2)) == 2
    for i in range(10):
        assert http_request(port, "GET", f"/env/{i}").status == 200
    assert len(upstream.requests) == 10
    assert gw.stop() == 0


@pytest.mark.timeout(60)
def test_flags_beat_the_variables(upstream, commands):
    port, ignored = free_port(), free_port()
    env = clean_env(FASTGW_LISTEN=f"127.0.0.1:{ignored}", FASTGW_WORKERS="3")
    gw = commands(["run", "--upstream", upstream.url, "--listen", f"127.0.0.1:{port}", "--workers", "1"],
                  env).start(port)
    assert http_request(port, "GET", "/flag").status == 200
    assert len(gw.children()) == 1
    assert not _accepts(ignored)
    assert gw.stop() == 0


@pytest.mark.timeout(60)
def test_fastgw_admin_serves_the_admin_api_for_the_one_line_command(upstream, commands):
    port, admin = free_port(), free_port()
    env = clean_env(FASTGW_ADMIN=f"127.0.0.1:{admin}")
    gw = commands(["run", "--upstream", upstream.url, "--listen", f"127.0.0.1:{port}"], env).start(
        port, admin_port=admin)
    assert http_request(port, "GET", "/seen").status == 200
    assert http_request(admin, "GET", "/livez").status == 200
    assert http_request(admin, "GET", "/readyz").status == 200
    metrics = http_request(admin, "GET", "/metrics")
    assert metrics.status == 200
    assert re.search(rb'fastgw_requests_total\{route="default",method="GET",status="2xx"\} 1\b', metrics.body)
    routes = http_request(admin, "GET", "/routes").json()
    assert [r["name"] for r in routes["routes"]] == ["default"]
    # Nothing to reload from: a defined error, not a crash.
    reload = http_request(admin, "POST", "/reload")
    assert reload.status == 400 and reload.json()["error"]["code"] == "reload_unavailable", reload.describe()
    assert http_request(port, "GET", "/still").status == 200
    assert gw.stop() == 0


@pytest.mark.timeout(60)
def test_no_admin_listener_without_fastgw_admin(upstream, commands):
    port = free_port()
    gw = commands(["run", "--upstream", upstream.url, "--listen", f"127.0.0.1:{port}"]).start(port)
    assert http_request(port, "GET", "/x").status == 200
    # The listener is the only socket the process tree listens on: no admin.
    assert set(_listening_of(gw)) == {f":{port}"}
    assert gw.stop() == 0


def test_fastgw_admin_beyond_loopback_without_a_token_is_refused(upstream, commands):
    env = clean_env(FASTGW_ADMIN="0.0.0.0:9999")
    gw = commands(["run", "--upstream", upstream.url, "--listen", f"127.0.0.1:{free_port()}"], env)
    with pytest.raises(AssertionError, match="exited with 1"):
        gw.start(free_port())
    assert "env FASTGW_ADMIN: 0.0.0.0:9999 is reachable beyond this host and no token is set" in gw.stderr()


@pytest.mark.timeout(60)
def test_fastgw_variables_override_a_config_file(upstream, commands, tmp_path):
    import yaml
    file_port, port, admin = free_port(), free_port(), free_port()
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({
        "listeners": [{"address": f"127.0.0.1:{file_port}"}],
        "server": {"workers": 1, "timeouts": {"drain": "2s", "drain_delay": "0s"}},
        "admin": {"address": f"127.0.0.1:{free_port()}"},
        "clusters": {"main": cluster(upstream.url)},
        "routes": [route("all", "main", prefix="/")],
    }))
    env = clean_env(FASTGW_LISTEN=f"127.0.0.1:{port}", FASTGW_WORKERS="2", FASTGW_ADMIN=f"127.0.0.1:{admin}")
    gw = commands(["run", "--config", str(path)], env).start(port, admin_port=admin)
    assert len(gw.wait_children(2)) == 2
    assert http_request(port, "GET", "/from-env").status == 200
    assert http_request(admin, "GET", "/livez").status == 200
    assert not _accepts(file_port)
    assert gw.stop(signal.SIGINT) == 0


def _accepts(port: int) -> bool:
    from support import port_accepts
    return port_accepts(port)


def _listening_of(cmd: Command) -> list[str]:
    """host:port of the TCP sockets the process tree listens on (/proc/net/tcp)."""
    inodes = set()
    for pid in [cmd.proc.pid, *cmd.children()]:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = fd.readlink()
            except OSError:
                continue
            if str(target).startswith("socket:["):
                inodes.add(str(target)[8:-1])
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:   # LISTEN
            found.append(f":{int(fields[1].split(':')[1], 16)}")
    return found
