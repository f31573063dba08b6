"""Raw-socket HTTP helpers for integration tests: send exact bytes, parse answers strictly with h11."""

from __future__ import annotations

import socket
import time

import h11


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def recv_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


class H11Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, raw_headers: list) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.raw_headers = raw_headers

    def json(self):
        import json

        return json.loads(self.body)


def parse_responses(raw: bytes, requests: list[tuple[str, str]]) -> list[H11Response]:
    """Parses the bytes a server sent in answer to `requests` ([(method, target)], in order) with h11.

    Raises h11.RemoteProtocolError if any response is not valid HTTP/1.1.
    """
    conn = h11.Connection(our_role=h11.CLIENT)
    conn.receive_data(raw)
    conn.receive_data(b"")  # the server closed (or we read all there is)
    out = []
    for method, target in requests:
        conn.send(h11.Request(method=method, target=target, headers=[("host", "127.0.0.1")]))
        conn.send(h11.EndOfMessage())
        status, headers, body, raw_headers = None, {}, [], []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                raise AssertionError(f"incomplete response to {method} {target}: {raw[-300:]!r}")
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                raw_headers = [(k.decode(), v.decode()) for k, v in event.headers]
                headers = {k: v for k, v in raw_headers}
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"connection closed before a response to {method} {target}")
        out.append(H11Response(status, headers, b"".join(body), raw_headers))
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            break
        conn.start_next_cycle()
    return out


def exchange(port: int, data: bytes, requests: list[tuple[str, str]], timeout: float = 10.0,
             shutdown_write: bool = False) -> list[H11Response]:
    """Sends `data` on a new connection, reads until the server closes (the last request should say
    `connection: close`), parses with h11. `shutdown_write` half-closes first — which the proxy takes as the
    client leaving: requests still in flight are cancelled."""
    with connect(port, timeout) as sock:
        sock.sendall(data)
        if shutdown_write:
            sock.shutdown(socket.SHUT_WR)
        raw = recv_until_closed(sock, timeout)
    return parse_responses(raw, requests)


def post(path: str, body: bytes, headers: dict[str, str] | None = None, keep_alive: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(body)}",
             "content-type: application/json", "anthropic-version: 2023-06-01", "x-api-key: sk-test"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
