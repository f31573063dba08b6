class SseSplitter:
    """Splits a byte stream into SSE event blocks (line endings normalised, blank-line terminator removed)."""

    def feed(self, data: bytes) -> list[bytes]:
        """Returns the events completed by `data`; keeps the incomplete rest for the next call."""
    @property
    def pending(self) -> bytes: ...

def parse_event(block: bytes) -> tuple[bytes, bytes]:
    """(event name, data) of one block; several data lines are joined with a newline."""
