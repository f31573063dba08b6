# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Server-sent events splitter, compiled (twin of sse_py.py; same behaviour, same tests).

The common case (LF-only streams, as Anthropic and OpenAI send) is a memchr-driven scan over the joined buffer;
CR-bearing input is normalised first, exactly as the pure twin does (see its docstring for the rules).
"""
cimport cython
from libc.string cimport memchr


@cython.final
cdef class SseSplitter:
    cdef bytes _buf
    cdef bint _after_cr

    def __cinit__(self):
        self._buf = b""
        self._after_cr = False

    cpdef list feed(self, bytes data):
        cdef bytes buf
        cdef list events = []
        cdef const char* p
        cdef const char* hit
        cdef Py_ssize_t n, start = 0, pos, end
        n = len(data)
        if self._after_cr and n and (<const char*>data)[0] == 10:
            data = data[1:]
            n -= 1
        if n:
            p = data
            if memchr(p, 13, n) != NULL:
                self._after_cr = p[n - 1] == 13
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            else:
                self._after_cr = False
        if self._buf:
            buf = self._buf + data
        else:
            buf = data
        n = len(buf)
        p = buf
        pos = 0
        while pos < n:
            hit = <const char*>memchr(p + pos, 10, n - pos)
            if hit == NULL:
                break
            end = hit - p
            if end + 1 < n and p[end + 1] == 10:
                if end > start:
                    events.append(buf[start:end])
                start = end + 2
                while start < n and p[start] == 10:
                    start += 1
                pos = start
            elif end + 1 >= n:
                break
            else:
                pos = end + 1
        if start:
            self._buf = buf[start:]
        else:
            self._buf = buf
        return events

    @property
    def pending(self):
        return self._buf


cpdef tuple parse_event(bytes block):
    cdef bytes event = b""
    cdef list data_lines = []
    cdef bytes line, name, value
    for line in block.split(b"\n"):
        if not line or line[0] == 58:
            continue
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data_lines.append(value)
        elif name == b"event":
            event = value
    return event, b"\n".join(data_lines)
