"""Integration tests of the upstream side of a real `cco-proxy`: failures, retries, streaming and the headers it
forwards, against the mock Anthropic upstream. Every answer is parsed strictly with h11.
"""

from __future__ import annotations

import json
import re
import time

import h11
import pytest

from tests.conftest import IMPLS, free_port
from tests.http_util import H11Response, connect, post, wait_for
from tests.test_http_server import MESSAGES, MODEL, Conn, assert_alive, assert_error, message, one, reply_text

pytestmark = pytest.mark.integration


def mock_route(mock, **fields) -> dict:
    return {"pattern": "^claude-", "provider": "anthropic", "endpoint": mock.url, "max_retries": 0, **fields}


def mode(name: str, **extra: str) -> dict[str, str]:
    return {"x-mock-mode": name, **extra}


def same_as_direct(proxied: H11Response, direct: H11Response) -> bytes:
    """The mock's direct answer with its per-request ids (req_mock_N, msg_mock_N) changed to the proxied one's."""
    n_direct = direct.headers["request-id"].removeprefix("req_mock_")
    n_proxied = proxied.headers["request-id"].removeprefix("req_mock_")
    return re.sub(rb"(req|msg)_mock_" + n_direct.encode() + rb"\b", rb"\1_mock_" + n_proxied.encode(), direct.body)


def sse_events(body: bytes) -> list[tuple[str, bytes]]:
    """[(event name, data)] of an SSE body."""
    out = []
    for block in body.split(b"\n\n"):
        if block:
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n"))
            out.append((fields[b"event"].decode(), fields[b"data"]))
    return out


# ----------------------------------------------------------------------------------------- 7. upstream failures


@pytest.mark.parametrize("impl", IMPLS)
def test_upstream_refused_is_502(impl, make_proxy, mock):
    closed_port = free_port()
    p = make_proxy(impl, routes=[mock_route(mock, endpoint=f"http://127.0.0.1:{closed_port}")])
    resp = one(p.port, post(MESSAGES, message()))
    msg = assert_error(resp, 502, "api_error", "anthropic", f"127.0.0.1:{closed_port}")
    assert "connect" in msg and "refused" in msg.lower(), msg
    assert resp.headers["request-id"].startswith("req_cco_")
    assert resp.headers["x-cco-provider"] == "anthropic"
    assert_alive(p.port)


@pytest.mark.parametrize("impl", IMPLS)
def test_upstream_timeout_is_504(impl, make_proxy, mock):
    p = make_proxy(impl, routes=[mock_route(mock, timeout_ms=300)])
    resp = one(p.port, post(MESSAGES, message(), mode("slow")))  # the mock would answer 200 after 2 s
    assert_error(resp, 504, "api_error", "anthropic", "0.3 s")
    assert_alive(p.port)


def test_truncated_upstream_body_is_502(proxy, mock):
    resp = one(proxy.port, post(MESSAGES, message(), mode("truncate-body")))
    assert_error(resp, 502, "api_error", "anthropic", "closed before the response was complete")
    assert reply_text(one(proxy.port, post(MESSAGES, message("after")))) == "Hello from mock: after"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mock_mode,max_retries,status,calls", [
    ("fail-first-2", 2, 200, 3),   # retried until it succeeds
    ("fail-first-5", 1, 529, 2),   # retries exhausted: the last 529 goes back as the upstream sent it
    ("error-400", 2, 400, 1),      # a client error is never retried
])
def test_retries(impl, make_proxy, mock, mock_mode, max_retries, status, calls):
    p = make_proxy(impl, routes=[mock_route(mock, max_retries=max_retries)])
    resp = one(p.port, post(MESSAGES, message("retry me"), mode(mock_mode)), timeout=20)
    assert resp.status == status, resp.body
    assert mock.count() == calls
    if status == 200:
        assert reply_text(resp) == "Hello from mock: retry me"
    else:  # the upstream error body, byte for byte
        direct = one(mock.port, post(MESSAGES, message("retry me"), mode(f"error-{status}")))
        assert resp.body == same_as_direct(resp, direct)
    assert p.health()["upstream_retries"] == calls - 1


@pytest.mark.parametrize("impl", IMPLS)
def test_retry_after_is_honoured(impl, make_proxy, mock):
    p = make_proxy(impl, routes=[mock_route(mock, max_retries=1)])
    started = time.monotonic()
    resp = one(p.port, post(MESSAGES, message(), mode("error-429", **{"x-mock-retry-after": "1"})), timeout=20)
    elapsed = time.monotonic() - started
    assert_error(resp, 429, "rate_limit_error")
    assert resp.headers["retry-after"] == "1"
    assert mock.count() == 2
    assert elapsed >= 0.9, elapsed


# -------------------------------------------------------------------------------------------- 8. streaming


@pytest.mark.parametrize("mock_mode", ["", "big-stream"])
def test_stream_is_passed_through_unchanged(proxy, mock, mock_mode):
    data = post(MESSAGES, message("stream me", stream=True), mode(mock_mode))
    proxied = one(proxy.port, data, timeout=20)
    assert proxied.status == 200
    assert proxied.headers["content-type"].startswith("text/event-stream")
    assert proxied.headers["transfer-encoding"] == "chunked" and "content-length" not in proxied.headers
    assert proxied.headers["x-cco-provider"] == "anthropic" and proxied.headers["x-cco-model"] == MODEL
    direct = one(mock.port, data, timeout=20)
    assert proxied.body == same_as_direct(proxied, direct)
    assert sse_events(proxied.body)[-1][0] == "message_stop"


