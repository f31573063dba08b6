"""Anthropic Messages (the pivot) ⇄ Ollama's native `/api/chat` (reference/protocols.md §5, §4.3–4.5).

Theory of operation
-------------------
Three pure pieces, no I/O:

* `anthropic_to_ollama_request` flattens Anthropic content blocks into Ollama's one-string-per-message shape.
  Text blocks of a message are joined by a blank line; base64 images go to the message's `images` list; URL and
  file images cannot be sent (Ollama takes base64 only) and become a text placeholder `[image: <url>]`; PDF
  documents likewise (`[document: …]`), plain-text documents are inlined. Assistant `tool_use` blocks become
  `tool_calls` with *object* arguments; each user `tool_result` becomes its own `role: tool` message (before the
  user's remaining text, keeping block order) named by `tool_name`, looked up from the `tool_use` with that id
  earlier in the conversation. Thinking blocks are dropped (their signatures mean nothing to Ollama) and `think`
  is left unset, so the model's default applies. `tool_choice: none` drops the tools (Ollama has no tool_choice);
  `any`/`tool` cannot be enforced and are ignored. Server tools (no `input_schema`) cannot run on Ollama: dropped.
* `ollama_to_anthropic_response` turns one non-streamed answer into a Message: text block, then tool_use blocks.
* `OllamaStreamToAnthropic` is an incremental state machine over NDJSON bytes (any split: one byte at a time,
  blank lines, CRLF) emitting Anthropic SSE events `(event name, JSON bytes)` that follow every rule of
  protocols.md §1.5: `message_start` first; a block is started before its deltas and stopped before the next one
  starts; tool input only through `input_json_delta` (the block starts with `input: {}` — Claude Code ignores
  input given in `content_block_start`); exactly one `message_delta` with a non-null `stop_reason`, then exactly one
  `message_stop`. Ollama sends a tool call whole in one line, so its block is opened, given its input JSON as one
  `input_json_delta` and closed at once. An `{"error": …}` line becomes an `error` event (`api_error`) and ends the
  stream; so does an unreadable line, and so does end of input before the `done: true` line (`finish()`: the
  stream was cut off, and a truncated answer must not look complete). Anything after the end is ignored.

Decisions
---------
* Stop reasons (protocols.md §4.3): `length` → `max_tokens`; otherwise `tool_use` when the answer holds tool calls
  (Ollama reports `stop` for them; a missing/unknown reason with tool calls is treated alike, since the client
  must run them); everything else (`stop`, `load`, `unload`, missing) → `end_turn`. Ollama cannot say whether a
  stop sequence matched, so `stop_sequence` is never reported.
* Usage: `input_tokens = prompt_eval_count`, `output_tokens = eval_count`, missing → 0 (in a stream a missing
  `prompt_eval_count` keeps the `input_tokens` estimate given to the constructor); cache fields 0.
* Tool ids: Ollama's own `id` when it sends one, else `toolu_<message id suffix>_<position>` — deterministic for a
  given message id and unique across turns because message ids are random.
* Thinking (`message.thinking`) is dropped: an Anthropic thinking block needs a signature we cannot make, and a
  client that sends it back to Anthropic would get a 400. While a model only thinks, a `ping` goes out every
  `_PING_EVERY` thinking lines so clients with a stall watchdog (Claude Code: ~300 s) keep waiting.
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


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _usage(input_tokens: int, output_tokens: int) -> dict:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


# Request: Anthropic → Ollama ---------------------------------------------------------------------------------------

def anthropic_to_ollama_request(req: dict, model: str, stream: bool) -> dict:
    """An Anthropic Messages request body → an Ollama `/api/chat` body (`stream` always explicit: Ollama's default
    is to stream)."""
    messages: list[dict] = []
    system = _system_text(req.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    tool_names: dict[str, str] = {}  # tool_use id → tool name, filled as the conversation is walked
    for message in req.get("messages") or ():
        if isinstance(message, dict):
            _convert_message(message, tool_names, messages)
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": bool(stream)}
    tools = _tools(req.get("tools"), req.get("tool_choice"))
    if tools:
        body["tools"] = tools
    options = _options(req)
    if options:
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
    if role == "assistant":
        texts: list[str] = []
        calls: list[dict] = []
        for block in content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "tool_use":
                name = str(block.get("name") or "")
                call_id = block.get("id")
                if isinstance(call_id, str):
                    tool_names[call_id] = name
                args = block.get("input")
                call: dict[str, Any] = {"function": {"name": name, "arguments": args if isinstance(args, dict) else {}}}
                if isinstance(call_id, str):
                    call["id"] = call_id  # newer Ollama keeps ids; older ones ignore unknown fields
                calls.append(call)
            elif kind not in ("thinking", "redacted_thinking"):
                _block_text(block, texts, None)
        assistant: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts)}
        if calls:
            assistant["tool_calls"] = calls
        if texts or calls:
            out.append(assistant)
        return
    # user (or system) turn: tool results first become `tool` messages, in block order with the user's own text
    pending_text: list[str] = []
    pending_images: list[str] = []

    def flush() -> None:
        if pending_text or pending_images:
            msg: dict[str, Any] = {"role": role, "content": "\n\n".join(pending_text)}
            if pending_images:
                msg["images"] = list(pending_images)
            out.append(msg)
            pending_text.clear()
            pending_images.clear()

    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            flush()
            out.append(_tool_message(block, tool_names))
        elif isinstance(block, dict):
            _block_text(block, pending_text, pending_images)
        elif isinstance(block, str):
            pending_text.append(block)
    flush()


def _tool_message(block: dict, tool_names: dict[str, str]) -> dict:
    texts: list[str] = []
    images: list[str] = []
    content = block.get("content")
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for inner in content:
            if isinstance(inner, dict):
                _block_text(inner, texts, images)
            elif isinstance(inner, str):
                texts.append(inner)
    text = "\n\n".join(texts)
    if block.get("is_error"):
        text = "Error: " + text
    msg: dict[str, Any] = {"role": "tool", "content": text}
    call_id = block.get("tool_use_id")
    if isinstance(call_id, str):
        if call_id in tool_names:
            msg["tool_name"] = tool_names[call_id]
        msg["tool_call_id"] = call_id
    if images:
        msg["images"] = images
    return msg


def _block_text(block: dict, texts: list[str], images: list[str] | None) -> None:
    """Append what a non-tool content block says to `texts` (base64 images to `images` when given)."""
    kind = block.get("type")
    if kind == "text":
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
    elif kind == "image":
        source = block.get("source") if isinstance(block.get("source"), dict) else {}
        if source.get("type") == "base64" and isinstance(source.get("data"), str) and images is not None:
            images.append(source["data"])
        elif source.get("type") == "url":
            texts.append(f"[image: {source.get('url')}]")
        elif source.get("type") == "file":
            texts.append(f"[image: file {source.get('file_id')}]")
        else:
            texts.append("[image]")
    elif kind == "document":
        source = block.get("source") if isinstance(block.get("source"), dict) else {}
        title = block.get("title") if isinstance(block.get("title"), str) else None
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            texts.append(f"[document: {title}]\n{source['data']}" if title else source["data"])
        elif source.get("type") == "content":
            inner = source.get("content")
            if isinstance(inner, str):
                texts.append(inner)
            elif isinstance(inner, list):
                for part in inner:
                    if isinstance(part, dict):
                        _block_text(part, texts, images)
        else:
            what = source.get("url") or title or source.get("media_type") or "attachment"
            texts.append(f"[document: {what} (not readable by this model)]")
    elif kind in ("thinking", "redacted_thinking"):
        return
    elif isinstance(block.get("text"), str):  # unknown kinds that carry text (e.g. future text-like blocks)
        texts.append(block["text"])
    elif isinstance(block.get("content"), list):  # e.g. search_result: its text blocks
        for part in block["content"]:
            if isinstance(part, dict):
                _block_text(part, texts, images)


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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _options(req: dict) -> dict:
    options: dict[str, Any] = {}
    for key in ("temperature", "top_p", "top_k"):
        if _is_number(req.get(key)):
            options[key] = req[key]
    if _is_number(req.get("max_tokens")):
        options["num_predict"] = int(req["max_tokens"])
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
        function = call.get("function") if isinstance(call.get("function"), dict) else call
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
    message = resp.get("message") if isinstance(resp.get("message"), dict) else {}
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

    __slots__ = ("_model", "_message_id", "_buffer", "_scanned", "_started", "_open_text", "_next_index",
                 "_tool_calls", "_thinking_lines", "_input_tokens", "_output_tokens", "_stop_reason", "_done",
                 "_ended", "_error")

    def __init__(self, model: str, message_id: str | None = None, *, input_tokens: int = 0) -> None:
        # config
        self._model = model
        self._message_id = message_id or new_message_id()
        # input framing: bytes of an incomplete line; how far of it was already searched for b"\n"
        self._buffer = bytearray()
        self._scanned = 0
        # output state
        self._started = False  # message_start sent
        self._open_text: int | None = None  # index of the open text block (tool blocks never stay open)
        self._next_index = 0
        self._tool_calls = 0
        self._thinking_lines = 0
        # outcome
        self._input_tokens = _count(input_tokens)
        self._output_tokens = 0
        self._stop_reason: str | None = None
        self._done = False  # the `done: true` line was seen
        self._ended = False  # no more events: done, error or cut off
        self._error: str | None = None

    @property
    def done(self) -> bool:
        """True once Ollama's final `done: true` line was translated (the answer is complete)."""
        return self._done

    @property
    def ended(self) -> bool:
        """True once the event stream is over (complete, or ended by an error event)."""
        return self._ended

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def message_id(self) -> str:
        return self._message_id

    @property
    def usage(self) -> dict:
        return _usage(self._input_tokens, self._output_tokens)

    def feed(self, data: bytes) -> list[Event]:
        if self._ended or not data:
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
                if self._ended:
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
        if self._ended:
            return []
        out: list[Event] = []
        rest = bytes(self._buffer).strip()
        self._buffer.clear()
        self._scanned = 0
        if rest:
            try:
                orjson.loads(rest)
            except orjson.JSONDecodeError:
                rest = b""  # a line cut in the middle: reported as the cut-off below
        if rest:
            self._line(rest, out)
        if not self._ended:
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
                "id": self._message_id, "type": "message", "role": "assistant", "model": self._model,
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
        block = {"type": "tool_use", "id": call_id or tool_use_id(self._message_id, self._tool_calls), "name": name,
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
        self._stop_reason = map_stop_reason(obj.get("done_reason"), self._tool_calls > 0)
        out.append(("message_delta", orjson.dumps({
            "type": "message_delta", "delta": {"stop_reason": self._stop_reason, "stop_sequence": None},
            "usage": self.usage})))
        out.append(_MESSAGE_STOP)
        self._done = True
        self._ended = True

    def _fail(self, out: list[Event], message: str) -> None:
        self._error = message
        self._ended = True
        out.append(("error", orjson.dumps({"type": "error", "error": {"type": "api_error", "message": message}})))
