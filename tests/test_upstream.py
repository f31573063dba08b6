"""Upstream connections and pools against byte-chunk fakes (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from cco.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from cco.upstream import connection as conn_mod
from cco.upstream.connection import Exchange, UpstreamConnection
from cco.upstream.pool import Origin, Pool
from tests.fakes import FakeTransport

RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nRequest-Id: req_1\r\ncontent-length: 11\r\n\r\n"
            b'{"ok":true}')
CHUNKED = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
           b"7\r\nevent: \r\n5\r\na\n\n\n\n\r\n0\r\n\r\n")


class Recorder(Exchange):
    __slots__ = ("events", "body", "done")

    def __init__(self, timeout: float = 5.0) -> None:
        super().__init__("anthropic", timeout)
        self.events: list = []
        self.body = b""
        self.done = asyncio.get_running_loop().create_future()

    def on_head(self, status, headers):
        self.events.append(("head", status, dict(headers)))

    def on_body(self, data):
        self.body += data

    def on_complete(self):
        self.events.append(("complete",))
        self.done.set_result(None)

    def on_error(self, exc):
        self.events.append(("error", exc))
        self.done.set_result(None)


async def connected(pool=None):
    pool = pool or Pool(Origin("http://upstream.test:8080"), 4)
    conn = UpstreamConnection(pool)
    transport = FakeTransport()
    conn.connection_made(transport)
    pool.open += 1
    conn.state = conn_mod.ACTIVE
    return pool, conn, transport


def pieces(data: bytes, mode: str) -> list[bytes]:
    if mode == "whole":
        return [data]
    if mode == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    return [data[:len(data) // 3], data[len(data) // 3:]]


@pytest.mark.parametrize("mode", ["whole", "bytes", "split"])
def test_content_length_response_then_connection_is_pooled(mode):
    async def go():
        pool, conn, transport = await connected()
        ex = Recorder()
        conn.start(ex, b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n", b"{}")
        assert transport.data.endswith(b"\r\n\r\n{}")
        for piece in pieces(RESPONSE, mode):
            conn.data_received(piece)
        await ex.done
        assert ex.events[0][:2] == ("head", 200) and ex.events[0][2][b"request-id"] == b"req_1"
        assert ex.events[-1] == ("complete",) and ex.body == b'{"ok":true}'
        assert conn.state == conn_mod.IDLE and list(pool.idle) == [conn]
    asyncio.run(go())


@pytest.mark.parametrize("mode", ["whole", "bytes", "split"])
def test_chunked_response(mode):
    async def go():
        pool, conn, transport = await connected()
        ex = Recorder()
        conn.start(ex, b"GET / HTTP/1.1\r\n\r\n", b"")
        for piece in pieces(CHUNKED, mode):
            conn.data_received(piece)
        await ex.done
        assert ex.body == b"event: a\n\n\n\n" and ex.events[-1] == ("complete",)
        assert conn.state == conn_mod.IDLE
    asyncio.run(go())


def test_connection_close_response_is_not_pooled():
    async def go():
        pool, conn, transport = await connected()
        ex = Recorder()
        conn.start(ex, b"GET / HTTP/1.1\r\n\r\n", b"")
        conn.data_received(RESPONSE.replace(b"content-length: 11", b"connection: close\r\ncontent-length: 11"))
        await ex.done
        assert ex.events[-1] == ("complete",) and transport.closed and not pool.idle
    asyncio.run(go())


def test_body_delimited_by_close_completes_on_connection_lost():
    async def go():
        pool, conn, transport = await connected()
        ex = Recorder()
        conn.start(ex, b"GET / HTTP/1.1\r\n\r\n", b"")
        conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nsome ")
        conn.data_received(b"bytes")
        conn.connection_lost(None)
        await ex.done
        assert ex.body == b"some bytes" and ex.events[-1] == ("complete",)
    asyncio.run(go())


def test_lost_mid_body_is_an_error_after_response_started():
    async def go():
        pool, conn, transport = await connected()
        ex = Recorder()
        conn.start(ex, b"GET / HTTP/1.1\r\n\r\n", b"")
        conn.data_received(RESPONSE[:-4])
        conn.connection_lost(ConnectionResetError("reset"))
        await ex.done
        kind, err = ex.events[-1]
        assert isinstance(err, UpstreamConnectError) and not err.before_response
        assert "closed before the response was complete" in err.message and pool.open == 0
    asyncio.run(go())


def test_lost_before_any_byte_is_marked_resendable():
    async def go():
        pool, conn, transport = await connected()
        ex = Recorder()
        conn.start(ex, b"GET / HTTP/1.1\r\n\r\n", b"")
        conn.connection_lost(None)
        await ex.done
        assert ex.events[-1][1].before_response
    asyncio.run(go())


def test_garbage_is_a_protocol_error_and_closes():
    async def go():
        pool, conn, transport = await connected()
        ex = Recorder()
        conn.start(ex, b"GET / HTTP/1.1\r\n\r\n", b"")
        conn.data_received(b"SSH-2.0-OpenSSH\r\n\r\n")
        await ex.done
        assert isinstance(ex.events[-1][1], UpstreamProtocolError) and transport.closed
    asyncio.run(go())


def test_interim_100_continue_is_skipped():
    async def go():
        pool, conn, transport = await connected()
        ex = Recorder()
        conn.start(ex, b"GET / HTTP/1.1\r\n\r\n", b"")
        conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\n" + RESPONSE)
        await ex.done
        assert [e[1] for e in ex.events if e[0] == "head"] == [200]
    asyncio.run(go())


def test_read_timeout_fires_without_data_and_is_rearmed_by_data():
    async def go():
        pool, conn, transport = await connected()
        ex = Recorder(timeout=0.15)
        conn.start(ex, b"GET / HTTP/1.1\r\n\r\n", b"")
        for i in range(3):  # data keeps arriving: no timeout although 0.3 s pass in total
            await asyncio.sleep(0.1)
            conn.data_received(CHUNKED[i * 10:(i + 1) * 10])
        assert not ex.done.done()
        await ex.done  # then nothing more comes
        err = ex.events[-1][1]
        assert isinstance(err, UpstreamTimeout) and err.status == 504 and transport.aborted
    asyncio.run(go())


def test_bytes_on_an_idle_connection_close_it():
    async def go():
        pool, conn, transport = await connected()
        ex = Recorder()
        conn.start(ex, b"GET / HTTP/1.1\r\n\r\n", b"")
        conn.data_received(RESPONSE)
        await ex.done
        conn.data_received(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        assert transport.closed
    asyncio.run(go())


def test_pause_and_resume_reading():
    async def go():
        pool, conn, transport = await connected()
        conn.pause_reading()
        assert transport.reading is False
        conn.resume_reading()
        assert transport.reading is True
    asyncio.run(go())


def test_pool_reuses_the_most_recent_idle_connection_and_skips_dead_ones():
    async def go():
        pool = Pool(Origin("http://upstream.test"), 4)
        conns = []
        for _ in range(3):
            _, conn, transport = await connected(pool)
            conn.state = conn_mod.IDLE
            conn.idle_since = pool.loop.time()
            pool.release(conn)
            conns.append(conn)
        conns[2].transport.closed = True  # the newest died while idle
        got, reused = await pool.acquire(1.0, "anthropic")
        assert got is conns[1] and reused and got.state == conn_mod.ACTIVE
        conns[0].idle_since -= 3600  # past the keep-alive window
        opened = []

        async def fake_connect(timeout, provider):
            pool.open += 1
            opened.append(True)
            return "new"
        pool._connect = fake_connect
        got, reused = await pool.acquire(1.0, "anthropic")
        assert got == "new" and not reused and opened
    asyncio.run(go())


def test_pool_limit_makes_callers_wait_for_a_released_connection():
    async def go():
        pool = Pool(Origin("http://upstream.test"), 1)
        _, conn, _ = await connected(pool)
        waiter = asyncio.ensure_future(pool.acquire(1.0, "anthropic"))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        conn.state = conn_mod.IDLE
        pool.release(conn)
        got, reused = await waiter
        assert got is conn and reused
    asyncio.run(go())


def test_pool_connect_failure_is_502_naming_the_origin():
    async def go():
        pool = Pool(Origin("http://127.0.0.1:9"), 2)
        with pytest.raises(UpstreamConnectError) as info:
            await pool.acquire(1.0, "anthropic")
        assert "127.0.0.1:9" in info.value.message and info.value.status == 502 and pool.open == 0
    asyncio.run(go())


def test_origin_parsing():
    origin = Origin("https://api.anthropic.com")
    assert (origin.port, origin.host_header, origin.base_path) == (443, b"api.anthropic.com", "")
    origin = Origin("http://[::1]:8080/prefix/")
    assert (origin.host, origin.port, origin.host_header, origin.base_path) == ("::1", 8080, b"[::1]:8080",
                                                                                "/prefix")
    with pytest.raises(ValueError):
        Origin("ftp://x")
