# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cache key of a JSON request body, compiled (twin of key_py.py; its docstring states the rules).

One pass over the body bytes validates the JSON and records the byte span of each top-level value; nested
content is only stepped over, never turned into Python objects. The canonical form is then hashed with xxh3-128
(xxh3.h) as it is produced, piece by piece from C: long values are read by the hash where they lie in the body.

Plain bodies (at most MAX_MEMBERS top-level members, each name unescaped ASCII and given once: every request an
SDK sends) are scanned into a C array of member spans (`scan_members`, also the C interface of key_c.pxd that the
compiled hit lane keys with, building no Python object per member). Their values are stepped over by jscan.h, in
C: a string-end map is built for the whole body first (64 bytes per step), then the grammar is walked token by
token with each string's end found in the map; a body with a control byte (but in the whitespace it ends with), a
bad escape or bytes that are not UTF-8 anywhere skips each string's contents instead (scan.h, 16 bytes per step). UTF-8 is checked in the map's pass,
or by itself (cco_utf8_check) where no map was built. Any other body takes the general loop of `_scan_request`,
which also words the errors.
"""
cimport cython
from cpython.buffer cimport PyBUF_READ
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.memoryview cimport PyMemoryView_FromMemory
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcmp

import xxhash

from cco._fast.key_py import JsonSyntaxError

cdef extern from "jscan.h":
    ctypedef struct CcoError:
        int err
        Py_ssize_t pos
    enum:
        CCO_E_EOF
        CCO_E_CHAR
        CCO_E_UNTERMINATED
        CCO_E_ESCAPE
        CCO_E_SURROGATE
        CCO_E_NUMBER
        CCO_E_NAME
        CCO_E_COLON
        CCO_E_COMMA_OBJECT
        CCO_E_COMMA_ARRAY
        CCO_E_DEPTH
        CCO_E_TRAILING
        CCO_E_UTF8
    Py_ssize_t CCO_END_WORDS(Py_ssize_t n) noexcept nogil
    int cco_string_ends(const unsigned char* p, Py_ssize_t n, uint64_t* ends) noexcept nogil
    Py_ssize_t cco_map_walk(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, const uint64_t* ends,
                            CcoError* e) noexcept nogil
    Py_ssize_t cco_skip_value_end(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, const uint64_t* ends,
                                  CcoError* e) noexcept nogil
    Py_ssize_t cco_skip_string_end(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, const uint64_t* ends,
                                   CcoError* e, void* word) noexcept nogil
    Py_ssize_t cco_ws(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil
    int cco_utf8_check(const unsigned char* p, Py_ssize_t n, CcoError* e) noexcept nogil
    void cco_cpu_init() noexcept nogil
    int cco_utf8_ssse3
    int cco_map_avx
    int CCO_UTF8_VECTOR

EXCLUDED = frozenset({b"stream", b"metadata"})

cdef enum:
    MAP_STACK_WORDS = 2048  # a body up to 128 KiB keeps its string-end map on the C stack

cdef bint _string_map = True  # scan_members builds a string-end map (jscan.h) where the body allows it

_MESSAGES = {
    CCO_E_EOF: "input ends early", CCO_E_CHAR: "invalid character", CCO_E_UNTERMINATED: "unterminated string",
    CCO_E_ESCAPE: "invalid escaped character", CCO_E_SURROGATE: "invalid utf-16 surrogate pair",
    CCO_E_NUMBER: "invalid number", CCO_E_NAME: "expected a member name", CCO_E_COLON: "expected ':'",
    CCO_E_COMMA_OBJECT: "expected ',' or '}'", CCO_E_COMMA_ARRAY: "expected ',' or ']'",
    CCO_E_DEPTH: "nesting too deep", CCO_E_TRAILING: "trailing characters", CCO_E_UTF8: "invalid UTF-8",
}

_xxh3_128_digest = xxhash.xxh3_128_digest

cco_cpu_init()  # SSSE3 for the UTF-8 check, AVX/BMI1/BMI2 for the string-end map and its walk, where the CPU has them
cdef int _utf8_ssse3_found = cco_utf8_ssse3
cdef int _map_avx_found = cco_map_avx

cdef extern from "xxh3.h":
    ctypedef struct CcoXxh3:
        unsigned char keep[256]
        unsigned kept
    void cco_xxh3_init() noexcept nogil
    int cco_xxh3_kind
    void cco_xxh3_start(CcoXxh3* h) noexcept nogil
    void cco_xxh3_update(CcoXxh3* h, const unsigned char* src, size_t size) noexcept nogil
    int cco_xxh3_digest(const CcoXxh3* h, unsigned char* out) noexcept nogil

cco_xxh3_init()  # the hash's stripes in the VEX encoding where the CPU has AVX
cdef int _xxh3_best_kind = cco_xxh3_kind


# The canonical form is hashed as it is produced: one xxh3-128 over the concatenation of its pieces, fed to xxh3.h
# from C (a long value is read once, by the hash, where it lies in the body). A form of 240 bytes or fewer (the
# short algorithms) is whole in the hasher's buffer at the end and is hashed there by the xxhash package.

cdef inline void _canonical_start(CcoXxh3* h, bytes context) noexcept:
    cco_xxh3_start(h)
    _canonical_piece(h, <const char*>context, len(context))


cdef inline void _canonical_piece(CcoXxh3* h, const char* src, Py_ssize_t size) noexcept:
    """One length-prefixed piece (uint32, little-endian on the machines we build for, as key_py's '<I')."""
    cdef uint32_t length = <uint32_t>size
    cco_xxh3_update(h, <const unsigned char*>&length, 4)
    cco_xxh3_update(h, <const unsigned char*>src, size)


cdef bytes _canonical_digest(CcoXxh3* h):
    cdef unsigned char out[16]
    if cco_xxh3_digest(h, out) < 0:
        return _xxh3_128_digest(PyMemoryView_FromMemory(<char*>h.keep, h.kept, PyBUF_READ))
    return PyBytes_FromStringAndSize(<char*>out, 16)


cdef int scan_members(const unsigned char* p, Py_ssize_t n, Member* out) noexcept nogil:
    """The top-level members of a plain JSON object body, validated as a whole (UTF-8 included); their count, or -1
    when the body is not plain (invalid, not an object, an escaped, non-ASCII or repeated name, more than
    MAX_MEMBERS). p[n] must be readable (a bytes object's buffer ends in a NUL; jscan.h relies on it and anything
    else is declined)."""
    cdef uint64_t stack_ends[MAP_STACK_WORDS]
    cdef uint64_t* ends = NULL
    cdef Py_ssize_t words
    cdef int count
    cdef CcoError e
    if p[n] != 0:
        return -1
    if _string_map:
        words = CCO_END_WORDS(n)
        if words <= MAP_STACK_WORDS:
            ends = &stack_ends[0]
        else:
            ends = <uint64_t*>malloc(words * sizeof(uint64_t))
        if ends != NULL and cco_string_ends(p, n, ends) < 0:  # a control byte or a bad escape somewhere
            if ends != &stack_ends[0]:
                free(ends)
            ends = NULL
    count = _members(p, n, out, ends)
    if ends != NULL and ends != &stack_ends[0]:
        free(ends)
    elif ends == NULL and count >= 0 and cco_utf8_check(p, n, &e) < 0:  # a mapped body was checked while mapped
        return -1
    return count


cdef int _members(const unsigned char* p, Py_ssize_t n, Member* out, const uint64_t* ends) noexcept nogil:
    """scan_members' loop; values are stepped over by jscan.h, with the string-end map when ends is not NULL."""
    cdef Py_ssize_t i, name_start, name_end, start, k
    cdef int count = 0, m
    cdef CcoError e
    i = cco_ws(p, 0, n)
    if i >= n or p[i] != 123:
        return -1
    i = cco_ws(p, i + 1, n)
    if i < n and p[i] == 125:
        i += 1
    else:
        while True:
            if i >= n or p[i] != 34:
                return -1
            name_start = i + 1
            i = cco_skip_string_end(p, name_start, n, NULL, &e, NULL)
            if i < 0:
                return -1
            name_end = i - 1
            for k in range(name_start, name_end):
                if p[k] >= 128 or p[k] == 92:  # non-ASCII or escaped: the general loop decodes it
                    return -1
            for m in range(count):
                if (out[m].name_end - out[m].name_start == name_end - name_start
                        and memcmp(p + out[m].name_start, p + name_start, name_end - name_start) == 0):
                    return -1
            if count == MAX_MEMBERS:
                return -1
            i = cco_ws(p, i, n)
            if i >= n or p[i] != 58:
                return -1
            start = cco_ws(p, i + 1, n)
            if ends != NULL:
                i = cco_map_walk(p, start, n, ends, &e)
            else:
                i = cco_skip_value_end(p, start, n, NULL, &e)
            if i < 0:
                return -1
            out[count].name_start = name_start
            out[count].name_end = name_end
            out[count].value_start = start
            out[count].value_end = i
            count += 1
            i = cco_ws(p, i, n)
            if i >= n:
                return -1
            if p[i] == 44:
                i = cco_ws(p, i + 1, n)
                continue
            if p[i] == 125:
                i += 1
                break
            return -1
    if cco_ws(p, i, n) != n:
        return -1
    return count


cdef int find_member(const unsigned char* p, Member* members, int count, const char* name,
                     Py_ssize_t length) noexcept nogil:
    """Index of the member called `name`, or -1."""
    cdef int m
    for m in range(count):
        if (members[m].name_end - members[m].name_start == length
                and memcmp(p + members[m].name_start, name, length) == 0):
            return m
    return -1


cdef inline int name_order(const unsigned char* p, Member* a, Member* b) noexcept nogil:
    """<0, 0, >0 as the two names compare as Python bytes."""
    cdef Py_ssize_t la = a.name_end - a.name_start, lb = b.name_end - b.name_start
    cdef int c = memcmp(p + a.name_start, p + b.name_start, la if la < lb else lb)
    if c != 0:
        return c
    return -1 if la < lb else (1 if la > lb else 0)


cdef inline bint excluded(const unsigned char* p, Member* m) noexcept nogil:
    cdef Py_ssize_t length = m.name_end - m.name_start
    return ((length == 6 and memcmp(p + m.name_start, b"stream", 6) == 0)
            or (length == 8 and memcmp(p + m.name_start, b"metadata", 8) == 0))


cdef bytes members_key(bytes body, Member* members, int count, bytes context):
    """The same key as RequestScan.key, from scan_members' spans."""
    cdef const char* p = PyBytes_AS_STRING(body)
    cdef int order[MAX_MEMBERS]
    cdef int i, j, m
    cdef CcoXxh3 canon
    for i in range(count):  # insertion sort by name: a request has a handful of members
        j = i
        while j > 0 and name_order(<const unsigned char*>p, &members[i], &members[order[j - 1]]) < 0:
            order[j] = order[j - 1]
            j -= 1
        order[j] = i
    _canonical_start(&canon, context)
    for i in range(count):
        m = order[i]
        if excluded(<const unsigned char*>p, &members[m]):
            continue
        _canonical_piece(&canon, p + members[m].name_start, members[m].name_end - members[m].name_start)
        _canonical_piece(&canon, p + members[m].value_start, members[m].value_end - members[m].value_start)
    return _canonical_digest(&canon)


cdef object members_scan(bytes body, Member* members, int count):
    """The RequestScan of scan_members' spans."""
    cdef dict spans = {}
    cdef int m
    for m in range(count):
        spans[body[members[m].name_start:members[m].name_end]] = (members[m].value_start, members[m].value_end)
    cdef RequestScan scan = RequestScan.__new__(RequestScan)
    scan.body = body
    scan._spans = spans
    return scan


@cython.final
cdef class RequestScan:
    cdef readonly bytes body
    cdef dict _spans  # name → (start, end)

    def value(self, bytes name):
        span = self._spans.get(name)
        if span is None:
            return None
        return self.body[<Py_ssize_t>span[0]:<Py_ssize_t>span[1]]

    def names(self):
        return list(self._spans)

    def key(self, bytes context):
        cdef list names = sorted(self._spans)
        cdef Py_ssize_t start, end
        cdef bytes name
        cdef const char* src = self.body
        cdef CcoXxh3 canon
        _canonical_start(&canon, context)
        for name in names:
            if name in EXCLUDED:
                continue
            start, end = self._spans[name]
            _canonical_piece(&canon, <const char*>name, len(name))
            _canonical_piece(&canon, src + start, end - start)
        return _canonical_digest(&canon)


def scan_request(bytes body):
    cdef Member members[MAX_MEMBERS]
    cdef int count = scan_members(<const unsigned char*>PyBytes_AS_STRING(body), len(body), members)
    if count >= 0:
        return members_scan(body, members, count)
    return _scan_request(body)


cdef _scan_request(bytes body):
    """Any body: escaped and non-ASCII names, repeated names (the last value counts), any number of members; and the
    wording of every error (jscan.h's per-string variant reports the kind and byte of the first one)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(body)
    cdef Py_ssize_t n = len(body)
    cdef Py_ssize_t i, name_start, name_end, start
    cdef CcoError e
    cdef dict spans = {}
    cdef bytes name
    i = cco_ws(p, 0, n)
    if i >= n:
        _raise(CCO_E_EOF, n)
    if p[i] != 123:
        raise JsonSyntaxError("expected a JSON object: the body is not one", i)
    i = cco_ws(p, i + 1, n)
    if i < n and p[i] == 125:
        i += 1
    else:
        while True:
            if i >= n or p[i] != 34:
                _raise(CCO_E_NAME, i)
            name_start = i + 1
            i = cco_skip_string_end(p, name_start, n, NULL, &e, NULL)
            if i < 0:
                _raise(e.err, e.pos)
            name_end = i - 1
            if memchr(p + name_start, 92, name_end - name_start) != NULL:
                name = _unescape_name(body[name_start - 1:name_end + 1])
            else:
                name = body[name_start:name_end]
                try:
                    name.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise JsonSyntaxError(f"JSON is malformed: a member name is not UTF-8 ({exc.reason})", -1)
            i = cco_ws(p, i, n)
            if i >= n or p[i] != 58:
                _raise(CCO_E_COLON, i)
            start = cco_ws(p, i + 1, n)
            i = cco_skip_value_end(p, start, n, NULL, &e)
            if i < 0:
                _raise(e.err, e.pos)
            spans.pop(name, None)  # a name given twice counts once, with its last value
            spans[name] = (start, i)
            i = cco_ws(p, i, n)
            if i >= n:
                _raise(CCO_E_EOF, n)
            if p[i] == 44:
                i = cco_ws(p, i + 1, n)
                continue
            if p[i] == 125:
                i += 1
                break
            _raise(CCO_E_COMMA_OBJECT, i)
    i = cco_ws(p, i, n)
    if i != n:
        _raise(CCO_E_TRAILING, i)
    if cco_utf8_check(p, n, &e) < 0:  # JSON text is UTF-8 (RFC 8259 §8.1); the grammar leaves bytes >= 0x80 to this
        _raise(e.err, e.pos)
    cdef RequestScan scan = RequestScan.__new__(RequestScan)
    scan.body = body
    scan._spans = spans
    return scan


cdef _raise(int err, Py_ssize_t pos):
    raise JsonSyntaxError(f"JSON is malformed: {_MESSAGES[err]} (byte {pos})", pos)


cdef bytes _unescape_name(bytes quoted):
    import json

    return json.loads(quoted).encode("utf-8", "surrogatepass")


def scan_variants():
    """The ways scan_members finds string ends: "map" (a string-end map per body; the default), "map-sse2" (the same
    map and walk built for baseline x86-64, where "map" uses AVX, BMI1 and BMI2: only on CPUs that have them) and
    "skip" (each string's contents skipped; always used for bodies the map does not take). For tests and
    benchmarks."""
    return ("map", "map-sse2", "skip") if _map_avx_found else ("map", "skip")


def use_scan_variant(str name):
    global _string_map, cco_map_avx
    if name not in scan_variants():
        raise ValueError(f"scan variant {name!r} is not one of {scan_variants()}")
    _string_map = name != "skip"
    cco_map_avx = 1 if name == "map" and _map_avx_found else 0


def plain_member_count(bytes body):
    """scan_members' answer for a body: its member count, or -1 when it leaves the body to the general loop (for
    tests: a plain body the fast path declines is still keyed right, only slower)."""
    cdef Member members[MAX_MEMBERS]
    return scan_members(<const unsigned char*>PyBytes_AS_STRING(body), len(body), members)


def plain_key(bytes body, bytes context):
    """The key as the compiled hit lane computes it (scan_members, then members_key: no Python object per
    member), or None when scan_members leaves the body to the general loop. For tests and the benchmark."""
    cdef Member members[MAX_MEMBERS]
    cdef int count = scan_members(<const unsigned char*>PyBytes_AS_STRING(body), len(body), members)
    if count < 0:
        return None
    return members_key(body, members, count, context)


def string_map_accepts(bytes body):
    """Whether the string-end map takes the body (no control byte, every escape valid, valid UTF-8), so that its
    key is computed with the map rather than by skipping each string. For tests."""
    cdef Py_ssize_t n = len(body)
    cdef uint64_t* ends = <uint64_t*>malloc(CCO_END_WORDS(n) * sizeof(uint64_t))
    if ends == NULL:
        raise MemoryError()
    cdef int taken = cco_string_ends(<const unsigned char*>PyBytes_AS_STRING(body), n, ends)
    free(ends)
    return taken == 0


def utf8_variants():
    """The ways the UTF-8 check runs on this CPU: "ssse3" (table lookups; where the CPU has it, the default) and
    "sse2" (a compare per rule); "scalar" (byte by byte) in a build without SSE2. For tests and benchmarks."""
    if not CCO_UTF8_VECTOR:
        return ("scalar",)
    return ("ssse3", "sse2") if _utf8_ssse3_found else ("sse2",)


def use_utf8_variant(str name):
    global cco_utf8_ssse3
    if name not in utf8_variants():
        raise ValueError(f"UTF-8 check {name!r} is not one of {utf8_variants()}")
    cco_utf8_ssse3 = 1 if name == "ssse3" else 0


def xxh3_kinds():
    """The ways xxh3.h accumulates stripes on this CPU, the default first: "avx" (the VEX encoding), "sse2" and
    "portable" (plain C). For tests and benchmarks."""
    kinds = ("avx", "sse2", "portable")
    return kinds[2 - _xxh3_best_kind:]


def use_xxh3_kind(str name):
    global cco_xxh3_kind
    if name not in xxh3_kinds():
        raise ValueError(f"xxh3 kind {name!r} is not one of {xxh3_kinds()}")
    cco_xxh3_kind = {"avx": 2, "sse2": 1, "portable": 0}[name]


def xxh3_128_of_pieces(list pieces):
    """The xxh3-128 digest of the concatenated pieces, fed to the key's hasher one by one (for tests: it must equal
    xxhash.xxh3_128_digest of the joined bytes, whatever the split)."""
    cdef CcoXxh3 h
    cdef bytes piece
    cco_xxh3_start(&h)
    for piece in pieces:
        cco_xxh3_update(&h, <const unsigned char*>PyBytes_AS_STRING(piece), len(piece))
    return _canonical_digest(&h)
