"""Integration tests of the client side of a real `cco-proxy`: HTTP/1.1 framing, limits, timeouts, routing
errors, model lists and the process lifecycle. Every answer is parsed strictly with h11.

The upstream side (failures, retries, streaming, forwarded headers) is in test_http_upstream.py, which reuses
the helpers defined here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h11
import pytest

from cco import __version__
from tests.conftest import IMPLS, free_port, proxy_command
from tests.http_util import H11Response, connect, post, wait_for

pytestmark = pytest.mark.integration

MODEL = "claude-sonnet-4-5"
MESSAGES = "/v1/messages"


# ----------------------------------------------------------------------------------------------- helpers


def message(text: str = "hi", **fields) -> bytes:
    """A Messages API request body whose user text the mock echoes back."""
    body = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    body.update(fields)
    return json.dumps(body).encode()


def request(method: str, path: str, headers: dict[str, str] | None = None, keep_alive: bool = True) -> bytes:
    """A bodiless request (GET, HEAD, ...)."""
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def reply_text(resp: H11Response) -> str:
    assert resp.status == 200, resp.body
    return resp.json()["content"][0]["text"]


def assert_error(resp: H11Response, status: int, error_type: str, *words: str) -> str:
    """`resp` is an Anthropic error of `status`/`error_type` whose message contains every word; returns it."""
    assert resp.status == status, (resp.status, resp.body)
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type, body
    msg = body["error"]["message"]
    for word in words:
        assert word in msg, (word, msg)
    return msg


def one(port: int, data: bytes, method: str = "POST", target: str = MESSAGES, timeout: float = 10.0) -> H11Response:
    """Sends one request on a new connection and returns its answer (parsed with h11)."""
    with Conn(port, timeout) as conn:
        conn.send(data)
        return conn.response(method, target)


def assert_alive(port: int) -> None:
    """A new connection still gets a 200: the process survived whatever came before."""
    resp = one(port, request("GET", "/health"), "GET", "/health")
    assert resp.status == 200 and resp.json()["status"] == "ok"


class Conn:
    """One client connection that writes raw bytes and reads the answers one by one, parsed with h11."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = connect(port, timeout)
        self.h11 = h11.Connection(our_role=h11.CLIENT)

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def response(self, method: str = "POST", target: str = MESSAGES) -> H11Response:
        """The next answer on this connection, to a request `method target` already written."""
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        conn.send(h11.Request(method=method, target=target, headers=[("host", "127.0.0.1")]))
        conn.send(h11.EndOfMessage())
        status, raw_headers, body = 0, [], []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(self._recv())
            elif isinstance(event, h11.Response):
                status = event.status_code
                raw_headers = [(k.decode(), v.decode()) for k, v in event.headers]
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return H11Response(status, dict(raw_headers), b"".join(body), raw_headers)
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"connection closed before the answer to {method} {target}")

    def closed_within(self, timeout: float) -> float | None:
        """Seconds until the server closed the connection (sending nothing more), or None if it stayed open."""
        start = time.monotonic()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            return None
        assert data == b"", f"unexpected bytes after the answer: {data[:200]!r}"
        return time.monotonic() - start


