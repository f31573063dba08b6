"""The cache-hit lane: answers a repeated Messages request straight from the parsed request parts.

Why it exists: a hit through the general path (Request object, endpoint table, cache plan, entry view, response
helpers, analytics row) costs about 130 k instructions in CPython, four times a bare httptools server's whole
request. This lane does the same work in one function over the header list and the body, and declines (returns
False) whenever anything is out of the ordinary, so that the general path — the reference behaviour — handles
it: another endpoint or method, a control header (`x-cco-cache`, `cache-control`) or a framing one
(`transfer-encoding`, `expect`, `upgrade`), overrides enabled, a field the proxy would reject or decode specially, a
credential not seen to succeed, a miss, an entry whose stats are not yet settled (its first hit takes the general
path), or a stream hit on an entry whose event-stream form the cache does not hold yet (the general path
synthesizes it and keeps it in `ResponseCache.streams`). What it answers is byte for byte what the general path
would answer (tests/test_fast_hit.py proves it on both twins), and it records the same row.

Two entries. `serve` takes a request httptools already parsed. `serve_data` goes one step earlier: given what a
connection just read, at a request boundary, it reads the request heads itself (`parse_head`) and answers
every complete request it owns, pipelined ones included, without httptools' per-header callbacks; it stops at the
first request it does not own and returns how many bytes it answered, and the connection feeds the rest to
httptools. `parse_head` accepts only a strict subset of HTTP/1.1: `POST <cached endpoint> HTTP/1.1`, token header
names, values free of control bytes, one decimal Content-Length with the whole body already read, no
Transfer-Encoding, Expect or Upgrade, no Connection other than keep-alive, within the connection's size limits.
Anything else is left to httptools, which answers the errors (400, 413, 431) the general way.
"""

from __future__ import annotations

import re
import time

import xxhash

from cco._fast.key_py import JsonSyntaxError, scan_request

ENDPOINTS = {b"/v1/messages": "/v1/messages", b"/v1/messages?beta=true": "/v1/messages",
             b"/v1/messages/count_tokens": "/v1/messages/count_tokens",
             b"/v1/messages/count_tokens?beta=true": "/v1/messages/count_tokens"}
_HEAD_200 = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
_HIT_LINE = b"x-cco-cache: hit\r\nrequest-id: "
_COST_ZERO = b"x-cco-cost-usd: 0.0\r\n"
_HEAD_200_SSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: "
_STREAM_LINES = b"x-accel-buffering: no\r\ncache-control: no-cache\r\n"  # as pipeline.serve_entry sends them

# Header fields parse_head reads, by index into its values list: the lane's inputs.
CAPTURED = {b"x-api-key": 0, b"authorization": 1, b"anthropic-version": 2, b"anthropic-beta": 3, b"x-cco-project": 4,
            b"x-cco-agent": 5}
# Fields whose presence means the request is not a plain one (framing, control headers): httptools takes it.
DECLINED = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"x-cco-cache", b"cache-control"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def parse_head(data: bytes, start: int, max_head: int, max_headers: int, max_body: int):
    """The request at data[start:] if the lane may read it itself: (endpoint, captured values, body start, body end),
    else None. See the module docstring for what is accepted."""
    end = data.find(b"\r\n\r\n", start)
    if end < 0 or end + 4 - start > max_head:
        return None
    line_end = data.find(b"\r\n", start)
    line = data[start:line_end]
    if line[:5] != b"POST " or line[-9:] != b" HTTP/1.1":
        return None
    endpoint = ENDPOINTS.get(line[5:-9])
    if endpoint is None:
        return None
    head = data[line_end + 2:end]
    lines = head.split(b"\r\n") if head else []
    if len(lines) > max_headers:
        return None
    values: list = [None] * 6
    length = -1
    for field in lines:
        if _CONTROL.search(field):  # a control byte, or a bare CR or LF, in a field line
            return None
        name, colon, value = field.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            return None
        name = name.lower()
        stripped = value.strip(b" \t")
        index = CAPTURED.get(name)
        if index is not None:
            if stripped != value.lstrip(b" \t"):
                return None  # trailing whitespace in a value the lane reads: let httptools decide what it is
            if values[index] is None:
                values[index] = stripped
        elif name == b"content-length":
            if length >= 0 or not stripped.isdigit() or len(stripped) > 15:
                return None
            length = int(stripped)
        elif name == b"connection":
            if stripped.lower() != b"keep-alive":
                return None
        elif name in DECLINED:
            return None
    body_start = end + 4
    if length < 0 or length > max_body or body_start + length > len(data):
        return None
    return endpoint, values, body_start, body_start + length


