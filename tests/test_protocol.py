"""The inbound protocol, sans sockets: byte-literal requests into a fake transport, answers parsed by h11."""

from __future__ import annotations

import asyncio

import pytest

from cco.flow_control import MAX_PIPELINED_REQUESTS
from cco.protocol import HttpProtocol, Limits
from cco.server import ConnectionRegistry
from tests.fakes import FakeTransport
from tests.http_util import parse_responses


class EchoApp:
    """Answers each request with its method, path, query and body: at once, or after a delay for some paths
    (the handler interface: `dispatch` answers and returns None, or returns a coroutine to run as a task)."""

    access_log = False

    def __init__(self) -> None:
        self.seen = []
        self.delays: dict[bytes, float] = {}
        self.cancelled = 0

    def dispatch(self, request, conn):
        self.seen.append(request)
        if self.delays.get(request.path):
            return self.answer_later(request, conn)
        self.answer(request, conn)
        return None

    async def answer_later(self, request, conn):
        try:
            await asyncio.sleep(self.delays[request.path])
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.answer(request, conn)

    def answer(self, request, conn):
        body = b"%s %s ?%s %s" % (request.method, request.path, request.query, request.body)
        conn.send(request, 200, b"", body, content_type=b"content-type: text/plain\r\n")


def run(coro):
    return asyncio.run(coro)


async def make(app=None, limits=None):
    app = app or EchoApp()
    registry = ConnectionRegistry()
    proto = HttpProtocol(app, registry, limits or Limits())
    transport = FakeTransport()
    proto.connection_made(transport)
    return app, proto, transport


async def settle(n: int = 20):
    for _ in range(n):
        await asyncio.sleep(0)


GET = b"GET /health?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"


def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n%s\r\n%s" % (path, len(body), extra, body)


def test_simple_request_and_header_names_lowercased():
    async def go():
        app, proto, transport = await make()
        proto.data_received(b"GET /health?x=1 HTTP/1.1\r\nHost: a\r\nX-Api-Key: K\r\n\r\n")
        await settle()
        [resp] = parse_responses(transport.data, [("GET", "/health?x=1")])
        assert resp.status == 200 and resp.body == b"GET /health ?x=1 "
        assert app.seen[0].header(b"x-api-key") == b"K"
        assert not transport.closed
    run(go())


def test_one_byte_at_a_time():
    async def go():
        app, proto, transport = await make()
        data = post(b"/v1/messages", b'{"model":"m"}')
        for i in range(len(data)):
            proto.data_received(data[i:i + 1])
        await settle()
        [resp] = parse_responses(transport.data, [("POST", "/v1/messages")])
        assert resp.body == b'POST /v1/messages ? {"model":"m"}'
    run(go())


