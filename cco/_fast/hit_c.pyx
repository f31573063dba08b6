# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The cache-hit lane, compiled (twin of hit_py.py: its docstring states what the lane answers and what it
declines; tests/test_fast_hit.py runs both against the general path).

Same steps in the same order; the differences are mechanical: header names compared as C strings, numbers
formatted with snprintf instead of bytes %-formatting, the response and the row built without temporaries.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdio cimport snprintf
from libc.string cimport memchr

import time

import xxhash

from cco._fast.hit_py import ENDPOINTS as _ENDPOINTS
from cco._fast.key_py import JsonSyntaxError

cdef dict ENDPOINTS = _ENDPOINTS
cdef bytes _HEAD_200 = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
cdef bytes _HIT_LINE = b"x-cco-cache: hit\r\nrequest-id: "
cdef bytes _COST_ZERO = b"x-cco-cost-usd: 0.0\r\n"
cdef object _perf_counter = time.perf_counter
cdef object _time = time.time
cdef object _xxh3_64 = xxhash.xxh3_64_intdigest


cdef inline bint _is_uint(bytes raw):
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(raw)
    cdef const char* p = PyBytes_AS_STRING(raw)
    if n == 0:
        return False
    for i in range(n):
        if p[i] < 48 or p[i] > 57:
            return False
    return True


@cython.final
cdef class HitLane:
    cdef public object app
    cdef public object scan
    cdef public bytes request_id_prefix
    cdef public object request_counter
    cdef public object model_headers
    cdef public object last_body
    cdef public object last_scan
    cdef public object last_context
    cdef public object last_key

    def __init__(self, app, scan=None):
        if scan is None:
            from cco._fast.key_c import scan_request as scan
        self.app = app
        self.scan = scan
        self.request_id_prefix = b""
        self.request_counter = None
        self.model_headers = None
        self.last_body = None
        self.last_scan = None
        self.last_context = None
        self.last_key = None

    def reuse_scan(self, bytes body):
        if self.last_body is body:
            self.last_body = None
            return self.last_scan
        return None

    def reuse_key(self, scan, bytes context):
        if scan is self.last_scan and self.last_context is not None and context == self.last_context:
            self.last_scan = None
            return self.last_key
        return None

    def serve(self, bytes method, bytes url, list headers, bytes body, double received_at, transport):
        cdef bytes name, value, raw, stream, max_tokens, model_bytes, key, answer, request_id
        cdef bytes api_key = None, authorization = None, version = None, beta = None, project = None, agent = None
        cdef bytes scope_bytes, credential_value, context
        cdef tuple header
        cdef object endpoint, app, cache, route, stats, scan, usage, cost, sink
        cdef double now, latency_ms
        cdef char buf[64]
        cdef int written
        if method != b"POST":
            return False
        endpoint = ENDPOINTS.get(url)
        if endpoint is None:
            return False
        app = self.app
        cache = app.cache
        if cache is None or app.draining or app.config.overrides.enabled:
            return False
        for header in headers:
            name = <bytes>header[0]
            value = <bytes>header[1]
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
        if raw is None or PyBytes_GET_SIZE(raw) < 3:
            return False
        if PyBytes_AS_STRING(raw)[0] != 34 or PyBytes_AS_STRING(raw)[PyBytes_GET_SIZE(raw) - 1] != 34:
            return False
        if memchr(PyBytes_AS_STRING(raw), 92, PyBytes_GET_SIZE(raw)) != NULL:
            return False
        stream = scan.value(b"stream")
        if stream is not None and stream != b"false" and stream != b"null":
            return False
        max_tokens = scan.value(b"max_tokens")
        if max_tokens is not None and not _is_uint(max_tokens) and max_tokens != b"null":
            return False
        model_bytes = raw[1:PyBytes_GET_SIZE(raw) - 1]
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
        credential = _xxh3_64(credential_value) if credential_value else 0
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
        self.last_body = self.last_scan = None
        cache.hits += 1
        stats.hits += 1
        stats.last_hit = _time()
        stats.saved += stats.cost
        cache.saved_cost += stats.cost
        written = snprintf(buf, sizeof(buf), b"%012llx", <unsigned long long>next(self.request_counter))
        request_id = self.request_id_prefix + PyBytes_FromStringAndSize(buf, written)
        now = _perf_counter()
        written = snprintf(buf, sizeof(buf), b"%zd\r\n", PyBytes_GET_SIZE(answer))
        length_line = PyBytes_FromStringAndSize(buf, written)
        written = snprintf(buf, sizeof(buf), b"\r\nx-cco-overhead-ms: %.3f\r\n", (now - received_at) * 1000)
        overhead_line = PyBytes_FromStringAndSize(buf, written)
        lines = route.cco_headers.get(model)
        if lines is None:
            lines = self.model_headers(route, model)
        transport.write(b"".join((_HEAD_200, length_line, lines, _HIT_LINE,
                                  request_id, overhead_line, _COST_ZERO, b"\r\n", answer)))
        sink = app.recorder.sink
        if sink is not None:
            usage = stats.usage
            cost = stats.hit_cost
            latency_ms = (_perf_counter() - received_at) * 1000
            recorder = app.recorder
            key_hash = recorder.key_hashes.get(credential_value) if credential_value else None
            if key_hash is None:
                key_hash = recorder.key_hash_of(credential_value)
            if usage is not None:
                tokens = (usage.input_tokens, usage.output_tokens, usage.cache_creation_tokens,
                          usage.cache_creation_1h_tokens, usage.cache_read_tokens)
            else:
                tokens = (0, 0, 0, 0, 0)
            sink((
                _time() - latency_ms / 1000, project_name,
                agent.decode("utf-8", "replace") if agent else None, model, model, route.provider,
                endpoint, 0, 200, None, "hit", tokens[0], tokens[1], tokens[2], tokens[3], tokens[4], 0,
                cost.cost, cost.would_be_cost, cost.savings, int(cost.unpriced), latency_ms,
                (now - received_at) * 1000, None, 0, None, request_id.decode("latin-1"),
                key_hash,
            ))
        return True