def run_proxy_cli(tmp_path: Path, impl: str, args: list[str], routing: dict | None = None,
                  timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Runs `cco-proxy` to completion (for start-up failures), with `routing` as its model-routing.json."""
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    if routing is not None:
        (config_dir / "model-routing.json").write_text(json.dumps(routing))
    env = dict(os.environ, CCO_PURE_PYTHON="1" if impl == "pure" else "0")
    cmd = proxy_command() + ["--host", "127.0.0.1", "--config-dir", str(config_dir),
                             "--data-dir", str(tmp_path / "data")] + args
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)


# ----------------------------------------------------------------------------------- 1. keep-alive, pipelining


def test_keep_alive_sequential_requests(proxy, mock):
    with Conn(proxy.port) as conn:
        for i in range(3):
            conn.send(post(MESSAGES, message(f"turn {i}")))
            resp = conn.response()
            assert reply_text(resp) == f"Hello from mock: turn {i}"
            assert resp.headers.get("connection", "").lower() != "close"
    assert mock.count() == 3


def test_pipelined_requests_answered_in_order(proxy, mock):
    batch = [(post(MESSAGES, message("first")), "POST", MESSAGES),
             (request("GET", "/health"), "GET", "/health"),
             (post(MESSAGES, message("second, a longer one")), "POST", MESSAGES),
             (request("HEAD", "/"), "HEAD", "/"),
             (post(MESSAGES, message("third"), keep_alive=False), "POST", MESSAGES)]
    with Conn(proxy.port) as conn:
        conn.send(b"".join(data for data, _, _ in batch))  # one write: all five are in flight together
        answers = [conn.response(method, target) for _, method, target in batch]
        assert conn.closed_within(5) is not None  # the last request asked for connection: close
    assert reply_text(answers[0]) == "Hello from mock: first"
    assert answers[1].status == 200 and answers[1].json()["status"] == "ok"
    assert reply_text(answers[2]) == "Hello from mock: second, a longer one"
    assert answers[3].status == 200 and answers[3].body == b""
    assert reply_text(answers[4]) == "Hello from mock: third"
    assert mock.count() == 3


# ---------------------------------------------------------------------------------------------- 2. probes


@pytest.mark.parametrize("method,path", [("HEAD", "/"), ("HEAD", "/api/hello"), ("GET", "/api/hello")])
def test_connectivity_probes(proxy, method, path):
    resp = one(proxy.port, request(method, path), method, path)
    assert resp.status == 200
    if method == "HEAD":
        assert resp.body == b""
    else:
        assert resp.json() == {"ok": True}


# ---------------------------------------------------------------------------------------------- 3. limits


def send_and_expect_close(port: int, data: bytes, method: str = "POST", target: str = MESSAGES) -> H11Response:
    """Writes `data` (no half-close), reads one answer, and checks the server then closes the connection."""
    with Conn(port) as conn:
        conn.send(data)
        resp = conn.response(method, target)
        assert conn.closed_within(5) is not None, "the server kept the connection open"
    assert resp.headers.get("connection") == "close"
    return resp


def test_declared_body_too_large_answered_before_the_body(proxy, mock):
    head = (f"POST {MESSAGES} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            "content-length: 40000000\r\n\r\n").encode()
    resp = send_and_expect_close(proxy.port, head)  # the body is never sent
    assert_error(resp, 413, "request_too_large", "MB")
    assert mock.count() == 0
    assert_alive(proxy.port)


def test_chunked_body_too_large(proxy, mock):
    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    head = (f"POST {MESSAGES} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            "transfer-encoding: chunked\r\n\r\n").encode()
    megabyte = chunk(b"x" * (1024 * 1024))

    def send_body(conn: Conn) -> None:
        try:
            conn.send(head + chunk(b'{"model": "' + MODEL.encode() + b'", "pad": "'))
            for _ in range(32):  # 32 MB of padding plus the JSON around it: just over the 32 MB limit
                conn.send(megabyte)
            conn.send(chunk(b'"}') + b"0\r\n\r\n")
        except OSError:
            pass  # the proxy closed the connection on us: expected

    with Conn(proxy.port, timeout=20) as conn:
        sender = threading.Thread(target=send_body, args=(conn,), daemon=True)
        sender.start()
        resp = conn.response()
        sender.join(20)
        assert not sender.is_alive()
    assert_error(resp, 413, "request_too_large")
    assert mock.count() == 0
    assert_alive(proxy.port)


@pytest.mark.parametrize("case", ["huge-header", "many-headers"])
def test_header_limits(proxy, case):
    if case == "huge-header":
        extra = {"x-big": "a" * 100_000}
    else:
        extra = {f"x-h{i}": str(i) for i in range(200)}
    resp = send_and_expect_close(proxy.port, request("GET", "/health", extra), "GET", "/health")
    assert_error(resp, 431, "invalid_request_error")
    assert_alive(proxy.port)


def test_malformed_request_line(proxy):
    resp = send_and_expect_close(proxy.port, b"GARBAGE\r\n\r\n", "GET", "/")
    assert_error(resp, 400, "invalid_request_error", "malformed")
    assert_alive(proxy.port)


@pytest.mark.parametrize("body,words", [
    (b'{"model": "claude-sonnet-4-5", "max_tokens": 1O}', ["JSON", "byte 46"]),
    (b'{"model": "claude-sonnet-4-5", "max_tokens": ', ["JSON", "ends early", "byte 45"]),
    (b"", ["JSON", "ends early", "byte 0"]),
    (b"[]", ["object"]),
    (b'{"max_tokens": 10, "messages": []}', ["model"]),
    (b'{"model": "claude-sonnet-4-5", "max_tokens": "lots", "messages": []}', ["$.max_tokens"]),
    # JSON text is UTF-8 (RFC 8259 §8.1): a byte sequence that is not is bad JSON, wherever it is
    (b'{"model": "claude-sonnet-4-5", "system": "be \xff brief", "messages": []}', ["JSON", "UTF-8", "byte 45"]),
    (b'{"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
     ["JSON", "UTF-8", "byte 73"]),
], ids=["invalid-json", "truncated-json", "empty", "array", "missing-model", "max-tokens-type", "utf8-system",
        "utf8-surrogate-in-message"])
def test_invalid_bodies_rejected_before_upstream(proxy, mock, body, words):
    resp = one(proxy.port, post(MESSAGES, body))
    assert_error(resp, 400, "invalid_request_error", *words)
    assert resp.headers.get("x-should-retry") == "false"
    assert mock.count() == 0
    assert_alive(proxy.port)


# -------------------------------------------------------------------------------------------- 4. timeouts


@pytest.mark.parametrize("impl", IMPLS)
def test_slowloris_client_is_disconnected(impl, make_proxy):
    p = make_proxy(impl, args=["--header-timeout", "1"])
    head = b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: " + b"a" * 200
    start = time.monotonic()
    closed_after = None
    with Conn(p.port) as conn:
        conn.sock.settimeout(0.2)
        for byte in head:  # one byte every 200 ms: never a complete head within the test
            try:
                conn.sock.sendall(bytes([byte]))
                data = conn.sock.recv(65536)  # waits up to 200 ms
            except socket.timeout:
                continue
            except OSError:  # reset by the proxy
                data = b""
            assert data == b"", data[:200]
            closed_after = time.monotonic() - start
            break
    assert closed_after is not None and closed_after < 6, closed_after
    assert_alive(p.port)


@pytest.mark.parametrize("impl", IMPLS)
def test_idle_keep_alive_connection_closed(impl, make_proxy):
    p = make_proxy(impl, args=["--idle-timeout", "1"])
    with Conn(p.port) as conn:
        conn.send(request("GET", "/health"))
        assert conn.response("GET", "/health").status == 200
        waited = conn.closed_within(6)
    assert waited is not None and waited < 6
    assert_alive(p.port)


# ------------------------------------------------------------------------------------------ 5. routing errors


def test_unknown_model_lists_patterns(proxy, mock):
    resp = one(proxy.port, post(MESSAGES, message(model="mistral-x")))
    assert_error(resp, 404, "not_found_error", "mistral-x", "^claude-")
    assert mock.count() == 0


def test_unreachable_translated_provider_is_a_502(proxy, mock):
    """gpt-* routes to an OpenAI-compatible endpoint on a closed port: translated, tried, and reported."""
    resp = one(proxy.port, post(MESSAGES, message(model="gpt-4o")))
    assert_error(resp, 502, "api_error", "openai")
    assert resp.headers["x-cco-provider"] == "openai"
    assert mock.count() == 0


def test_unknown_path_and_wrong_method(proxy):
    assert_error(one(proxy.port, request("GET", "/v2/nothing"), "GET", "/v2/nothing"), 404, "not_found_error")
    resp = one(proxy.port, request("GET", MESSAGES), "GET", MESSAGES)
    assert_error(resp, 405, "invalid_request_error")
    assert resp.headers["allow"] == "POST"


# ---------------------------------------------------------------------------------------------- 6. models

ANTHROPIC = {"anthropic-version": "2023-06-01"}


def get_json(port: int, path: str, headers: dict | None = None, status: int = 200):
    resp = one(port, request("GET", path, headers), "GET", path)
    assert resp.status == status, resp.body
    return resp.json()


def test_models_anthropic_shape_and_paging(proxy):
    full = get_json(proxy.port, "/v1/models?limit=1000", ANTHROPIC)
    assert set(full) >= {"data", "has_more", "first_id", "last_id"}
    ids = [m["id"] for m in full["data"]]
    assert MODEL in ids and len(ids) >= 2 and full["has_more"] is False
    first_page = get_json(proxy.port, "/v1/models", ANTHROPIC)  # the API's default page is 20
    assert [m["id"] for m in first_page["data"]] == ids[:20]
    assert first_page["has_more"] is (len(ids) > 20)
    assert (full["first_id"], full["last_id"]) == (ids[0], ids[-1])
    for item in full["data"]:
        assert item["type"] == "model" and isinstance(item["display_name"], str)
        assert time.strptime(item["created_at"], "%Y-%m-%dT%H:%M:%SZ")
    paged, after = [], None
    for _ in range(len(ids) + 1):
        page = get_json(proxy.port, "/v1/models?limit=7" + (f"&after_id={after}" if after else ""), ANTHROPIC)
        page_ids = [m["id"] for m in page["data"]]
        assert 1 <= len(page_ids) <= 7 and (page["first_id"], page["last_id"]) == (page_ids[0], page_ids[-1])
        paged.extend(page_ids)
        after = page["last_id"]
        if not page["has_more"]:
            break
    assert paged == ids


def test_models_openai_shape(proxy):
    body = get_json(proxy.port, "/v1/models")
    assert body["object"] == "list" and body["data"]
    for item in body["data"]:
        assert item["object"] == "model" and isinstance(item["id"], str) and isinstance(item["created"], int)


def test_model_by_id(proxy):
    info = get_json(proxy.port, f"/v1/models/{MODEL}", ANTHROPIC)
    assert info["id"] == MODEL and info["type"] == "model"
    resp = one(proxy.port, request("GET", "/v1/models/nope", ANTHROPIC), "GET", "/v1/models/nope")
    assert_error(resp, 404, "not_found_error", "nope")


# --------------------------------------------------------------------------------------------- 10. lifecycle


@pytest.mark.parametrize("impl", IMPLS)
def test_sigterm_drains_in_flight_request(impl, make_proxy, mock):
    p = make_proxy(impl)
    with Conn(p.port, timeout=15) as conn, ThreadPoolExecutor(1) as pool:
        conn.send(post(MESSAGES, message("draining"), {"x-mock-mode": "slow", "x-mock-delay-ms": "1500"}))
        assert wait_for(lambda: mock.count() == 1, timeout=5)  # the request is at the upstream
        stopped = pool.submit(p.stop, signal.SIGTERM)  # sends SIGTERM, waits for the exit code

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", p.port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        assert wait_for(refused, timeout=5, interval=0.05), "new connections still accepted while draining"
        resp = conn.response()
        assert reply_text(resp) == "Hello from mock: draining"
        assert resp.headers.get("connection") == "close"
        assert stopped.result(timeout=20) == 0, p.log()


@pytest.mark.parametrize("impl", IMPLS)
def test_sigint_on_idle_proxy_exits_zero(impl, make_proxy):
    p = make_proxy(impl)
    assert p.stop(signal.SIGINT) == 0, p.log()


@pytest.mark.parametrize("impl", IMPLS)
def test_port_in_use(impl, make_proxy, tmp_path):
    p = make_proxy(impl)
    result = run_proxy_cli(tmp_path, impl, ["--port", str(p.port)])
    assert result.returncode == 1, result
    assert str(p.port) in result.stderr and "--port" in result.stderr, result.stderr
    assert_alive(p.port)


def anthropic_route(**fields) -> dict:
    return {"pattern": "^claude-", "provider": "anthropic", "endpoint": "http://127.0.0.1:9", **fields}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("routing,json_path", [
    ({"routes": [anthropic_route(provider="nope")]}, "$.routes[0].provider"),
    ({"routes": [anthropic_route(timeout_ms="x")]}, "$.routes[0].timeout_ms"),
    ({"routes": [anthropic_route()], "fallback_chain": {"claude-a": ["mistral-x"]}},
     '$.fallback_chain["claude-a"][0]'),
], ids=["unknown-provider", "timeout-type", "fallback-unserved"])
def test_invalid_config_exits_2(impl, tmp_path, routing, json_path):
    result = run_proxy_cli(tmp_path, impl, ["--port", str(free_port())], routing=routing)
    assert result.returncode == 2, result
    output = result.stdout + result.stderr
    assert "model-routing.json" in output and json_path in output, output


@pytest.mark.parametrize("impl", IMPLS)
def test_version(impl, tmp_path):
    result = run_proxy_cli(tmp_path, impl, ["--version"])
    assert result.returncode == 0, result
    assert result.stdout.strip() == f"cco-proxy {__version__} ({impl})"


def test_error_headers_are_not_repeated(proxy):
    """Each error answer says x-should-retry once (h11 would accept a repeat; clients may not)."""
    resp = one(proxy.port, post(MESSAGES, b'{"model": "mistral-x", "max_tokens": 1}'))
    names = [name.lower() for name, _ in resp.raw_headers]
    assert resp.status == 404 and names.count("x-should-retry") == 1
