"""fastgw/observe/memtrace.py: opt-in tracemalloc snapshots of a worker.

In this process (install() on a loop) and through the real binary (a worker
started with FASTGW_TRACEMALLOC set writes snapshots; without it, none).
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
import tracemalloc

import pytest
import uvloop

from fastgw.observe import memtrace
from support import simple_config


@pytest.fixture
def loop():
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()
    if tracemalloc.is_tracing():
        tracemalloc.stop()


def snapshots(prefix) -> list[str]:
    parent, stem = os.path.split(str(prefix))
    return sorted(name for name in os.listdir(parent) if name.startswith(os.path.basename(stem) + "."))


def test_unset_does_nothing(loop, tmp_path):
    assert memtrace.install(loop, environ={}) is None
    assert memtrace.install(loop, environ={"FASTGW_TRACEMALLOC": ""}) is None
    assert not tracemalloc.is_tracing()
    assert os.listdir(tmp_path) == []


def test_snapshot_at_start_on_sigusr1_and_at_close(loop, tmp_path):
    prefix = tmp_path / "gw"
    trace = memtrace.install(loop, environ={"FASTGW_TRACEMALLOC": str(prefix),
                                            "FASTGW_TRACEMALLOC_INTERVAL": "0",
                                            "FASTGW_TRACEMALLOC_FRAMES": "3"})
    assert trace is not None and tracemalloc.is_tracing()
    assert tracemalloc.get_traceback_limit() == 3
    pid = os.getpid()
    assert snapshots(prefix) == [f"gw.{pid}.0"]

    async def signal_me():
        os.kill(pid, signal.SIGUSR1)
        for _ in range(100):
            if len(snapshots(prefix)) == 2:
                return
            await asyncio.sleep(0.01)

    loop.run_until_complete(signal_me())
    assert snapshots(prefix) == [f"gw.{pid}.0", f"gw.{pid}.1"]
    trace.close()
    assert snapshots(prefix) == [f"gw.{pid}.0", f"gw.{pid}.1", f"gw.{pid}.2"]
    snap = tracemalloc.Snapshot.load(str(tmp_path / f"gw.{pid}.2"))
    assert snap.traceback_limit == 3


def test_snapshot_every_interval(loop, tmp_path):
    prefix = tmp_path / "gw"
    trace = memtrace.install(loop, environ={"FASTGW_TRACEMALLOC": str(prefix),
                                            "FASTGW_TRACEMALLOC_INTERVAL": "0.1"})
    loop.run_until_complete(asyncio.sleep(0.35))
    trace.close()
    assert 4 <= len(snapshots(prefix)) <= 6  # 0, ~3 by the timer, the last at close


def test_unwritable_prefix_logs_and_goes_on(loop, tmp_path, caplog):
    trace = memtrace.install(loop, environ={"FASTGW_TRACEMALLOC": str(tmp_path / "missing" / "gw"),
                                            "FASTGW_TRACEMALLOC_INTERVAL": "0"})
    assert trace is not None and trace.count == 0
    assert "tracemalloc snapshot" in caplog.text


# -- through the real binary ------------------------------------------------------

def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_worker_writes_snapshots_when_enabled(upstream, gateway_factory, tmp_path, monkeypatch):
    prefix = tmp_path / "snap" / "gw"
    prefix.parent.mkdir()
    monkeypatch.setenv("FASTGW_TRACEMALLOC", str(prefix))
    monkeypatch.setenv("FASTGW_TRACEMALLOC_INTERVAL", "0")
    gw = gateway_factory(simple_config(upstream.url))
    [worker] = gw.wait_children(1)
    assert wait_for(lambda: snapshots(prefix) == [f"gw.{worker}.0"])
    os.kill(worker, signal.SIGUSR1)
    assert wait_for(lambda: f"gw.{worker}.1" in snapshots(prefix))
    assert gw.children() == [worker]  # SIGUSR1 neither killed nor retired it
    gw.stop()
    assert f"gw.{worker}.2" in snapshots(prefix)  # the last one, at exit


def test_worker_writes_nothing_when_unset(upstream, gateway_factory, tmp_path, monkeypatch):
    monkeypatch.delenv("FASTGW_TRACEMALLOC", raising=False)
    gw = gateway_factory(simple_config(upstream.url))
    [worker] = gw.wait_children(1)
    os.kill(worker, signal.SIGUSR1)  # ignored, as before
    time.sleep(0.3)
    assert gw.children() == [worker]
    gw.stop()
    assert not [p for p in tmp_path.rglob("*") if f".{worker}." in p.name]
