# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The cache-hit lane, compiled (twin of hit_py.py: its docstring states what the lane answers and what it
declines; tests/test_fast_hit.py runs both against the general path).

Same steps in the same order; the differences are mechanical: header names compared as C strings, numbers
formatted with snprintf instead of bytes %-formatting, the response and the row built without temporaries, and
request heads read by a C loop over the buffer (`parse_head`, the same acceptance rules as the twin's).
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.string cimport memcpy

cdef extern from "Python.h":
    void Py_SET_SIZE(object o, Py_ssize_t size)
    void PyObject_GC_UnTrack(void* op)
from libc.string cimport memchr, memcmp

import time

import xxhash

from cco._fast.hit_py import _HEAD_200_SSE as _HEAD_200_SSE_PY, _STREAM_LINES as _STREAM_LINES_PY
from cco._fast.hit_py import ENDPOINTS as _ENDPOINTS
from cco.analytics.schema import COLUMNS
from cco._fast.key_c cimport MAX_MEMBERS, Member, find_member, members_key, members_scan, scan_members

cdef dict ENDPOINTS = _ENDPOINTS
cdef bytes _HEAD_200 = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
cdef bytes _HIT_LINE = b"x-cco-cache: hit\r\nrequest-id: "
cdef bytes _COST_ZERO = b"x-cco-cost-usd: 0.0\r\n"
cdef bytes _HEAD_200_SSE = _HEAD_200_SSE_PY
cdef bytes _STREAM_LINES = _STREAM_LINES_PY
cdef object _perf_counter = time.perf_counter
cdef object _time = time.time
cdef object _xxh3_64 = xxhash.xxh3_64_intdigest


# Header fields the lane reads (index into Head.start/Head.end), as in hit_py.CAPTURED
cdef enum:
    H_API_KEY = 0
    H_AUTHORIZATION = 1
    H_VERSION = 2
    H_BETA = 3
    H_PROJECT = 4
    H_AGENT = 5
    H_COUNT = 6

# What parse_head does with a header field, by name (hit_py: CAPTURED, DECLINED, content-length, connection)
cdef enum:
    F_OTHER = -1
    F_LENGTH = -2
    F_CONNECTION = -3
    F_DECLINE = -4

cdef struct FieldName:
    const char* name  # lower-case
    Py_ssize_t length
    int kind  # an H_* index (captured) or an F_* action

cdef FieldName _FIELDS[13]
_FIELDS[:] = [
    FieldName(b"x-api-key", 9, H_API_KEY), FieldName(b"authorization", 13, H_AUTHORIZATION),
    FieldName(b"anthropic-version", 17, H_VERSION), FieldName(b"anthropic-beta", 14, H_BETA),
    FieldName(b"x-cco-project", 13, H_PROJECT), FieldName(b"x-cco-agent", 11, H_AGENT),
    FieldName(b"content-length", 14, F_LENGTH), FieldName(b"connection", 10, F_CONNECTION),
    FieldName(b"transfer-encoding", 17, F_DECLINE), FieldName(b"expect", 6, F_DECLINE),
    FieldName(b"upgrade", 7, F_DECLINE), FieldName(b"x-cco-cache", 11, F_DECLINE),
    FieldName(b"cache-control", 13, F_DECLINE),
]

cdef struct Head:
    int endpoint                # index into _ENDPOINT_NAMES
    Py_ssize_t body_start
    Py_ssize_t body_end
    Py_ssize_t start[6]         # value spans of the captured fields; start -1 when absent
    Py_ssize_t end[6]

cdef tuple _ENDPOINT_NAMES = ("/v1/messages", "/v1/messages/count_tokens")
cdef dict _ENDPOINT_BYTES = {name: name.encode() for name in _ENDPOINT_NAMES}


cdef inline bint _is_tchar(unsigned char c) noexcept nogil:
    # RFC 9110 token characters
    if c >= 97 and c <= 122 or c >= 65 and c <= 90 or c >= 48 and c <= 57:
        return True
    return (c == 33 or c == 35 or c == 36 or c == 37 or c == 38 or c == 39 or c == 42 or c == 43 or c == 45
            or c == 46 or c == 94 or c == 95 or c == 96 or c == 124 or c == 126)


cdef inline bint _name_is(const unsigned char* p, Py_ssize_t n, const char* lower, Py_ssize_t length) noexcept nogil:
    """p[:n] equals the lower-case name, ignoring ASCII case."""
    cdef Py_ssize_t k
    cdef unsigned char c
    if n != length:
        return False
    for k in range(n):
        c = p[k]
        if c >= 65 and c <= 90:
            c += 32
        if c != <unsigned char>lower[k]:
            return False
    return True


cdef inline int _field_kind(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef int k
    for k in range(13):
        if _FIELDS[k].length == n and _name_is(p, n, _FIELDS[k].name, n):
            return _FIELDS[k].kind
    return F_OTHER


cdef bint parse_head(const unsigned char* p, Py_ssize_t start, Py_ssize_t size, Py_ssize_t max_head,
                     Py_ssize_t max_headers, Py_ssize_t max_body, Head* h) noexcept nogil:
    """The twin of hit_py.parse_head: fills `h` and returns True when the lane may read the request at p[start:]."""
    cdef Py_ssize_t i = start, limit, name_start, name_end, value_start, value_end, trimmed, fields = 0
    cdef Py_ssize_t length = -1, target_start, target_len
    cdef unsigned char c
    cdef int k
    limit = start + max_head  # the head, blank line included, must end by here
    if limit > size:
        limit = size
    # request line: POST <target> HTTP/1.1
    if limit - i < 5 or memcmp(p + i, b"POST ", 5) != 0:
        return False
    i += 5
    target_start = i
    while i < limit and p[i] != 32 and p[i] != 13 and p[i] != 10:
        i += 1
    target_len = i - target_start
    if limit - i < 11 or memcmp(p + i, b" HTTP/1.1\r\n", 11) != 0:
        return False
    if target_len == 12 and memcmp(p + target_start, b"/v1/messages", 12) == 0:
        h.endpoint = 0
    elif target_len == 22 and memcmp(p + target_start, b"/v1/messages?beta=true", 22) == 0:
        h.endpoint = 0
    elif target_len == 25 and memcmp(p + target_start, b"/v1/messages/count_tokens", 25) == 0:
        h.endpoint = 1
    elif target_len == 35 and memcmp(p + target_start, b"/v1/messages/count_tokens?beta=true", 35) == 0:
        h.endpoint = 1
    else:
        return False
    i += 11
    for k in range(H_COUNT):
        h.start[k] = -1
        h.end[k] = -1
    while True:
        if i + 2 > limit:
            return False
        if p[i] == 13:
            if p[i + 1] != 10:
                return False
            i += 2
            break
        fields += 1
        if fields > max_headers:
            return False
        name_start = i
        while i < limit and _is_tchar(p[i]):
            i += 1
        name_end = i
        if name_end == name_start or i >= limit or p[i] != 58:  # ':'
            return False
        i += 1
        while i < limit and (p[i] == 32 or p[i] == 9):
            i += 1
        value_start = i
        while i < limit:
            c = p[i]
            if c < 32 and c != 9 or c == 127:
                break
            i += 1
        if i + 1 >= limit or p[i] != 13 or p[i + 1] != 10:
            return False
        value_end = i
        i += 2
        trimmed = value_end
        while trimmed > value_start and (p[trimmed - 1] == 32 or p[trimmed - 1] == 9):
            trimmed -= 1
        k = _field_kind(p + name_start, name_end - name_start)
        if k == F_DECLINE:
            return False
        if k == F_LENGTH:
            if length >= 0 or trimmed == value_start or trimmed - value_start > 15:
                return False
            length = 0
            while value_start < trimmed:
                c = p[value_start]
                if c < 48 or c > 57:
                    return False
                length = length * 10 + (c - 48)
                value_start += 1
        elif k == F_CONNECTION:
            if not _name_is(p + value_start, trimmed - value_start, b"keep-alive", 10):
                return False
        if k >= 0:
            if trimmed != value_end:
                return False  # trailing whitespace in a value the lane reads: let httptools decide what it is
            if h.start[k] < 0:
                h.start[k] = value_start
                h.end[k] = value_end
    if length < 0 or length > max_body or i + length > size:
        return False
    h.body_start = i
    h.body_end = i + length
    return True


cdef inline bytes _span(bytes data, Head* h, int k):
    if h.start[k] < 0:
        return None
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + h.start[k], h.end[k] - h.start[k])


cdef inline bint _span_is(const unsigned char* p, Member* m, const char* word, Py_ssize_t length) noexcept:
    return m.value_end - m.value_start == length and memcmp(p + m.value_start, word, length) == 0


cdef inline bint _span_is_uint(const unsigned char* p, Member* m) noexcept:
    cdef Py_ssize_t i
    if m.value_end == m.value_start:
        return False
    for i in range(m.value_start, m.value_end):
        if p[i] < 48 or p[i] > 57:
            return False
    return True


cdef bytes _OVERHEAD_LINE = b"\r\nx-cco-overhead-ms: "
if ((len(COLUMNS), COLUMNS[0], COLUMNS[21], COLUMNS[22], COLUMNS[26])
        != (28, "ts", "latency_ms", "ttfb_ms", "request_id")):
    raise ImportError("hit_c's row layout does not match cco.analytics.schema.COLUMNS")
# row columns that vary per hit (schema.COLUMNS): ts, latency_ms, ttfb_ms, request_id
cdef enum:
    ROW_SIZE = 28
    ROW_TS = 0
    ROW_LATENCY = 21
    ROW_TTFB = 22
    ROW_REQUEST_ID = 26


cdef inline Py_ssize_t _put(char* out, Py_ssize_t at, bytes part):
    memcpy(out + at, PyBytes_AS_STRING(part), PyBytes_GET_SIZE(part))
    return at + PyBytes_GET_SIZE(part)


cdef inline int _uint_text(unsigned long long value, char* out) noexcept nogil:
    """Decimal digits of value (as %llu); returns their count."""
    cdef char digits[24]
    cdef int n = 0, k
    while True:
        digits[n] = <char>(48 + value % 10)
        n += 1
        value //= 10
        if value == 0:
            break
    for k in range(n):
        out[k] = digits[n - 1 - k]
    return n


cdef inline int _hex_width(unsigned long long value) noexcept nogil:
    cdef int n = 12
    while n < 16 and (value >> (4 * n)) != 0:
        n += 1
    return n


cdef inline int _hex_text(unsigned long long value, char* out) noexcept nogil:
    """Lower-case hex, at least 12 digits (as %012llx); returns the count."""
    cdef int n = _hex_width(value), k
    for k in range(n):
        out[n - 1 - k] = b"0123456789abcdef"[value & 15]
        value >>= 4
    return n


cdef inline int _ms_text(double ms, char* out) noexcept nogil:
    """ms with three decimals (as %.3f, for 0 <= ms < 1e15); returns the count (at most 24)."""
    cdef unsigned long long thousandths
    cdef int n
    if ms < 0:
        ms = 0
    if ms > 1e15:
        ms = 1e15
    thousandths = <unsigned long long>(ms * 1000 + 0.5)
    n = _uint_text(thousandths // 1000, out)
    out[n] = 46
    out[n + 1] = <char>(48 + (thousandths // 100) % 10)
    out[n + 2] = <char>(48 + (thousandths // 10) % 10)
    out[n + 3] = <char>(48 + thousandths % 10)
    return n + 4


cdef tuple _row(tuple template, double ts, double latency_ms, double ttfb_ms, str request_id):
    """A copy of the row template with the per-hit values filled in."""
    cdef tuple row = PyTuple_New(ROW_SIZE)
    cdef object item
    cdef int i
    for i in range(ROW_SIZE):
        if i == ROW_TS:
            item = ts
        elif i == ROW_LATENCY:
            item = latency_ms
        elif i == ROW_TTFB:
            item = ttfb_ms
        elif i == ROW_REQUEST_ID:
            item = request_id
        else:
            item = <object>PyTuple_GET_ITEM(template, i)
        Py_INCREF(item)
        PyTuple_SET_ITEM(row, i, item)
    # Only numbers, strings and None: the row can hold no cycle, so the cyclic collector need not visit it while
    # it waits in the writer's queue (CPython would untrack it only at its first collection).
    PyObject_GC_UnTrack(<void*>row)
    return row


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
    cdef tuple row_memo  # (stats, cost, route, project, agent, credential, stream, row template): _row_template

    def __init__(self, app, scan=None):
        if scan is None:
            from cco._fast.key_c import scan_request as scan
        self.app = app
        self.scan = scan  # the twin's signature: this lane scans through key_c's C interface (key_c.pxd)
        self.request_id_prefix = b""
        self.request_counter = None
        self.model_headers = None
        self.last_body = None
        self.last_scan = None
        self.last_context = None
        self.last_key = None
        self.row_memo = None

    def declined(self, bytes body):
        last = self.last_body
        if last is not None and (last is body or last == body):
            self.last_body = body
            return True
        return False

    def reuse_scan(self, bytes body):
        if self.last_body is not None and (self.last_body is body or self.last_body == body):
            self.last_body = None
            return self.last_scan
        return None

    def reuse_key(self, scan, bytes context):
        if scan is self.last_scan and self.last_context is not None and context == self.last_context:
            self.last_scan = None
            return self.last_key
        return None

    def serve_data(self, bytes data, transport, limits):
        cdef Head h
        cdef Py_ssize_t at = 0, size = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t max_head = limits.max_header_bytes, max_headers = limits.max_headers
        cdef Py_ssize_t max_body = limits.max_body_bytes
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef double received_at
        while at < size:
            received_at = _perf_counter()
            if not parse_head(p, at, size, max_head, max_headers, max_body, &h):
                break
            if not self._serve(_ENDPOINT_NAMES[h.endpoint], _span(data, &h, H_API_KEY),
                               _span(data, &h, H_AUTHORIZATION), _span(data, &h, H_VERSION),
                               _span(data, &h, H_BETA), _span(data, &h, H_PROJECT), _span(data, &h, H_AGENT),
                               data[h.body_start:h.body_end], received_at, transport):
                break
            at = h.body_end
        return at

    cdef tuple _row_template(self, stats, route, str model, str endpoint, bint streaming, str project_name,
                             bytes agent, bytes credential_value, recorder):
        """The ledger row of a hit, its time, latencies and request id left at zero for `_row` to fill: the same
        for every hit of one entry by one caller, so the last one is kept (a burst of identical requests is the
        lane's case) and rebuilt when anything it depends on changed (another entry, caller, route or price)."""
        cdef tuple memo = self.row_memo
        cost = stats.hit_cost
        if (memo is not None and memo[0] is stats and memo[1] is cost and memo[2] is route
                and memo[3] == project_name and memo[4] == agent and memo[5] == credential_value
                and memo[6] == streaming):
            return <tuple>memo[7]
        usage = stats.usage
        key_hash = recorder.key_hashes.get(credential_value) if credential_value else None
        if key_hash is None:
            key_hash = recorder.key_hash_of(credential_value)
        template = (
            0.0, project_name, agent.decode("utf-8", "replace") if agent else None, model, model, route.provider,
            endpoint, int(streaming), 200, None, "hit",
            usage.input_tokens if usage is not None else 0, usage.output_tokens if usage is not None else 0,
            usage.cache_creation_tokens if usage is not None else 0,
            usage.cache_creation_1h_tokens if usage is not None else 0,
            usage.cache_read_tokens if usage is not None else 0, 0, cost.cost, cost.would_be_cost, cost.savings,
            int(cost.unpriced), 0.0, 0.0, None, 0, None, "", key_hash,
        )
        self.row_memo = (stats, cost, route, project_name, agent, credential_value, streaming, template)
        return template

    cdef bint _decline(self, bytes body, Member* members, int count) except -1:
        """Keeps the scan of a declined body for the general path (reuse_scan), which would otherwise scan again."""
        self.last_body = body
        self.last_scan = members_scan(body, members, count)
        return False

    def serve(self, bytes method, bytes url, list headers, bytes body, double received_at, transport):
        cdef bytes name
        cdef tuple header
        cdef list values
        cdef object endpoint
        cdef int k
        if method != b"POST":
            return False
        endpoint = ENDPOINTS.get(url)
        if endpoint is None:
            return False
        values = [None] * H_COUNT  # as parse_head: captured fields, first value each; a declining field declines
        for header in headers:
            name = <bytes>header[0]
            k = _field_kind(<const unsigned char*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
            if k >= 0:
                if values[k] is None:
                    values[k] = header[1]
            elif k == F_DECLINE:
                return False
        return self._serve(endpoint, values[H_API_KEY], values[H_AUTHORIZATION], values[H_VERSION], values[H_BETA],
                           values[H_PROJECT], values[H_AGENT], body, received_at, transport)

    cdef bint _serve(self, str endpoint, bytes api_key, bytes authorization, bytes version, bytes beta,
                     bytes project, bytes agent, bytes body, double received_at, transport) except -1:
        cdef bytes model_bytes, key, answer, prefix, lines, response, head, tail
        cdef bint streaming
        cdef bytes scope_bytes, credential_value, context
        cdef object app, cache, route, stats, sink, recorder
        cdef tuple template
        cdef char* out
        cdef Py_ssize_t at, id_at, id_end, id_size
        cdef int length_digits
        cdef unsigned long long counter
        cdef Member members[MAX_MEMBERS]
        cdef const unsigned char* p
        cdef int count, m
        cdef Py_ssize_t start, size
        cdef double now, latency_ms, wall
        cdef char buf[24]
        app = self.app
        cache = app.cache
        if cache is None or app.draining or app.config.overrides.enabled:
            return False
        p = <const unsigned char*>PyBytes_AS_STRING(body)
        count = scan_members(p, PyBytes_GET_SIZE(body), members)
        self.last_context = None
        if count < 0:
            return False  # invalid or not plain: the general path scans it and answers
        m = find_member(p, members, count, b"model", 5)
        if m < 0:
            return self._decline(body, members, count)
        start = members[m].value_start
        size = members[m].value_end - start
        if size < 3 or p[start] != 34 or p[start + size - 1] != 34 or memchr(p + start, 92, size) != NULL:
            return self._decline(body, members, count)
        streaming = False
        m = find_member(p, members, count, b"stream", 6)
        if m >= 0:
            streaming = _span_is(p, &members[m], b"true", 4)
            if not streaming and not _span_is(p, &members[m], b"false", 5) and not _span_is(p, &members[m], b"null", 4):
                return self._decline(body, members, count)
            if streaming and endpoint != "/v1/messages":
                return self._decline(body, members, count)
        m = find_member(p, members, count, b"max_tokens", 10)
        if m >= 0 and not _span_is_uint(p, &members[m]) and not _span_is(p, &members[m], b"null", 4):
            return self._decline(body, members, count)
        model_bytes = PyBytes_FromStringAndSize(<const char*>p + start + 1, size - 2)
        try:
            model = model_bytes.decode()
        except UnicodeDecodeError:
            return self._decline(body, members, count)
        router = app.router
        route = router.memo.get(model, False)
        if route is False:
            route = router.match(model)
        if route is None:
            return self._decline(body, members, count)
        credential_value = api_key or authorization
        credential = _xxh3_64(credential_value) if credential_value else 0
        if route.api_key is None and (credential == 0 or credential not in cache.verified):
            return self._decline(body, members, count)
        scope = cache.scope
        project_name = project.decode("utf-8", "replace") if project else app.default_project
        if scope == "global":
            scope_bytes = b"global"
        elif scope == "project":
            scope_bytes = b"project:" + project_name.encode()
        else:
            scope_bytes = b"key:%x" % credential
        context = b"\x00".join((model_bytes, route.provider_bytes, _ENDPOINT_BYTES[endpoint], scope_bytes,
                                 version or b"", beta or b""))
        key = members_key(body, members, count, context)
        answer = cache.lru.get(key)
        if answer is None:
            self._decline(body, members, count)
            self.last_context = context
            self.last_key = key
            return False
        stats = cache.records.get(key)
        if stats is None or stats.hit_cost is None or stats.preview is None or stats.cost is None:
            self._decline(body, members, count)
            self.last_context = context
            self.last_key = key
            return False
        if streaming:
            answer = cache.streams.get(key)
            if answer is None:  # its first stream hit: the general path synthesizes the stream and keeps it
                self._decline(body, members, count)
                self.last_context = context
                self.last_key = key
                return False
        self.last_body = self.last_scan = None
        cache.hits += 1
        stats.hits += 1
        wall = _time()
        stats.last_hit = wall
        stats.saved += stats.cost
        cache.saved_cost += stats.cost
        counter = <unsigned long long>next(self.request_counter)
        lines = route.cco_headers.get(model)
        if lines is None:
            lines = self.model_headers(route, model)
        prefix = self.request_id_prefix
        now = _perf_counter()
        # The response in one buffer: head, length, model lines, cache line, request id, overhead, cost, body.
        id_size = PyBytes_GET_SIZE(prefix) + _hex_width(counter)
        length_digits = _uint_text(<unsigned long long>PyBytes_GET_SIZE(answer), buf)
        head = _HEAD_200_SSE if streaming else _HEAD_200
        tail = _STREAM_LINES if streaming else _COST_ZERO
        response = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(head) + length_digits + 2
                                             + PyBytes_GET_SIZE(lines) + PyBytes_GET_SIZE(_HIT_LINE) + id_size
                                             + PyBytes_GET_SIZE(_OVERHEAD_LINE) + 24 + 2
                                             + PyBytes_GET_SIZE(tail) + 2 + PyBytes_GET_SIZE(answer))
        out = PyBytes_AS_STRING(response)
        at = _put(out, 0, head)
        memcpy(out + at, buf, length_digits)
        at += length_digits
        out[at] = 13
        out[at + 1] = 10
        at = _put(out, at + 2, lines)
        at = _put(out, at, _HIT_LINE)
        id_at = at
        at = _put(out, at, prefix)
        at += _hex_text(counter, out + at)
        id_end = at
        at = _put(out, at, _OVERHEAD_LINE)
        at += _ms_text((now - received_at) * 1000, out + at)
        out[at] = 13
        out[at + 1] = 10
        at = _put(out, at + 2, tail)
        out[at] = 13
        out[at + 1] = 10
        at = _put(out, at + 2, answer)
        Py_SET_SIZE(response, at)  # the overhead figure took fewer than its 24 reserved bytes
        out[at] = 0  # bytes objects keep a terminating NUL
        transport.write(response)
        recorder = app.recorder
        sink = recorder.sink
        if sink is not None:
            template = self._row_template(stats, route, model, endpoint, streaming, project_name, agent,
                                          credential_value, recorder)
            latency_ms = (_perf_counter() - received_at) * 1000
            sink(_row(template, wall - (now - received_at), latency_ms, (now - received_at) * 1000,
                      PyUnicode_DecodeLatin1(out + id_at, id_end - id_at, NULL)))
        return True
