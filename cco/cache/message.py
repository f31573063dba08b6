"""Anthropic Messages answers as the cache stores them: assembled from SSE, replayed as SSE or JSON. No I/O.

Theory of operation. A streamed miss is forwarded to the client untouched while every event block (split by
`cco._fast.SseSplitter`, parsed by `parse_event`) is also fed to a `StreamAssembler`, which rebuilds the final
Message the non-streaming API would have returned. Only a `complete` assembly may be stored (SPEC §5: "never a
stream that was cut off"): message_start first, every started block stopped, a non-null stop_reason, a final
message_stop and no `error` event. Bad input never raises — it marks the assembly `failed`, and a failed
assembly is simply not cached.

A hit for a streaming request is replayed by `synthesize_sse`, which follows SPEC §4 ("every SSE event the
proxy writes itself carries its `event:` line, starts blocks before their deltas, sends tool arguments as
`input_json_delta` pieces, and ends with one `message_delta` (non-null `stop_reason`) and one `message_stop`").
The two functions are inverses: assembling a synthesized stream gives back the stored message, and so does the
official SDK's accumulator (`anthropic.lib.streaming._messages.accumulate_event`), which the tests check.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["StreamAssembler", "synthesize_sse", "message_bytes", "last_user_preview"]

# Blocks whose `input` is streamed as input_json_delta pieces. The SDK tracks exactly these two
# (`TRACKS_TOOL_INPUT = (ToolUseBlock, ServerToolUseBlock)`); other block types arrive whole in content_block_start.
_TOOL_BLOCKS = frozenset(("tool_use", "server_tool_use"))

# message_delta.usage keys: "usage counts are cumulative" (protocols.md §1.5) and the SDK copies these from a
# message_delta when present; anything else (cache_creation, service_tier, ...) only survives from message_start.
_DELTA_USAGE_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens",
                     "server_tool_use", "output_tokens_details")

# Top-level keys the SDK takes from message_delta.delta; `stop_details` is reset to None when the delta lacks it.
_DELTA_MESSAGE_KEYS = ("stop_details",)

# Keys of the Message the non-streaming API always returns (protocols.md §1.4), in its order.
_MESSAGE_KEYS = ("id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage")

# Replayed text, thinking and tool-input JSON are cut into this many pieces at most.
_PIECES = 3


class StreamAssembler:
    """Rebuilds the final Message from the SSE events of one Anthropic stream.

    `feed(event, data)` takes the event name and data of one SSE event (as `parse_event` returns them); when the
    event line is missing the data's `type` is used. `complete`, `failed` and `message()` may be read at any time.
    """

    __slots__ = ("_message", "_usage", "_blocks", "_parts", "_open", "_stopped", "_failed")

    def __init__(self) -> None:
        self._message: dict[str, Any] | None = None  # message_start.message, content/usage kept apart
        self._usage: dict[str, Any] = {}
        self._blocks: list[dict[str, Any]] = []  # content blocks as started, finalised at their stop
        self._parts: list[list[str]] = []  # per block: text / thinking / partial_json pieces
        self._open: list[bool] = []  # per block: started and not yet stopped
        self._stopped = False  # message_stop seen
        self._failed = False

    @property
    def complete(self) -> bool:
        return (not self._failed and self._stopped and self._message is not None
                and not any(self._open) and self._message.get("stop_reason") is not None)

    @property
    def failed(self) -> bool:
        return self._failed

    @property
    def usage(self) -> dict[str, Any]:
        """The usage so far: message_start's, updated by every message_delta (input is billed even when cut off)."""
        return self._usage

    def feed(self, event: bytes, data: bytes) -> None:
        if self._failed:
            return
        if event == b"ping":
            return
        if event == b"error":
            self._failed = True
            return
        if event and event not in _HANDLERS:
            return  # "New event types may appear; clients must ignore unknown ones."
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._failed = True
            return
        if not isinstance(obj, dict):
            self._failed = True
            return
        kind = obj.get("type")
        if not event:
            if kind == "error":
                self._failed = True
                return
            handler = _HANDLERS.get(kind.encode() if isinstance(kind, str) else b"")
            if handler is None:
                return
        else:
            if kind != event.decode("latin-1"):  # "a JSON data line whose type equals the event name"
                self._failed = True
                return
            handler = _HANDLERS[event]
        if self._stopped or (self._message is None and handler is not StreamAssembler._on_message_start):
            self._failed = True  # "message_start must be first"; nothing may follow message_stop
            return
        try:
            ok = handler(self, obj)
        except (TypeError, ValueError, KeyError, AttributeError):
            ok = False
        if not ok:
            self._failed = True

    def message(self) -> dict[str, Any]:
        """The Message as the non-streaming API returns it ({} before message_start). A fresh dict each call."""
        if self._message is None:
            return {}
        out = dict(self._message)
        out["content"] = [self._block(i) for i in range(len(self._blocks))]
        out["usage"] = dict(self._usage)
        return out

    # Event handlers: each returns False when the event is malformed.

    def _on_message_start(self, obj: dict[str, Any]) -> bool:
        message = obj.get("message")
        if self._message is not None or not isinstance(message, dict):
            return False
        usage = message.get("usage", {})
        if not isinstance(usage, dict):
            return False
        self._message = dict(message)
        for key in _MESSAGE_KEYS[4:]:
            self._message.setdefault(key, None)
        self._message["content"] = []
        self._usage = dict(usage)
        return True

    def _on_block_start(self, obj: dict[str, Any]) -> bool:
        block = obj.get("content_block")
        index = obj.get("index")
        if not isinstance(block, dict) or not isinstance(block.get("type"), str) or index != len(self._blocks):
            return False
        block = {"type": block["type"], **block}  # type first, as the API returns blocks
        if isinstance(block.get("citations"), list):
            block["citations"] = list(block["citations"])
        self._blocks.append(block)
        self._parts.append([])
        self._open.append(True)
        return True

    def _on_block_delta(self, obj: dict[str, Any]) -> bool:
        index = obj.get("index")
        delta = obj.get("delta")
        if not isinstance(index, int) or not 0 <= index < len(self._blocks) or not self._open[index]:
            return False
        if not isinstance(delta, dict):
            return False
        block = self._blocks[index]
        kind = delta.get("type")
        btype = block["type"]
        # A delta that does not fit its block is ignored, as the SDK's accumulator does.
        if kind == "text_delta":
            if btype == "text":
                return _append(self._parts[index], delta.get("text"))
        elif kind == "input_json_delta":
            if btype in _TOOL_BLOCKS:
                return _append(self._parts[index], delta.get("partial_json"))
        elif kind == "thinking_delta":
            if btype == "thinking":
                return _append(self._parts[index], delta.get("thinking"))
        elif kind == "signature_delta":
            if btype == "thinking":
                signature = delta.get("signature")
                if not isinstance(signature, str):
                    return False
                block["signature"] = signature
        elif kind == "citations_delta":
            if btype == "text":
                if "citation" not in delta:
                    return False
                citations = block.get("citations")
                if isinstance(citations, list):
                    citations.append(delta["citation"])
                else:
                    block["citations"] = [delta["citation"]]
        return True

    def _on_block_stop(self, obj: dict[str, Any]) -> bool:
        index = obj.get("index")
        if not isinstance(index, int) or not 0 <= index < len(self._blocks) or not self._open[index]:
            return False
        block = self._blocks[index]
        parts = self._parts[index]
        if block["type"] in _TOOL_BLOCKS and parts:
            raw = "".join(parts)
            if raw:
                try:
                    block["input"] = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    return False
        elif parts:
            key = "text" if block["type"] == "text" else "thinking"
            block[key] = _str(block.get(key)) + "".join(parts)
        parts.clear()
        self._open[index] = False
        return True

    def _on_message_delta(self, obj: dict[str, Any]) -> bool:
        assert self._message is not None
        delta = obj.get("delta", {})
        usage = obj.get("usage", {})
        if not isinstance(delta, dict) or not isinstance(usage, dict):
            return False
        for key, value in delta.items():
            if key not in ("type", "content", "usage"):
                self._message[key] = value
        for key, value in usage.items():
            # Counts are cumulative, so they overwrite; a null means "not reported here" and the SDK keeps
            # the message_start value in that case ("the message_start value must survive").
            if value is not None:
                self._usage[key] = value
        return True

    def _on_message_stop(self, obj: dict[str, Any]) -> bool:
        self._stopped = True
        return True

    def _block(self, index: int) -> dict[str, Any]:
        block = dict(self._blocks[index])
        if isinstance(block.get("citations"), list):
            block["citations"] = list(block["citations"])
        parts = self._parts[index]
        if parts and block["type"] in ("text", "thinking"):  # a block still open: what arrived so far
            block[block["type"]] = _str(block.get(block["type"])) + "".join(parts)
        return block