class HitLane:
    """Bound to one App; reads its live config, router, cache and recorder on every call (reload-safe)."""

    def __init__(self, app, scan=scan_request) -> None:
        self.app = app
        self.scan = scan
        self.request_id_prefix = b""  # set by the app: the pipeline's request ids (same prefix, same counter)
        self.request_counter = None
        self.model_headers = None  # set by the app: the pipeline's x-cco-provider/x-cco-model lines
        # What the last declined request cost to find out, for the general path to reuse (`reuse_scan`,
        # `reuse_key`): a miss would otherwise scan and key its body twice.
        self.last_body = None
        self.last_scan = None
        self.last_context = None
        self.last_key = None

    def declined(self, body: bytes) -> bool:
        """Whether the lane has just declined `body` (its scan waits for the general path): when `serve_data`
        declined a request that httptools then parses whole, offering it to `serve` again would only redo the
        scan, the key and the lookup of a miss. The scan is then kept under this very `body` object, so that
        `reuse_scan` finds it without comparing the bytes again."""
        last = self.last_body
        if last is not None and (last is body or last == body):
            self.last_body = body
            return True
        return False

    def reuse_scan(self, body: bytes):
        """The scan of `body` if the lane just made it (the same bytes, from `serve` or `serve_data`), else None."""
        if self.last_body is not None and (self.last_body is body or self.last_body == body):
            self.last_body = None
            return self.last_scan
        return None

    def reuse_key(self, scan, context: bytes):
        if scan is self.last_scan and context == self.last_context:
            self.last_scan = None
            return self.last_key
        return None

    def serve_data(self, data: bytes, transport, limits) -> int:
        """Answers the complete requests at the start of `data` (read at a request boundary) that the lane owns;
        returns how many bytes it answered (0: none)."""
        at = 0
        size = len(data)
        max_head, max_headers, max_body = limits.max_header_bytes, limits.max_headers, limits.max_body_bytes
        while at < size:
            received_at = time.perf_counter()
            head = parse_head(data, at, max_head, max_headers, max_body)
            if head is None:
                break
            endpoint, values, body_start, body_end = head
            if not self._serve(endpoint, *values, data[body_start:body_end], received_at, transport):
                break
            at = body_end
        return at

    def serve(self, method: bytes, url: bytes, headers: list, body: bytes, received_at: float, transport) -> bool:
        if method != b"POST":
            return False
        endpoint = ENDPOINTS.get(url)
        if endpoint is None:
            return False
        values: list = [None] * 6  # as parse_head: CAPTURED fields, first value each; a DECLINED field declines
        for name, value in headers:
            index = CAPTURED.get(name)
            if index is not None:
                if values[index] is None:
                    values[index] = value
            elif name in DECLINED:
                return False
        return self._serve(endpoint, *values, body, received_at, transport)

    def _serve(self, endpoint: str, api_key, authorization, version, beta, project, agent, body: bytes,
               received_at: float, transport) -> bool:
        app = self.app
        cache = app.cache
        if cache is None or app.draining or app.config.overrides.enabled:
            return False
        try:
            scan = self.scan(body)
        except JsonSyntaxError:
            return False
        self.last_body = body
        self.last_scan = scan
        self.last_context = None
        raw = scan.value(b"model")
        if raw is None or len(raw) < 3 or raw[0] != 34 or raw[-1] != 34 or b"\\" in raw:
            return False
        stream = scan.value(b"stream")
        streaming = stream == b"true"
        if stream is not None and not streaming and stream != b"false" and stream != b"null":
            return False
        if streaming and endpoint != "/v1/messages":
            return False
        max_tokens = scan.value(b"max_tokens")
        if max_tokens is not None and not max_tokens.isdigit() and max_tokens != b"null":
            return False
        model_bytes = raw[1:-1]
        try:
            model = model_bytes.decode()
        except UnicodeDecodeError:
            return False
        router = app.router
        route = router.memo.get(model, False)
        if route is False:
            route = router.match(model)
        if route is None:
            return False
        credential_value = api_key or authorization
        credential = xxhash.xxh3_64_intdigest(credential_value) if credential_value else 0
        if route.api_key is None and (credential == 0 or credential not in cache.verified):
            return False
        scope = cache.scope
        project_name = project.decode("utf-8", "replace") if project else app.default_project
        if scope == "global":
            scope_bytes = b"global"
        elif scope == "project":
            scope_bytes = b"project:" + project_name.encode()
        else:
            scope_bytes = b"key:%x" % credential
        context = b"\x00".join((model_bytes, route.provider_bytes, endpoint.encode(), scope_bytes, version or b"",
                                 beta or b""))
        key = scan.key(context)
        self.last_context = context
        self.last_key = key
        answer = cache.lru.get(key)
        if answer is None:
            return False
        stats = cache.records.get(key)
        if stats is None or stats.hit_cost is None or stats.preview is None or stats.cost is None:
            return False
        if streaming:
            answer = cache.streams.get(key)
            if answer is None:
                return False
        # Served: the same accounting as ResponseCache.get and the same response as pipeline.serve_entry.
        self.last_body = self.last_scan = None
        cache.hits += 1
        stats.hits += 1
        stats.last_hit = time.time()
        stats.saved += stats.cost
        cache.saved_cost += stats.cost
        request_id = self.request_id_prefix + b"%012x" % next(self.request_counter)
        now = time.perf_counter()
        lines = route.cco_headers.get(model)
        if lines is None:
            lines = self.model_headers(route, model)
        transport.write(b"".join((
            _HEAD_200_SSE if streaming else _HEAD_200, b"%d\r\n" % len(answer), lines, _HIT_LINE, request_id,
            b"\r\nx-cco-overhead-ms: %.3f\r\n" % ((now - received_at) * 1000),
            _STREAM_LINES if streaming else _COST_ZERO, b"\r\n", answer)))
        sink = app.recorder.sink
        if sink is not None:
            usage = stats.usage
            cost = stats.hit_cost
            latency_ms = (time.perf_counter() - received_at) * 1000
            sink((
                time.time() - latency_ms / 1000, project_name,
                agent.decode("utf-8", "replace") if agent else None, model, model, route.provider, endpoint,
                int(streaming), 200, None, "hit",
                usage.input_tokens if usage is not None else 0, usage.output_tokens if usage is not None else 0,
                usage.cache_creation_tokens if usage is not None else 0,
                usage.cache_creation_1h_tokens if usage is not None else 0,
                usage.cache_read_tokens if usage is not None else 0, 0, cost.cost, cost.would_be_cost,
                cost.savings, int(cost.unpriced), latency_ms, (now - received_at) * 1000, None, 0, None,
                request_id.decode("latin-1"), _key_hash(app.recorder, credential_value),
            ))
        return True


def _key_hash(recorder, credential: bytes | None):
    found = recorder.key_hashes.get(credential) if credential else None
    return found if found is not None else recorder.key_hash_of(credential)