def test_stream_dropped_by_upstream_ends_with_error_event(proxy, mock):
    resp = one(proxy.port, post(MESSAGES, message("drop", stream=True), mode("drop-mid-stream")))
    assert resp.status == 200 and resp.headers["transfer-encoding"] == "chunked"  # and h11 saw the last chunk
    names = [name for name, _ in sse_events(resp.body)]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta", "error"], names
    error = json.loads(sse_events(resp.body)[-1][1])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "anthropic" in error["error"]["message"]


@pytest.mark.parametrize("impl", IMPLS)
def test_client_gone_mid_stream_closes_upstream(impl, make_proxy, mock):
    p = make_proxy(impl)
    with Conn(p.port) as conn:
        conn.send(post(MESSAGES, message("a slow stream", stream=True), mode("stream-slow")))
        conn.h11.send(h11.Request(method="POST", target=MESSAGES, headers=[("host", "127.0.0.1")]))
        seen = b""
        while b"event: message_start" not in seen:  # the head and the first event, then we hang up
            event = conn.h11.next_event()
            if event is h11.NEED_DATA:
                conn.h11.receive_data(conn.sock.recv(65536))
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
            elif isinstance(event, h11.Data):
                seen += bytes(event.data)
            else:
                raise AssertionError(f"unexpected {event!r}")
        assert p.health()["upstream_connections"] == 1
    assert wait_for(lambda: p.health()["upstream_connections"] == 0, timeout=5), p.health()
    assert reply_text(one(p.port, post(MESSAGES, message("still here")))) == "Hello from mock: still here"


# ---------------------------------------------------------------------------------------------- 9. headers

HOP_BY_HOP = {"connection": "keep-alive, x-foo", "x-foo": "1", "keep-alive": "timeout=5", "te": "trailers",
              "trailer": "x-bar", "upgrade": "h2c", "proxy-connection": "keep-alive"}
PRIVATE = {"accept-encoding": "gzip, br", "x-cco-project": "demo", "x-cco-cache": "off", "x-cco-agent": "tester",
           "x-cco-debug": "1"}


def test_hop_by_hop_and_proxy_headers_not_forwarded(proxy, mock):
    headers = {**HOP_BY_HOP, **PRIVATE, "x-keep": "yes", "anthropic-beta": "b1"}
    resp = one(proxy.port, post(MESSAGES + "?beta=true", message("headers"), headers), "POST", MESSAGES + "?beta=true")
    assert reply_text(resp) == "Hello from mock: headers"
    seen = mock.requests[-1]
    assert (seen.path, seen.query) == (MESSAGES, "beta=true")
    leaked = (set(HOP_BY_HOP) | set(PRIVATE)) & set(seen.headers)
    assert not leaked, leaked
    assert seen.headers["x-keep"] == "yes" and seen.headers["anthropic-beta"] == "b1"
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["x-api-key"] == "sk-test"  # no api_key_env on the route: the client's key goes through
    assert seen.headers["host"] == mock.url.removeprefix("http://")


def test_response_carries_proxy_headers(proxy, mock):
    resp = one(proxy.port, post(MESSAGES, message()))
    assert resp.status == 200
    assert resp.headers["x-cco-provider"] == "anthropic" and resp.headers["x-cco-model"] == MODEL
    assert float(resp.headers["x-cco-overhead-ms"]) >= 0
    assert re.fullmatch(r"req_mock_\d+", resp.headers["request-id"])  # the upstream's id, passed through


@pytest.mark.parametrize("impl", IMPLS)
def test_proxy_key_and_route_headers(impl, make_proxy, mock):
    route = mock_route(mock, api_key_env="CCO_TEST_KEY", headers={"x-route-tag": "t1", "anthropic-beta": "route"})
    p = make_proxy(impl, routes=[route], env={"CCO_TEST_KEY": "sk-proxy"})
    client = {"authorization": "Bearer client-token", "anthropic-beta": "client"}
    assert one(p.port, post(MESSAGES, message(), client)).status == 200
    raw = [(k.lower(), v) for k, v in mock.requests[-1].raw_headers]
    assert [v for k, v in raw if k == "x-api-key"] == ["sk-proxy"]
    assert "authorization" not in {k for k, _ in raw}
    assert [v for k, v in raw if k == "anthropic-beta"] == ["route"]
    assert [v for k, v in raw if k == "x-route-tag"] == ["t1"]


def test_client_closing_cancels_a_non_stream_upstream_request(proxy, mock):
    """A client that closes its connection (EOF) while waiting cancels the upstream call (nginx's 499)."""
    data = post(MESSAGES, message("abandoned"), {"x-mock-delay-ms": "3000"}, keep_alive=True)
    sock = connect(proxy.port)
    sock.sendall(data)
    assert wait_for(lambda: mock.count() >= 1, timeout=10)
    assert wait_for(lambda: proxy.health()["upstream_connections"] >= 1, timeout=5)
    sock.close()
    assert wait_for(lambda: proxy.health()["upstream_connections"] == 0, timeout=2.5)  # before the 3 s answer
    assert reply_text(one(proxy.port, post(MESSAGES, message("still serving")))) == "Hello from mock: still serving"