_HANDLERS = {
    b"message_start": StreamAssembler._on_message_start,
    b"content_block_start": StreamAssembler._on_block_start,
    b"content_block_delta": StreamAssembler._on_block_delta,
    b"content_block_stop": StreamAssembler._on_block_stop,
    b"message_delta": StreamAssembler._on_message_delta,
    b"message_stop": StreamAssembler._on_message_stop,
}


def _append(parts: list[str], piece: object) -> bool:
    if not isinstance(piece, str):
        return False
    parts.append(piece)
    return True


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


# Replay


def _event(name: bytes, obj: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def _split(text: str, pieces: int = _PIECES) -> list[str]:
    """`text` in at most `pieces` non-empty parts, cut on character boundaries."""
    if not text:
        return []
    size = -(-len(text) // pieces)
    return [text[i:i + size] for i in range(0, len(text), size)]


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return _event(b"content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    btype = block.get("type")
    deltas: list[bytes] = []
    start = dict(block)
    if btype == "text":
        start["text"] = ""
        citations = block.get("citations")
        if isinstance(citations, list):
            start["citations"] = []
            deltas.extend(_delta(index, {"type": "citations_delta", "citation": c}) for c in citations)
        deltas.extend(_delta(index, {"type": "text_delta", "text": p}) for p in _split(_str(block.get("text"))))
    elif btype in _TOOL_BLOCKS:
        # "Always start tool_use with input:{} and stream the JSON via input_json_delta" (protocols.md §1.5):
        # Claude Code builds the input only from the deltas. The first piece is "" as the API's often is.
        start["input"] = {}
        raw = orjson.dumps(block.get("input", {})).decode()
        deltas.extend(_delta(index, {"type": "input_json_delta", "partial_json": p}) for p in ["", *_split(raw)])
    elif btype == "thinking":
        start["thinking"] = ""
        deltas.extend(_delta(index, {"type": "thinking_delta", "thinking": p})
                      for p in _split(_str(block.get("thinking"))))
        if "signature" in block:
            start["signature"] = ""
            # "signature_delta (sent just before the thinking block's stop)"
            deltas.append(_delta(index, {"type": "signature_delta", "signature": block["signature"]}))
    # Any other block type (redacted_thinking, server tool results, ...) is sent whole in content_block_start.
    return [
        _event(b"content_block_start", {"type": "content_block_start", "index": index, "content_block": start}),
        *deltas,
        _event(b"content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def synthesize_sse(message: dict[str, Any]) -> bytes:
    """The SSE byte sequence whose assembly (ours or an SDK's) is `message`, ordered as SPEC §4 demands."""
    usage = message.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    output_tokens = usage.get("output_tokens", 0)

    # message_start carries the whole usage: the SDK takes cache_creation, service_tier, ... only from here.
    # output_tokens starts small, as on the API, so a client that adds the two events' counts is off by no more
    # than it would be upstream; the message_delta below sets the true total.
    start = dict(message)
    start["content"] = []
    start["stop_reason"] = None
    start["stop_sequence"] = None
    for key in _DELTA_MESSAGE_KEYS:
        if key in start:
            start[key] = None
    start_usage = dict(usage)
    if isinstance(output_tokens, int) and output_tokens > 1:
        start_usage["output_tokens"] = 1
    start["usage"] = start_usage

    delta: dict[str, Any] = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    for key in _DELTA_MESSAGE_KEYS:
        if message.get(key) is not None:
            delta[key] = message[key]
    delta_usage = {key: value for key, value in usage.items() if key in _DELTA_USAGE_KEYS and value is not None}
    delta_usage["output_tokens"] = output_tokens  # required by the SDK's MessageDeltaUsage

    out = [_event(b"message_start", {"type": "message_start", "message": start})]
    content = message.get("content")
    for index, block in enumerate(content if isinstance(content, list) else ()):
        out.extend(_block_events(index, block if isinstance(block, dict) else {}))
    out.append(_event(b"message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage}))
    out.append(_event(b"message_stop", {"type": "message_stop"}))
    return b"".join(out)


def message_bytes(message: dict[str, Any]) -> bytes:
    """The JSON body of a non-streaming answer."""
    return orjson.dumps(message)


def last_user_preview(request_body: bytes, limit: int = 80) -> str:
    """Short preview of the last user message of a Messages request, for the cache's top-prompts list.

    String content, or its text blocks joined with a space; whitespace collapsed, cut to `limit` characters.
    A user turn without text (only tool_result or image blocks, as in an agent loop) is skipped for the
    previous one. "" when there is none or the body is not valid JSON.
    """
    try:
        body = orjson.loads(request_body)
    except orjson.JSONDecodeError:
        return ""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return ""
    for turn in reversed(messages):
        if not isinstance(turn, dict) or turn.get("role") != "user":
            continue
        content = turn.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = " ".join(b["text"] for b in content
                            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
        else:
            continue
        text = " ".join(text.split())
        if text:
            return text[:limit].rstrip()
    return ""