def test_pipelined_requests_answered_in_order_even_when_the_first_is_slowest():
    async def go():
        app, proto, transport = await make()
        app.delays[b"/slow"] = 0.05
        proto.data_received(post(b"/slow", b"1") + post(b"/fast", b"2") + GET + b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.sleep(0.1)
        await settle()
        responses = parse_responses(transport.data, [("POST", "/slow"), ("POST", "/fast"), ("GET", "/health?x=1"),
                                                     ("HEAD", "/")])
        assert [r.body for r in responses] == [b"POST /slow ? 1", b"POST /fast ? 2", b"GET /health ?x=1 ", b""]
        assert responses[3].headers["content-length"] == str(len(b"HEAD / ? "))
    run(go())


def test_trailing_partial_request_waits_for_the_rest():
    async def go():
        app, proto, transport = await make()
        data = GET + post(b"/v1/messages", b"abcdef")
        proto.data_received(data[:-3])
        await settle()
        assert len(parse_responses(transport.data, [("GET", "/health?x=1")])) == 1
        proto.data_received(data[-3:])
        await settle()
        assert len(app.seen) == 2 and app.seen[1].body == b"abcdef"
    run(go())


def test_chunked_request_body():
    async def go():
        app, proto, transport = await make()
        proto.data_received(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        await settle()
        assert app.seen[0].body == b"abcde"
    run(go())


def test_connection_close_and_http10_close_after_the_answer():
    for request in (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"):
        async def go():
            app, proto, transport = await make()
            proto.data_received(request)
            await settle()
            assert transport.closed
            assert b"connection: close" in transport.data.lower()
        run(go())


def test_declared_body_over_the_limit_is_413_before_the_body_arrives():
    async def go():
        app, proto, transport = await make(limits=Limits(max_body_bytes=1000))
        proto.data_received(b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n")
        await settle()
        [resp] = parse_responses(transport.data, [("POST", "/v1/messages")])
        assert resp.status == 413 and resp.json()["error"]["type"] == "request_too_large"
        assert transport.closed and app.seen == []
    run(go())


def test_chunked_body_over_the_limit_is_413():
    async def go():
        app, proto, transport = await make(limits=Limits(max_body_bytes=10))
        proto.data_received(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n")
        proto.data_received(b"8\r\n12345678\r\n")
        await settle()
        [resp] = parse_responses(transport.data, [("POST", "/x")])
        assert resp.status == 413 and transport.closed
    run(go())


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(200)) + b"\r\n",
])
def test_oversized_headers_are_431(head):
    async def go():
        app, proto, transport = await make()
        proto.data_received(head)
        await settle()
        [resp] = parse_responses(transport.data, [("GET", "/")])
        assert resp.status == 431 and transport.closed and app.seen == []
    run(go())


@pytest.mark.parametrize("garbage", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                                     b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"])
def test_malformed_http_is_400_and_close(garbage):
    async def go():
        app, proto, transport = await make()
        proto.data_received(garbage)
        await settle()
        [resp] = parse_responses(transport.data, [("GET", "/")])
        assert resp.status == 400 and resp.json()["type"] == "error" and transport.closed
    run(go())


def test_bad_request_after_good_pipelined_ones_is_answered_after_them():
    async def go():
        app, proto, transport = await make()
        app.delays[b"/slow"] = 0.02
        proto.data_received(post(b"/slow", b"1") + b"NOT HTTP\r\n\r\n")
        await asyncio.sleep(0.05)
        await settle()
        responses = parse_responses(transport.data, [("POST", "/slow"), ("GET", "/")])
        assert [r.status for r in responses] == [200, 400] and transport.closed
    run(go())


def test_client_disconnect_cancels_the_handler():
    async def go():
        app, proto, transport = await make()
        app.delays[b"/slow"] = 5
        proto.data_received(post(b"/slow", b"x"))
        await settle()
        proto.connection_lost(None)
        await settle()
        assert app.cancelled == 1 and transport.written == []
    run(go())


def test_too_many_pipelined_requests_pause_reading_until_drained():
    async def go():
        app, proto, transport = await make()
        app.delays[b"/slow"] = 0.02
        proto.data_received(post(b"/slow", b"x") * (MAX_PIPELINED_REQUESTS + 3))
        assert transport.reading is False
        await asyncio.sleep(0.02 * (MAX_PIPELINED_REQUESTS + 5))
        await settle()
        assert transport.reading is True
        assert len(parse_responses(transport.data, [("POST", "/slow")] * (MAX_PIPELINED_REQUESTS + 3))) == (
            MAX_PIPELINED_REQUESTS + 3)
    run(go())


def test_write_back_pressure_drain_waits_for_resume():
    async def go():
        app, proto, transport = await make()
        proto.pause_writing()
        drained = asyncio.ensure_future(proto.drain())
        await settle()
        assert not drained.done()
        proto.resume_writing()
        await settle()
        assert drained.done()
    run(go())


def test_resume_writing_resumes_a_paused_upstream_reader():
    async def go():
        app, proto, transport = await make()
        resumed = []
        proto.flow.on_resume(lambda: resumed.append(True))
        proto.pause_writing()
        assert proto.flow.write_paused
        proto.resume_writing()
        assert resumed == [True]
    run(go())


def test_header_timeout_counts_from_the_first_byte_and_is_not_extended():
    async def go():
        app, proto, transport = await make(limits=Limits(header_timeout=10))
        proto.data_received(b"GET / HTTP/1.1\r\nHo")
        start = proto._request_started
        proto.data_received(b"st: a\r\n")  # more bytes do not extend the deadline
        proto.check_timeouts(start + 9)
        assert not transport.closed
        proto.check_timeouts(start + 10.5)
        assert transport.aborted
    run(go())


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout():
    async def go():
        app, proto, transport = await make(limits=Limits(header_timeout=10))
        proto.check_timeouts(proto.opened_at + 11)
        assert transport.closed
    run(go())


def test_idle_keep_alive_timeout():
    async def go():
        app, proto, transport = await make(limits=Limits(idle_timeout=5))
        proto.data_received(GET)
        await settle()
        proto.check_timeouts(proto.idle_since + 4)
        assert not transport.closed
        proto.check_timeouts(proto.idle_since + 6)
        assert transport.closed
    run(go())


def test_expect_100_continue():
    async def go():
        app, proto, transport = await make()
        proto.data_received(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert transport.data == b"HTTP/1.1 100 Continue\r\n\r\n"
        proto.data_received(b"ok")
        await settle()
        [resp] = parse_responses(transport.data, [("POST", "/x")])
        assert resp.body == b"POST /x ? ok"
    run(go())


def test_handler_crash_is_500_and_the_connection_survives():
    class Crashing(EchoApp):
        def dispatch(self, request, conn):
            if request.path == b"/boom":
                raise RuntimeError("boom")
            return super().dispatch(request, conn)

    async def go():
        app, proto, transport = await make(Crashing())
        proto.data_received(b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n" + GET)
        await settle()
        responses = parse_responses(transport.data, [("GET", "/boom"), ("GET", "/health?x=1")])
        assert [r.status for r in responses] == [500, 200] and not transport.closed
    run(go())


def test_streamed_response_is_valid_chunked_http():
    class Streaming(EchoApp):
        def dispatch(self, request, conn):
            conn.start_stream(request, 200, b"content-type: text/event-stream\r\n")
            conn.write_chunk(b"event: a\ndata: 1\n\n")
            conn.write_chunk(b"x" * 20000)
            conn.end_stream()

    async def go():
        app, proto, transport = await make(Streaming())
        proto.data_received(GET + GET)
        await settle()
        responses = parse_responses(transport.data, [("GET", "/health?x=1")] * 2)
        assert [r.body for r in responses] == [b"event: a\ndata: 1\n\n" + b"x" * 20000] * 2
    run(go())
