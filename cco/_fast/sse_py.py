"""Server-sent events splitter, sans I/O (pure-Python twin of sse_c.pyx).

Theory of operation: upstream bytes arrive in arbitrary chunks. `SseSplitter.feed` returns every event block
completed by the new bytes, with line endings normalised to "\\n" and without the terminating blank line; the
rest is kept for the next call. Per the WHATWG SSE grammar a line ends in CRLF, LF or a lone CR, and an event ends
at an empty line. A CR ends its line at once; when a chunk ends in CR, an LF opening the next chunk is its pair
and is dropped.
The forwarded bytes are never touched: the splitter only observes the stream (usage, completeness, caching).
"""


class SseSplitter:
    __slots__ = ("_buf", "_after_cr")

    def __init__(self) -> None:
        self._buf = b""  # normalised bytes of the event in progress
        self._after_cr = False

    def feed(self, data: bytes) -> list[bytes]:
        if self._after_cr and data[:1] == b"\n":
            data = data[1:]
        if b"\r" in data:
            self._after_cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        elif data:
            self._after_cr = False
        buf = self._buf + data if self._buf else data
        events = []
        start = 0
        find = buf.find
        while True:
            end = find(b"\n\n", start)
            if end < 0:
                break
            if end > start:
                events.append(buf[start:end])
            start = end + 2
            # further blank lines between events are not events
            while start < len(buf) and buf[start] == 10:
                start += 1
        self._buf = buf[start:] if start else buf
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet completed (normalised)."""
        return self._buf


def parse_event(block: bytes) -> tuple[bytes, bytes]:
    """Returns (event name, data) of one event block; data lines are joined with "\\n"; comments are skipped."""
    event = b""
    data_lines = []
    for line in block.split(b"\n"):
        if not line or line[0] == 58:  # ":" comment
            continue
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data_lines.append(value)
        elif name == b"event":
            event = value
    return event, b"\n".join(data_lines)
