"""The cache-hit lane: answers a repeated non-streaming Messages request straight from the parsed request parts.

Why it exists: a hit through the general path (Request object, endpoint table, cache plan, entry view, response
helpers, analytics row) costs about 130 k instructions in CPython, four times a bare httptools server's whole
request. This lane does the same work in one function over the header list and the body, and declines (returns
False) whenever anything is out of the ordinary, so that the general path — the reference behaviour — handles
it: another endpoint or method, a control header (`x-cco-cache`, `cache-control`), overrides enabled, a stream,
a field the proxy would reject or decode specially, a credential not seen to succeed, a miss, or an entry whose
stats are not yet settled (its first hit takes the general path). What it answers is byte for byte what the
general path would answer (tests/test_fast_hit.py proves it on both twins), and it records the same row.
"""

from __future__ import annotations

import time

import xxhash

from cco._fast.key_py import JsonSyntaxError, scan_request

ENDPOINTS = {b"/v1/messages": "/v1/messages", b"/v1/messages?beta=true": "/v1/messages",
             b"/v1/messages/count_tokens": "/v1/messages/count_tokens",
             b"/v1/messages/count_tokens?beta=true": "/v1/messages/count_tokens"}
_HEAD_200 = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
_HIT_LINE = b"x-cco-cache: hit\r\nrequest-id: "
_COST_ZERO = b"x-cco-cost-usd: 0.0\r\n"


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

    def reuse_scan(self, body: bytes):
        """The scan of `body` if the lane just made it (the same bytes object), else None."""
        if self.last_body is body:
            self.last_body = None
            return self.last_scan
        return None

    def reuse_key(self, scan, context: bytes):
        if scan is self.last_scan and context == self.last_context:
            self.last_scan = None
            return self.last_key
        return None

    def serve(self, method: bytes, url: bytes, headers: list, body: bytes, received_at: float, transport) -> bool:
        if method != b"POST":
            return False
        endpoint = ENDPOINTS.get(url)
        if endpoint is None:
            return False
        app = self.app
        cache = app.cache
        if cache is None or app.draining or app.config.overrides.enabled:
            return False
        api_key = authorization = version = beta = project = agent = None
        for name, value in headers:
            if name == b"x-api-key":
                if api_key is None:
                    api_key = value
            elif name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"anthropic-version":
                if version is None:
                    version = value
            elif name == b"anthropic-beta":
                if beta is None:
                    beta = value
            elif name == b"x-cco-project":
                if project is None:
                    project = value
            elif name == b"x-cco-agent":
                if agent is None:
                    agent = value
            elif name == b"x-cco-cache" or name == b"cache-control":
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
        if stream is not None and stream != b"false" and stream != b"null":
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
            _HEAD_200, b"%d\r\n" % len(answer), lines, _HIT_LINE, request_id,
            b"\r\nx-cco-overhead-ms: %.3f\r\n" % ((now - received_at) * 1000), _COST_ZERO, b"\r\n", answer)))
        sink = app.recorder.sink
        if sink is not None:
            usage = stats.usage
            cost = stats.hit_cost
            latency_ms = (time.perf_counter() - received_at) * 1000
            sink((
                time.time() - latency_ms / 1000, project_name,
                agent.decode("utf-8", "replace") if agent else None, model, model, route.provider, endpoint, 0,
                200, None, "hit",
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
