"""Shared fixtures: upstream servers and the real fastgw process.

`upstream_factory(name)` starts an h11 upstream in its own thread;
`gateway_factory(config, workers=1)` starts `fastgw run` on a free port with
that config (YAML schema of examples/gateway.yaml, listeners filled in).
`proxy` is the common case: one upstream behind a catch-all route.

When a test fails, the gateway's config, stdout and stderr are attached to
the report. Upstreams fail the test at teardown if fastgw sent them anything
h11 or the strict head check rejects.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import (Gateway, GatewayStartError, Proxy, UpstreamServer,  # noqa: E402
                     WebSocketEchoServer, simple_config)

_GATEWAYS = pytest.StashKey[list]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for gw in item.stash.get(_GATEWAYS, []):
            report.sections.append((f"fastgw {gw.name} output", gw.logs()))


@pytest.fixture
def upstream_factory():
    started: list[UpstreamServer] = []

    def make(name: str = "upstream") -> UpstreamServer:
        server = UpstreamServer(name).start()
        started.append(server)
        return server

    yield make
    problems: list[str] = []
    for server in started:
        server.stop()
        problems += server.violations
    if problems:
        pytest.fail("fastgw sent upstream requests an independent parser rejects:\n" + "\n".join(problems))


@pytest.fixture
def upstream(upstream_factory) -> UpstreamServer:
    return upstream_factory("upstream")


@pytest.fixture
def ws_upstream():
    server = WebSocketEchoServer().start()
    yield server
    server.stop()


@pytest.fixture
def gateway_factory(request, tmp_path):
    started: list[Gateway] = []
    request.node.stash[_GATEWAYS] = started

    def make(config: dict, *, workers: int = 1) -> Gateway:
        gw = Gateway(tmp_path, config, workers=workers)
        started.append(gw)
        try:
            return gw.start()
        except GatewayStartError as exc:
            failure = str(exc)
        pytest.fail(failure, pytrace=False)

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def redis_factory(tmp_path):
    """redis_factory() -> a started RedisServer on a free port (killed at teardown)."""
    from support.redis_server import RedisServer
    started: list[RedisServer] = []

    def make(**kwargs) -> RedisServer:
        server = RedisServer(tmp_path, **kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        if server.proc is not None:
            server.resume()   # SIGCONT first: a stopped process still dies of SIGKILL, but be tidy
        server.stop()


@pytest.fixture
def redis_server(redis_factory):
    return redis_factory()


@pytest.fixture
def proxy(upstream, gateway_factory) -> Proxy:
    return Proxy(gateway_factory(simple_config(upstream.url)), upstream)
