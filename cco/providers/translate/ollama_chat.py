"""Anthropic Messages (the pivot) ⇄ Ollama's native `/api/chat` (reference/protocols.md §5, §4.3–4.5). No I/O.

Theory of operation
-------------------
* `anthropic_to_ollama_request` flattens content blocks into Ollama's one-string-per-message shape: text blocks
  joined by a blank line; base64 images into the message's `images`; URL/file images (Ollama takes base64 only)
  and PDFs become placeholders (`[image: <url>]`, `[document: …]`), text documents are inlined; assistant
  `tool_use` → `tool_calls` with *object* arguments; each `tool_result` → its own `role: tool` message, in block
  order, with the `tool_name` of the earlier `tool_use` of that id. Thinking blocks are dropped, `think` is left
  unset. `tool_choice: none` drops the tools (Ollama has no tool_choice; `any`/`tool` cannot be enforced); server
  tools (no `input_schema`) cannot run on Ollama and are dropped.
* `ollama_to_anthropic_response`: one non-streamed answer → a Message (text block, then tool_use blocks).
* `OllamaStreamToAnthropic`: a state machine over NDJSON bytes cut anywhere (one byte at a time, blank lines,
  CRLF) emitting SSE events `(name, JSON bytes)` by protocols.md §1.5: `message_start` first; each block started
  before its deltas and stopped before the next; tool input only as `input_json_delta` (blocks start with
  `input: {}`, which Claude Code ignores anyway); one `message_delta` with a non-null `stop_reason`, then one
  `message_stop`. Ollama sends each tool call whole in one line: its block is opened, given its JSON in one
  `input_json_delta` and closed at once. An `{"error": …}` line, an unreadable line, or end of input before the
  `done: true` line (`finish()`: cut off — a truncated answer must not look complete) ends the stream with an
  `error` event (`api_error`). Input after the end is ignored.

Decisions
---------
* Stop reasons (§4.3): `length` → `max_tokens`; else `tool_use` when tool calls came (Ollama says `stop` for them;
  a missing/unknown reason with tool calls too: the client must run them); else (`stop`, `load`, `unload`,
  missing) `end_turn`. Ollama cannot tell a matched stop sequence, so `stop_sequence` stays null.
* Usage: `input_tokens = prompt_eval_count`, `output_tokens = eval_count`, missing → 0 (in a stream a missing
  `prompt_eval_count` keeps the constructor's `input_tokens` estimate); cache fields 0.
* Tool ids: Ollama's `id` when given, else `toolu_<message id suffix>_<position>`: deterministic for a message id,
  unique across turns since message ids are random.
* `message.thinking` is dropped: a thinking block needs a signature we cannot make (sent back to Anthropic it
  would 400). While a model only thinks, a `ping` goes out every `_PING_EVERY` such lines to keep stall watchdogs
  (Claude Code: ~300 s) waiting.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

# A single NDJSON line larger than this is not an Ollama answer line; fail instead of buffering without bound.
_MAX_LINE = 64 * 1024 * 1024
_PING_EVERY = 32

_PING = ("ping", b'{"type":"ping"}')
_MESSAGE_STOP = ("message_stop", b'{"type":"message_stop"}')

Event = tuple[str, bytes]


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def tool_use_id(message_id: str, position: int) -> str:
    """The id of the `position`-th tool call of a message when Ollama gave none."""
    return f"toolu_{message_id.removeprefix('msg_')}_{position}"


def map_stop_reason(done_reason: Any, has_tool_calls: bool) -> str:
    if done_reason == "length":
        return "max_tokens"
    return "tool_use" if has_tool_calls else "end_turn"


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _usage(input_tokens: int, output_tokens: int) -> dict:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


# Request: Anthropic → Ollama ---------------------------------------------------------------------------------------

def anthropic_to_ollama_request(req: dict, model: str, stream: bool) -> dict:
    """An Anthropic Messages request body → an Ollama `/api/chat` body (`stream` always explicit: Ollama's default
    is to stream)."""
    messages: list[dict] = []
    if system := _system_text(req.get("system")):
        messages.append({"role": "system", "content": system})
    tool_names: dict[str, str] = {}  # tool_use id → tool name, filled as the conversation is walked
    for message in req.get("messages") or ():
        if isinstance(message, dict):
            _convert_message(message, tool_names, messages)
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": bool(stream)}
    if tools := _tools(req.get("tools"), req.get("tool_choice")):
        body["tools"] = tools
    if options := _options(req):
        body["options"] = options
    return body


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n\n".join(b["text"] for b in system if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


def _convert_message(message: dict, tool_names: dict[str, str], out: list[dict]) -> None:
    role = message.get("role")
    role = role if role in ("user", "assistant", "system") else "user"
    content = message.get("content")
    if isinstance(content, str):
        out.append({"role": role, "content": content})
        return
    if not isinstance(content, list):
        return
    texts: list[str] = []
    images: list[str] = []
    calls: list[dict] = []

    def flush() -> None:
        msg: dict[str, Any] = {"role": role, "content": "\n\n".join(texts)}
        if images:
            msg["images"] = images[:]
        if calls:
            msg["tool_calls"] = calls[:]
        if texts or images or calls:
            out.append(msg)
        del texts[:], images[:], calls[:]

    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_use" and role == "assistant":
            name, call_id, args = str(block.get("name") or ""), block.get("id"), block.get("input")
            call: dict[str, Any] = {"function": {"name": name, "arguments": _dict(args)}}
            if isinstance(call_id, str):
                tool_names[call_id] = name
                call["id"] = call_id  # newer Ollama keeps ids; older ones ignore unknown fields
            calls.append(call)
        elif kind == "tool_result" and role != "assistant":
            flush()  # the user's text before it stays before it
            out.append(_tool_message(block, tool_names))
        else:
            _content_text(block, texts, images if role != "assistant" else None)
    flush()


def _tool_message(block: dict, tool_names: dict[str, str]) -> dict:
    texts: list[str] = []
    images: list[str] = []
    _content_text(block.get("content"), texts, images)
    text = "\n\n".join(texts)
    msg: dict[str, Any] = {"role": "tool", "content": "Error: " + text if block.get("is_error") else text}
    call_id = block.get("tool_use_id")
    if isinstance(call_id, str):
        if call_id in tool_names:
            msg["tool_name"] = tool_names[call_id]
        msg["tool_call_id"] = call_id
    if images:
        msg["images"] = images
    return msg


def _content_text(item: Any, texts: list[str], images: list[str] | None) -> None:
    """Append what content (a string, a block or a list of them) says to `texts`; base64 images go to `images`
    when given, else a placeholder; thinking says nothing."""
    if isinstance(item, str):
        texts.append(item)
        return
    if isinstance(item, list):
        for part in item:
            _content_text(part, texts, images)
        return
    if not isinstance(item, dict):
        return
    kind = item.get("type")
    source = _dict(item.get("source"))
    if kind == "image":
        if source.get("type") == "base64" and isinstance(source.get("data"), str) and images is not None:
            images.append(source["data"])
        else:
            where = source.get("url") or (source.get("file_id") and f"file {source['file_id']}")
            texts.append(f"[image: {where}]" if where else "[image]")
    elif kind == "document":
        title = item.get("title") if isinstance(item.get("title"), str) else None
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            texts.append(f"[document: {title}]\n{source['data']}" if title else source["data"])
        elif source.get("type") == "content":
            _content_text(source.get("content"), texts, images)
        else:
            what = source.get("url") or title or source.get("media_type") or "attachment"
            texts.append(f"[document: {what} (not readable by this model)]")
    elif kind in ("thinking", "redacted_thinking"):
        return
    elif isinstance(item.get("text"), str):  # text, and unknown kinds that carry text
        texts.append(item["text"])
    elif isinstance(item.get("content"), list):  # e.g. search_result: its text blocks
        _content_text(item["content"], texts, images)


def _tools(tools: Any, choice: Any) -> list[dict] | None:
    if not isinstance(tools, list) or not tools:
        return None
    if isinstance(choice, dict) and choice.get("type") == "none":
        return None
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            continue
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            if tool.get("type") not in (None, "custom"):
                continue  # a server tool (web_search_…, bash_…): only Anthropic can run it
            schema = {"type": "object", "properties": {}}
        function: dict[str, Any] = {"name": tool["name"], "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _options(req: dict) -> dict:
    options: dict[str, Any] = {}
    for key, option in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                        ("max_tokens", "num_predict")):
        value = req.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            options[option] = int(value) if option == "num_predict" else value
    stops = req.get("stop_sequences")
    if isinstance(stops, list) and stops:
        options["stop"] = [s for s in stops if isinstance(s, str)]
    return options


# Response: Ollama → Anthropic --------------------------------------------------------------------------------------

def _tool_calls(message: dict) -> list[tuple[str | None, str, dict]]:
    """Ollama's tool calls as (id or None, name, input object); a list or a lone object; arguments as an object or
    a JSON string (OpenAI style). Arguments that are not a JSON object become `{}`."""
    calls = message.get("tool_calls")
    if isinstance(calls, dict):
        calls = [calls]
    if not isinstance(calls, list):
        return []
    out = []
    for call in calls:
        if not isinstance(call, dict):
            continue
        function = _dict(call.get("function")) or call
        args = function.get("arguments")
        if isinstance(args, (str, bytes)):
            try:
                args = orjson.loads(args) if args.strip() else {}
            except orjson.JSONDecodeError:
                args = {}
        call_id = call.get("id")
        out.append((call_id if isinstance(call_id, str) and call_id else None, str(function.get("name") or ""),
                    args if isinstance(args, dict) else {}))
    return out


def ollama_to_anthropic_response(resp: dict, model: str, *, message_id: str | None = None) -> dict:
    """A non-streamed `/api/chat` answer → an Anthropic Message. Raises ValueError for an answer that is not one."""
    if not isinstance(resp, dict):
        raise ValueError("the Ollama answer is not a JSON object")
    if resp.get("error") is not None:
        raise ValueError(f"Ollama error: {resp['error']}")
    message = _dict(resp.get("message"))
    message_id = message_id or new_message_id()
    content: list[dict] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = _tool_calls(message)
    for position, (call_id, name, args) in enumerate(calls):
        content.append({"type": "tool_use", "id": call_id or tool_use_id(message_id, position), "name": name,
                        "input": args})
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": map_stop_reason(resp.get("done_reason"), bool(calls)), "stop_sequence": None,
            "usage": _usage(_count(resp.get("prompt_eval_count")), _count(resp.get("eval_count")))}


# Stream: Ollama NDJSON → Anthropic SSE events ----------------------------------------------------------------------

class OllamaStreamToAnthropic:
    """Feed raw NDJSON bytes as they arrive; get Anthropic SSE events `(event, data)` back (see the module doc)."""

    __slots__ = ("_model", "message_id", "_buffer", "_scanned", "_started", "_open_text", "_next_index",
                 "_tool_calls", "_thinking_lines", "_input_tokens", "_output_tokens", "stop_reason", "_done",
                 "ended", "error")

    def __init__(self, model: str, message_id: str | None = None, *, input_tokens: int = 0) -> None:
        # config
        self._model = model
        self.message_id = message_id or new_message_id()
        # input framing: bytes of an incomplete line; how far of it was already searched for b"\n"
        self._buffer = bytearray()
        self._scanned = 0
        # output state
        self._started = False  # message_start sent
        self._open_text: int | None = None  # index of the open text block (tool blocks never stay open)
        self._next_index = 0
        self._tool_calls = 0
        self._thinking_lines = 0
        # outcome (public attributes are read-only for callers)
        self._input_tokens = _count(input_tokens)
        self._output_tokens = 0
        self.stop_reason: str | None = None
        self._done = False
        self.ended = False  # no more events: complete, or ended by an error event
        self.error: str | None = None  # the message of the error event that ended the stream

    @property
    def done(self) -> bool:
        """True once Ollama's final `done: true` line was translated (the answer is complete)."""
        return self._done

    @property
    def usage(self) -> dict:
        """Anthropic usage so far (final once `done`)."""
        return _usage(self._input_tokens, self._output_tokens)

    def feed(self, data: bytes) -> list[Event]:
        if self.ended or not data:
            return []
        buffer = self._buffer
        buffer += data
        out: list[Event] = []
        start = 0
        while True:
            newline = buffer.find(b"\n", max(self._scanned, start))
            if newline < 0:
                break
            line = bytes(buffer[start:newline]).strip()
            start = newline + 1
            if line:
                self._line(line, out)
                if self.ended:
                    buffer.clear()  # trailing data after the end is ignored
                    self._scanned = 0
                    return out
        del buffer[:start]
        self._scanned = len(buffer)
        if len(buffer) > _MAX_LINE:
            buffer.clear()
            self._fail(out, "the Ollama stream sent an over-long line")
        return out

    def finish(self) -> list[Event]:
        """End of input. A final line without its newline still counts; no `done: true` line means the stream was
        cut off, which the client must learn as an `error` event rather than as a complete answer."""
        if self.ended:
            return []
        out: list[Event] = []
        rest = bytes(self._buffer).strip()
        self._buffer.clear()
        self._scanned = 0
        if rest and _is_json(rest):  # else a line cut in the middle: reported as the cut-off below
            self._line(rest, out)
        if not self.ended:
            self._fail(out, "the Ollama stream ended before its final line (done: true): the answer is incomplete")
        return out

    # Line handling

    def _line(self, line: bytes, out: list[Event]) -> None:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            self._fail(out, "the Ollama stream sent an unreadable line")
            return
        if not isinstance(obj, dict):
            self._fail(out, "the Ollama stream sent a line that is not a JSON object")
            return
        error = obj.get("error")
        if error is not None:
            self._fail(out, error if isinstance(error, str) else orjson.dumps(error).decode())
            return
        if not self._started:
            self._started = True
            out.append(("message_start", orjson.dumps({"type": "message_start", "message": {
                "id": self.message_id, "type": "message", "role": "assistant", "model": self._model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": _usage(self._input_tokens, 0)}})))
        message = obj.get("message")
        if isinstance(message, dict):
            text = message.get("content")
            if isinstance(text, str) and text:
                self._text(text, out)
            calls = _tool_calls(message)
            for call_id, name, args in calls:
                self._tool(call_id, name, args, out)
            if not text and not calls and message.get("thinking"):
                if self._thinking_lines % _PING_EVERY == 0:
                    out.append(_PING)
                self._thinking_lines += 1
        if obj.get("done") is True:
            self._finish_message(obj, out)

    def _text(self, text: str, out: list[Event]) -> None:
        index = self._open_text
        if index is None:
            index = self._open_text = self._next_index
            self._next_index += 1
            out.append(("content_block_start", orjson.dumps(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})))
        out.append(("content_block_delta", orjson.dumps(
            {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})))

    def _tool(self, call_id: str | None, name: str, args: dict, out: list[Event]) -> None:
        self._close_text(out)
        index = self._next_index
        self._next_index += 1
        block = {"type": "tool_use", "id": call_id or tool_use_id(self.message_id, self._tool_calls), "name": name,
                 "input": {}}
        self._tool_calls += 1
        out.append(("content_block_start", orjson.dumps(
            {"type": "content_block_start", "index": index, "content_block": block})))
        out.append(("content_block_delta", orjson.dumps({"type": "content_block_delta", "index": index, "delta": {
            "type": "input_json_delta", "partial_json": orjson.dumps(args).decode()}})))
        out.append(("content_block_stop", orjson.dumps({"type": "content_block_stop", "index": index})))

    def _close_text(self, out: list[Event]) -> None:
        if self._open_text is not None:
            out.append(("content_block_stop", orjson.dumps({"type": "content_block_stop", "index": self._open_text})))
            self._open_text = None

    def _finish_message(self, obj: dict, out: list[Event]) -> None:
        self._close_text(out)
        if "prompt_eval_count" in obj:
            self._input_tokens = _count(obj.get("prompt_eval_count"))
        self._output_tokens = _count(obj.get("eval_count"))
        self.stop_reason = map_stop_reason(obj.get("done_reason"), self._tool_calls > 0)
        out.append(("message_delta", orjson.dumps({
            "type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": self.usage})))
        out.append(_MESSAGE_STOP)
        self._done = True
        self.ended = True

    def _fail(self, out: list[Event], message: str) -> None:
        self.error = message
        self.ended = True
        out.append(("error", orjson.dumps({"type": "error", "error": {"type": "api_error", "message": message}})))
