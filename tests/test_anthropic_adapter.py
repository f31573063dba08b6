"""Pure functions of the Anthropic adapter: upstream heads, response headers, stream observation, batch URLs."""

from __future__ import annotations

import json

from cco.config import RouteSpec
from cco.providers import anthropic
from cco.routing import Route

HEADERS = [(b"host", b"127.0.0.1:8000"), (b"content-length", b"2"), (b"connection", b"keep-alive, x-hop"),
           (b"x-hop", b"1"), (b"te", b"trailers"), (b"accept-encoding", b"gzip, br"), (b"x-api-key", b"sk-client"),
           (b"anthropic-version", b"2023-06-01"), (b"anthropic-beta", b"a,b"), (b"x-cco-cache", b"bypass"),
           (b"x-stainless-lang", b"js"), (b"user-agent", b"claude-cli/2")]


def route(**kw) -> Route:
    return Route(0, RouteSpec(pattern="^claude-", provider="anthropic", endpoint="https://api.example.com/base", **kw))


def parse_head(head: bytes):
    lines = head.decode().split("\r\n")
    assert lines[-2:] == ["", ""]
    names = [line.split(": ", 1)[0] for line in lines[1:-2]]
    return lines[0], dict(line.split(": ", 1) for line in lines[1:-2]), names


def test_request_head_forwards_end_to_end_headers_only():
    request_line, headers, names = parse_head(
        anthropic.request_head(b"POST", b"/v1/messages", b"beta=true", HEADERS, route(), 2))
    assert request_line == "POST /base/v1/messages?beta=true HTTP/1.1"
    assert headers["host"] == "api.example.com" and headers["content-length"] == "2"
    assert headers["x-api-key"] == "sk-client" and headers["anthropic-beta"] == "a,b"
    for dropped in ("connection", "x-hop", "te", "accept-encoding", "x-cco-cache"):
        assert dropped not in headers
    assert len(names) == len(set(names))


def test_proxy_key_replaces_client_credentials(monkeypatch):
    monkeypatch.setenv("CCO_TEST_PROXY_KEY", "sk-proxy")
    r = route(api_key_env="CCO_TEST_PROXY_KEY", headers={"X-Team": "core"})
    _, headers, _ = parse_head(anthropic.request_head(
        b"POST", b"/v1/messages", b"", HEADERS + [(b"authorization", b"Bearer sk-client")], r, 2))
    assert headers["x-api-key"] == "sk-proxy" and "authorization" not in headers and headers["x-team"] == "core"


def test_response_headers_drop_framing_and_return_request_id():
    block, request_id = anthropic.response_headers(
        [(b"content-type", b"application/json"), (b"content-length", b"5"), (b"transfer-encoding", b"chunked"),
         (b"connection", b"keep-alive"), (b"request-id", b"req_9"), (b"retry-after", b"3")])
    assert block == b"content-type: application/json\r\nrequest-id: req_9\r\nretry-after: 3\r\n"
    assert request_id == b"req_9"


def test_results_url_rewritten_for_a_batch_and_a_page():
    r = route()
    batch = {"id": "b1", "results_url": "https://api.example.com/base/v1/messages/batches/b1/results"}
    out = json.loads(anthropic.rewrite_results_urls(json.dumps(batch).encode(), "http://proxy:8000/p/x", r))
    assert out["results_url"] == "http://proxy:8000/p/x/v1/messages/batches/b1/results"
    page = {"data": [batch, {"id": "b2", "results_url": None}], "has_more": False}
    out = json.loads(anthropic.rewrite_results_urls(json.dumps(page).encode(), "http://p", r))
    assert out["data"][0]["results_url"] == "http://p/v1/messages/batches/b1/results"
    assert out["data"][1]["results_url"] is None
    assert anthropic.rewrite_results_urls(b"not json", "http://p", r) == b"not json"
