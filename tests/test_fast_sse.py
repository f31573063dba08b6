"""The SSE splitter, compiled and pure: fed whole, one byte at a time, in random cuts, and with trailing data."""

import random

import pytest

from tests.conftest import fast_module

STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":3}}}\n\n'
    b"event: ping\ndata: {\"type\":\"ping\"}\n\n"
    b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"h\xc3\xa9llo\\n\\n"}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
EVENTS = [block for block in STREAM.split(b"\n\n") if block]


def feed_all(splitter, pieces):
    out = []
    for piece in pieces:
        out.extend(splitter.feed(piece))
    return out


@pytest.fixture
def sse(impl):
    return fast_module(impl, "sse")


def test_whole(sse):
    assert sse.SseSplitter().feed(STREAM) == EVENTS


def test_one_byte_at_a_time(sse):
    splitter = sse.SseSplitter()
    assert feed_all(splitter, [STREAM[i:i + 1] for i in range(len(STREAM))]) == EVENTS
    assert splitter.pending == b""


def test_random_cuts(sse):
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 12)))
        pieces = [STREAM[a:b] for a, b in zip([0] + cuts, cuts + [len(STREAM)])]
        assert feed_all(sse.SseSplitter(), pieces) == EVENTS


def test_trailing_partial_event_is_kept(sse):
    splitter = sse.SseSplitter()
    assert splitter.feed(STREAM + b"event: message_delta\ndata: {") == EVENTS
    assert splitter.pending == b"event: message_delta\ndata: {"
    assert splitter.feed(b"}\n\n") == [b"event: message_delta\ndata: {}"]


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_endings(sse, newline):
    stream = STREAM.replace(b"\n", newline)
    assert sse.SseSplitter().feed(stream) == EVENTS
    one_by_one = feed_all(sse.SseSplitter(), [stream[i:i + 1] for i in range(len(stream))])
    assert one_by_one == EVENTS


def test_cr_at_chunk_end_pairs_with_the_next_lf(sse):
    splitter = sse.SseSplitter()
    assert splitter.feed(b"data: a\r\n\r") == [b"data: a"]  # a CR ends its line at once
    assert splitter.feed(b"\ndata: b\r") == []  # ...and the LF that follows is its pair, not a blank line
    assert splitter.feed(b"\n\r\n") == [b"data: b"]


def test_extra_blank_lines_are_not_events(sse):
    assert sse.SseSplitter().feed(b"\n\n\ndata: x\n\n\n\n\ndata: y\n\n") == [b"data: x", b"data: y"]


def test_parse_event(sse):
    assert sse.parse_event(b'event: message_stop\ndata: {"type":"message_stop"}') == (
        b"message_stop", b'{"type":"message_stop"}')
    assert sse.parse_event(b": comment\ndata:a\ndata: b") == (b"", b"a\nb")
    assert sse.parse_event(b"event:x") == (b"x", b"")


def test_twins_agree_on_random_streams():
    """Parity: both implementations split any input identically."""
    rng = random.Random(11)
    alphabet = [b"a", b"\n", b"\r", b"data: ", b"event: x", b":", b"\r\n"]
    c, py = fast_module("compiled", "sse"), fast_module("pure", "sse")
    for _ in range(500):
        stream = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        cuts = sorted(rng.sample(range(1, max(len(stream), 2)), min(3, max(len(stream) - 1, 0))))
        pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
        sc, sp = c.SseSplitter(), py.SseSplitter()
        assert feed_all(sc, pieces) == feed_all(sp, pieces)
        assert sc.pending == sp.pending
