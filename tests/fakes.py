"""In-memory transports for protocol tests (no sockets)."""

from __future__ import annotations


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.reading = True
        self.protocol = None
        self.extra: dict = {}

    # what the protocols call
    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written.append(bytes(data))

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name, default=None):
        return self.extra.get(name, default)

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    # test helpers
    @property
    def data(self) -> bytes:
        return b"".join(self.written)

    def clear(self) -> None:
        self.written.clear()
