"""RedisPipe (workers/ledger/redis_pipe.py) on a real Redis: pipelined calls from many trio tasks,
AUTH, SELECT and TLS from the URL, and what each failure does to the calls waiting on it."""
from __future__ import annotations

import hiredis
import pytest
import redis
import trio

from finops.workers.ledger.redis_pipe import PipeError, RedisPipe, parse_url
from tests.helpers.beside import beside
from tests.helpers.gateway import free_port
from tests.helpers.redis_server import RedisServer


def cmd(*parts) -> bytes:
    return hiredis.pack_command(tuple(parts))


async def with_pipe(url, fn, **kw):
    """fn(pipe) with the pipe's reader running; its result, or its exception (not in a group)."""
    pipe = RedisPipe(url, **kw)
    return await beside(pipe.run, lambda: fn(pipe))


def test_parse_url():
    assert parse_url("redis://127.0.0.1:7000/3") == {"host": "127.0.0.1", "port": 7000, "db": 3, "username": None,
                                                      "password": None, "tls": False}
    assert parse_url("rediss://al%40ice:p%3Aw@redis.internal") == {
        "host": "redis.internal", "port": 6379, "db": 0, "username": "al@ice", "password": "p:w", "tls": True}
    assert parse_url("redis://:pw@h:1/0")["password"] == "pw"
    with pytest.raises(ValueError, match="redis://"):
        parse_url("http://h:1")


async def test_concurrent_calls_each_get_their_own_replies_in_order(redis_db):
    async def go(pipe):
        got = {}

        async def one(i):
            wire = b"".join(cmd(b"INCR", f"k{i}") for _ in range(3)) + cmd(b"ECHO", f"task {i}")
            got[i] = await pipe.call(wire, 4)

        async with trio.open_nursery() as n:
            for i in range(60):
                n.start_soon(one, i)
        return got
    got = await with_pipe(redis_db.url, go)
    assert got == {i: [1, 2, 3, f"task {i}".encode()] for i in range(60)}


async def test_an_error_reply_is_returned_not_raised_and_the_next_reply_is_still_matched(redis_db):
    async def go(pipe):
        out = await pipe.call(cmd(b"EVALSHA", b"0" * 40, b"0") + cmd(b"ECHO", b"after"), 2)
        again = await pipe.call(cmd(b"ECHO", b"next"), 1)
        return out, again
    (err, after), again = await with_pipe(redis_db.url, go)
    assert isinstance(err, hiredis.ReplyError) and str(err).startswith("NOSCRIPT")
    assert after == b"after" and again == [b"next"]


async def test_auth_select_and_tls_come_from_the_url(tmp_path):
    with RedisServer(tmp_path / "r", password="s3cret", tls=True) as srv:
        url = srv.url.replace("/0", "/2")

        async def go(pipe):
            return await pipe.call(cmd(b"SET", b"where", b"db2"), 1)
        assert await with_pipe(url, go, ca_file=srv.ca_file) == [b"OK"]
        assert redis.Redis.from_url(url, ssl_ca_certs=srv.ca_file).get("where") == b"db2"
        assert srv.client().get("where") is None       # db 0

        with pytest.raises(PipeError, match="cannot connect") as e:     # a wrong password: refused at connect
            await with_pipe(url.replace("s3cret", "wrong"), go, ca_file=srv.ca_file)
        assert not e.value.written


async def test_nobody_listening_is_an_error_before_anything_was_written():
    async def go(pipe):
        return await pipe.call(cmd(b"PING"), 1)
    with pytest.raises(PipeError, match="cannot connect") as e:
        await with_pipe(f"redis://127.0.0.1:{free_port()}/0", go, timeout=0.5)
    assert e.value.written is False


async def test_a_stalled_redis_fails_every_waiting_call_and_the_next_call_connects_again(tmp_path):
    with RedisServer(tmp_path / "r") as srv:
        async def go(pipe):
            await pipe.call(cmd(b"PING"), 1)
            srv.pause()
            errors = []

            async def one():
                try:
                    await pipe.call(cmd(b"INCR", b"n"), 1)
                except PipeError as e:
                    errors.append(e)
            try:
                async with trio.open_nursery() as n:
                    for _ in range(5):
                        n.start_soon(one)
            finally:
                srv.resume()
            return errors, await pipe.call(cmd(b"GET", b"n"), 1)
        errors, (n,) = await with_pipe(srv.url, go, timeout=0.3)
        assert len(errors) == 5 and all(e.written for e in errors)
        assert "no reply within 0.3 s" in str(errors[0])
        assert n == b"5"       # they had been written: they ran once Redis resumed (the caller must know)


async def test_a_restarted_redis_is_reconnected_to(tmp_path):
    with RedisServer(tmp_path / "r") as srv:
        async def go(pipe):
            assert await pipe.call(cmd(b"PING"), 1) == [b"PONG"]
            srv.stop()
            with pytest.raises(PipeError):
                await pipe.call(cmd(b"PING"), 1)
            srv.start()
            return await pipe.call(cmd(b"PING"), 1)
        assert await with_pipe(srv.url, go) == [b"PONG"]


async def test_a_cancelled_caller_gets_its_replies_through_orphan_and_the_connection_stays_aligned(tmp_path):
    with RedisServer(tmp_path / "r") as srv:
        async def go(pipe):
            orphaned = []
            await pipe.call(cmd(b"PING"), 1)
            srv.pause()
            try:
                with trio.move_on_after(0.2):
                    await pipe.call(cmd(b"INCR", b"c") + cmd(b"ECHO", b"mine"), 2, orphaned.append)
                assert orphaned == []           # not yet: Redis has not answered
            finally:
                srv.resume()
            after = await pipe.call(cmd(b"ECHO", b"theirs"), 1)
            return orphaned, after
        orphaned, after = await with_pipe(srv.url, go, timeout=5)
        assert orphaned == [[1, b"mine"]]
        assert after == [b"theirs"]


async def test_a_cancelled_caller_hears_of_a_broken_connection_through_orphan(tmp_path):
    with RedisServer(tmp_path / "r") as srv:
        async def go(pipe):
            orphaned = []
            await pipe.call(cmd(b"PING"), 1)
            srv.pause()
            with trio.move_on_after(0.1):
                await pipe.call(cmd(b"INCR", b"c"), 1, orphaned.append)
            srv.kill()
            await trio.sleep(0.3)
            return orphaned
        assert await with_pipe(srv.url, go, timeout=5) == [None]


async def test_calls_made_while_a_write_is_out_go_together_in_the_next_write(redis_db):
    """60 tasks calling at once: the first writes its command, and the 59 queued meanwhile go out
    in the next write (one system call for many), each still getting its own reply."""
    writes = []

    async def go(pipe):
        await pipe.call(cmd(b"PING"), 1)             # connected
        stream = pipe._stream
        send_all = stream.send_all

        async def counting(data):
            writes.append(data.count(b"ECHO"))
            await send_all(data)
        stream.send_all = counting
        got = {}

        async def one(i):
            got[i] = await pipe.call(cmd(b"ECHO", f"t{i}"), 1)
        async with trio.open_nursery() as n:
            for i in range(60):
                n.start_soon(one, i)
        return got
    got = await with_pipe(redis_db.url, go)
    assert got == {i: [f"t{i}".encode()] for i in range(60)}
    assert sum(writes) == 60 and len(writes) <= 3, writes
