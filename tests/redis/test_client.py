"""fastgw.redis.RedisClient against a real redis-server: pipelining,
NOSCRIPT reload, per-command timeout, answering at once while down, and
reconnecting in the background."""
from __future__ import annotations

import asyncio
import time

import hiredis
import pytest
import uvloop

from fastgw.redis import RedisClient, RedisUnavailable


def run(coro):
    return uvloop.run(coro)


async def connected_client(port: int, **kwargs) -> RedisClient:
    client = RedisClient(asyncio.get_running_loop(), port=port, **kwargs)
    client.start()
    deadline = time.monotonic() + 5
    while not client.connected:
        assert time.monotonic() < deadline, "client did not connect"
        await asyncio.sleep(0.005)
    return client


def commandstat_calls(server, name: str) -> int:
    info = server.command("INFO", "commandstats").decode()
    for line in info.splitlines():
        if line.startswith(f"cmdstat_{name}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_concurrent_commands_share_writes_and_replies_keep_their_order(redis_server):
    async def main():
        client = await connected_client(redis_server.port)
        writes = client.writes
        replies = await asyncio.gather(*(client.execute("INCR", "counter") for _ in range(1000)))
        concurrent_writes = client.writes - writes
        # One after the other: one write each (the same code path can fail to batch).
        writes = client.writes
        for _ in range(20):
            await client.execute("INCR", "counter")
        sequential_writes = client.writes - writes
        client.close()
        return replies, concurrent_writes, sequential_writes

    replies, concurrent_writes, sequential_writes = run(main())
    assert replies == list(range(1, 1001))        # each caller got its own reply
    assert concurrent_writes <= 2, concurrent_writes  # issued in one loop iteration: one write
    assert sequential_writes == 20
    assert redis_server.command("GET", "counter") == b"1020"


def test_error_replies_are_values_for_callbacks_and_raised_by_execute(redis_server):
    async def main():
        client = await connected_client(redis_server.port)
        await client.execute("SET", "s", "text")
        with pytest.raises(hiredis.ReplyError, match="not an integer"):
            await client.execute("INCR", "s")
        ok = await client.execute("PING")   # the connection is still fine
        client.close()
        return ok

    assert run(main()) == b"PONG"


def test_noscript_loads_the_script_once_and_resends(redis_server):
    source = "return {KEYS[1], ARGV[1]}"

    async def main():
        client = await connected_client(redis_server.port)
        script = client.register(source)
        first = await client.evalsha(script, [b"k"], [b"v"])
        loads_before = commandstat_calls(redis_server, "script|load")
        redis_server.command("SCRIPT", "FLUSH")
        assert redis_server.command("SCRIPT", "EXISTS", script.sha) == [0]
        replies = await asyncio.gather(*(client.evalsha(script, [b"k%d" % i], [b"v"]) for i in range(100)))
        loads = commandstat_calls(redis_server, "script|load") - loads_before
        client.close()
        return first, replies, loads

    first, replies, loads = run(main())
    assert first == [b"k", b"v"]
    assert replies == [[b"k%d" % i, b"v"] for i in range(100)]
    assert loads == 1   # 100 NOSCRIPT answers, one SCRIPT LOAD


def test_a_slow_redis_times_out_fast_and_recovers(redis_server):
    async def main():
        client = await connected_client(redis_server.port, timeout=0.05)
        blocker = redis_server.send_only("DEBUG", "SLEEP", "0.6")
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match="no reply within 50 ms"):
            await client.execute("PING")
        waited = time.monotonic() - started
        # Stalled: further commands are refused at once, not queued behind the sleep.
        assert not client.send(b"*1\r\n$4\r\nPING\r\n", lambda *_: None, None)
        deadline = time.monotonic() + 3
        while not client.available:
            assert time.monotonic() < deadline, "client stayed stalled after Redis answered again"
            await asyncio.sleep(0.01)
        after = await client.execute("PING")
        blocker.close()
        client.close()
        return waited, after, client.timeouts

    waited, after, timeouts = run(main())
    assert waited < 0.3, waited
    assert after == b"PONG"
    assert timeouts == 1


def test_down_answers_at_once_and_reconnects_when_redis_returns(redis_server):
    async def main():
        client = await connected_client(redis_server.port)
        assert await client.execute("PING") == b"PONG"
        redis_server.stop()
        await asyncio.sleep(0.1)           # the client notices the closed connection
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await client.execute("PING")
        refused_in = time.monotonic() - started
        redis_server.start()               # same port, empty
        deadline = time.monotonic() + 5
        while True:
            try:
                reply = await client.execute("PING")
                break
            except RedisUnavailable:
                assert time.monotonic() < deadline, "no reconnect within 5 s"
                await asyncio.sleep(0.05)
        client.close()
        return refused_in, reply, client.reconnects

    refused_in, reply, reconnects = run(main())
    assert refused_in < 0.01, refused_in
    assert reply == b"PONG"
    assert reconnects == 1


def test_no_server_at_start_fails_within_the_timeout(tmp_path):
    from support import free_port

    async def main():
        client = RedisClient(asyncio.get_running_loop(), port=free_port(), timeout=0.05)
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await client.execute("PING")
        first = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await client.execute("PING")
        second = time.monotonic() - started
        client.close()
        return first, second

    first, second = run(main())
    assert first < 0.3 and second < 0.01, (first, second)


def test_password_and_database_from_the_handshake(redis_factory):
    server = redis_factory(extra_args=("--requirepass", "s3cret"))

    async def main():
        client = await connected_client(server.port, password="s3cret", db=3)
        await client.execute("SET", "where", "db3")
        client.close()
        bad = RedisClient(asyncio.get_running_loop(), port=server.port, password="wrong", timeout=0.05)
        with pytest.raises(RedisUnavailable):
            await bad.execute("PING")
        error = bad.last_error
        bad.close()
        return error

    error = run(main())
    assert "AUTH failed" in error and "wrong" not in error
    assert server.command("AUTH", "s3cret") == b"OK"
    # The SET went to database 3, and only there (read back by redis-py, an
    # independent client).
    import redis
    for db, expected in ((3, b"db3"), (0, None)):
        with redis.Redis(port=server.port, password="s3cret", db=db) as other:
            assert other.get("where") == expected, db


def test_unix_socket(redis_factory, tmp_path):
    path = str(tmp_path / "redis.sock")
    redis_factory(extra_args=("--unixsocket", path, "--unixsocketperm", "700"))

    async def main():
        client = RedisClient(asyncio.get_running_loop(), unix_path=path)
        client.start()
        deadline = time.monotonic() + 5
        while not client.connected:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        reply = await client.execute("ECHO", "over unix")
        client.close()
        return reply, client.address

    assert run(main()) == (b"over unix", f"unix:{path}")
