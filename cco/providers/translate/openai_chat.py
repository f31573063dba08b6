"""Anthropic Messages (the pivot) ⇄ OpenAI Chat Completions (reference/protocols.md §1.3–1.6, §3, §4). No I/O.

Theory of operation
-------------------
* Requests: `anthropic_to_openai_request` (client → OpenAI-compatible backend), `openai_to_anthropic_request`
  (`/v1/chat/completions` client → Anthropic). Each builds a fresh body from the fields it knows, so anything
  without an equivalent (beta fields, `cache_control`, `thinking`, `top_k`, `response_format`, …) is dropped.
  `openai_to_anthropic_request` checks what it reads: `ValueError("<json path>: <why>")` means a 400.
* Responses: `openai_to_anthropic_response`, `anthropic_to_openai_response`, with the stop-reason maps and the
  usage converters (§4.3, §4.4) as module-level functions.
* `OpenAIStreamToAnthropic.feed(bytes)`: raw SSE bytes (any split, CRLF/LF/CR, comments) → Anthropic events
  `(name, JSON bytes)`. The answer is kept as *segments* in order of first appearance (a text run, or one tool
  call keyed by its `index`). Only the oldest unfinished segment streams live; later ones are buffered. The live
  one is stopped when a later one exists and it is finished — text always is, a tool call once its arguments parse
  as a JSON object — so blocks never overlap even when a backend interleaves tool-call deltas by index (the usual
  sequential stream buffers nothing). Tool blocks start with `input: {}` and get their JSON only through
  `input_json_delta` (`"{}"` for a call that sent no arguments). `[DONE]` closes: remaining segments in order,
  one `message_delta` (stop reason, usage-chunk figures), one `message_stop`; anything after is ignored.
* `AnthropicStreamToOpenAI.feed(event, data)`: one Anthropic SSE event → complete `data: {chunk}\\n\\n` frames.

Decisions
---------
* `max_tokens` → `max_tokens`, never `max_completion_tokens`: TGI and LocalAI only know the former, vLLM and
  OpenAI's non-reasoning models accept it. Streams add `stream_options.include_usage`. `top_k` is dropped.
* `metadata.user_id` → `user`; longer than 64 chars (Claude Code sends a ~200-char JSON string) it becomes
  `cco-` + 32 hex of its SHA-256 (stable per user, §4.1 "hash into user").
* A user turn without images becomes one string (text blocks joined by "\\n": widest backend support), else a
  parts array. Tool-result images go into the user message after the `tool` messages; `is_error` results are
  prefixed "Error: ". Text documents are inlined, other documents and file images raise `ValueError`. Unknown and
  server block types are dropped, and so are thinking blocks.
* Tool arguments that are not a JSON object become `{"_raw_arguments": "<raw>"}` (`RAW_ARGUMENTS_KEY`): the
  client's input validation fails visibly so the model can retry, and sent back that input is the raw string
  again. Object arguments (old TGI, llama.cpp) are accepted. Tool ids get `^[A-Za-z0-9_-]+$` (other characters →
  `_`) as Anthropic requires; missing ids are generated (`toolu_…`).
* Stop reasons: stop→end_turn (tool_use if tool calls are present), length→max_tokens, tool_calls/function_call→
  tool_use (end_turn if none are present), content_filter→refusal, missing→end_turn; a refusal-only answer →
  refusal. vLLM's `choices[].stop_reason` string (the matched stop string) → `stop_sequence` with that value.
* Reasoning (`reasoning_content`/`reasoning`) is dropped, as in the Ollama translator: a thinking block needs a
  signature we cannot make, and a client sending it back to Anthropic would get a 400. While a model only
  reasons, a `ping` goes out every `_PING_EVERY` chunks so stall watchdogs (Claude Code: ~300 s) keep waiting.
* Stream end: `[DONE]` → normal end (stop reason from `finish_reason`, else end_turn/tool_use); end of input after
  a `finish_reason` but without `[DONE]` → normal end (some servers omit it); end of input with neither → cut off:
  an `error` event (`api_error`, "upstream stream ended early") instead of a complete-looking answer. An upstream
  error payload (`{"error": …}`, vLLM `{"object": "error"}`) or a non-JSON chunk → `error` event
  (`overloaded_error` when it says overloaded/503/529, else `api_error`) and the stream ends.
* OpenAI → Anthropic: `max_completion_tokens` wins over `max_tokens`, default `DEFAULT_MAX_TOKENS` (4096);
  `temperature` is clamped to [0, 1]; `top_p: 1` (a no-op) is dropped because newer Claude models reject
  temperature and top_p together; system/developer messages (anywhere) → `system`; `n > 1`, non-function tools,
  audio parts and unknown roles raise `ValueError`; the caller pins `anthropic-version: 2023-06-01` (SPEC §4).
* Anthropic → OpenAI stream: the first chunk carries `role` (content "", or null plus the tool call when the
  answer opens with one); thinking is dropped; an `error` event → `data: {"error": …}` then `[DONE]`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

import orjson

from cco._fast import SseSplitter, parse_event

Event = tuple[str, bytes]

RAW_ARGUMENTS_KEY = "_raw_arguments"
DEFAULT_MAX_TOKENS = 4096
_PING_EVERY = 32
_PING: Event = ("ping", b'{"type":"ping"}')
_MESSAGE_STOP: Event = ("message_stop", b'{"type":"message_stop"}')
_DONE = b"data: [DONE]\n\n"
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")

_FINISH_TO_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                   "function_call": "tool_use", "content_filter": "refusal"}
_STOP_TO_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
                   "model_context_window_exceeded": "length", "tool_use": "tool_calls",
                   "refusal": "content_filter"}
_ERROR_TO_OPENAI = {"invalid_request_error": "invalid_request_error", "authentication_error": "invalid_request_error",
                    "permission_error": "invalid_request_error", "not_found_error": "invalid_request_error",
                    "request_too_large": "invalid_request_error", "rate_limit_error": "rate_limit_exceeded"}


# ---------------------------------------------------------------------------------------------------- helpers

def finish_reason_to_stop_reason(finish_reason: Any, has_tool_calls: bool = False) -> str:
    reason = _FINISH_TO_STOP.get(finish_reason, "end_turn")
    if reason == "end_turn" and has_tool_calls:
        return "tool_use"  # e.g. Ollama-style backends report "stop" for tool calls
    if reason == "tool_use" and not has_tool_calls:
        return "end_turn"
    return reason


def stop_reason_to_finish_reason(stop_reason: Any) -> str:
    return _STOP_TO_FINISH.get(stop_reason, "stop")


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0


def openai_usage_to_anthropic(usage: Any) -> dict:
    u = usage if isinstance(usage, dict) else {}
    details = u.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached = _count(details.get("cached_tokens"))
    written = _count(details.get("cache_write_tokens"))
    return {"input_tokens": max(_count(u.get("prompt_tokens")) - cached - written, 0),
            "output_tokens": _count(u.get("completion_tokens")),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": cached}


def anthropic_usage_to_openai(usage: Any) -> dict:
    u = usage if isinstance(usage, dict) else {}
    read = _count(u.get("cache_read_input_tokens"))
    prompt = _count(u.get("input_tokens")) + read + _count(u.get("cache_creation_input_tokens"))
    output = _count(u.get("output_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
            "prompt_tokens_details": {"cached_tokens": read}}


def _clean_id(raw: Any, prefix: str) -> str:
    if isinstance(raw, str) and raw:
        return _BAD_ID_CHARS.sub("_", raw)
    return prefix + secrets.token_hex(12)


def _swap_prefix(raw: Any, old: str, new: str) -> str:
    """`chatcmpl-X` → `msg_X` and back (random when there is no id)."""
    rest = raw.removeprefix(old) if isinstance(raw, str) else ""
    return new + (_BAD_ID_CHARS.sub("_", rest) if rest else secrets.token_hex(12))


def parse_arguments(arguments: Any) -> dict:
    """OpenAI tool-call arguments (JSON string, or an object from old TGI/llama.cpp) → an Anthropic `input`."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, str):
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        return parsed if isinstance(parsed, dict) else {RAW_ARGUMENTS_KEY: arguments}
    return {RAW_ARGUMENTS_KEY: orjson.dumps(arguments).decode()}


def _arguments_json(tool_input: Any) -> str:
    if isinstance(tool_input, dict) and len(tool_input) == 1 and isinstance(tool_input.get(RAW_ARGUMENTS_KEY), str):
        return tool_input[RAW_ARGUMENTS_KEY]
    return orjson.dumps(tool_input if isinstance(tool_input, dict) else {}).decode()


def _tool_calls(blocks: list[dict]) -> list[dict]:
    """Anthropic tool_use blocks → OpenAI `tool_calls` (arguments as a JSON string)."""
    return [{"id": b.get("id"), "type": "function",
             "function": {"name": b.get("name"), "arguments": _arguments_json(b.get("input"))}}
            for b in blocks if b.get("type") == "tool_use"]


def _blocks_text(content: Any, sep: str = "\n") -> str:
    """Text of an Anthropic string-or-blocks content, or of OpenAI string-or-parts content."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return sep.join(b["text"] for b in content if isinstance(b, dict) and b.get("type") in ("text", "refusal")
                    and isinstance(b.get("text"), str))


def encode_events(events: list[Event]) -> bytes:
    """Anthropic events as SSE bytes (`event:` line, `data:` line, blank line)."""
    return b"".join(b"event: " + name.encode() + b"\ndata: " + data + b"\n\n" for name, data in events)


# ------------------------------------------------------------------------- request: Anthropic → OpenAI

def anthropic_to_openai_request(req: dict, model: str) -> dict:
    messages: list[dict] = []
    system = _blocks_text(req.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(req.get("messages") or []):
        if isinstance(message, dict):
            _anthropic_message(message, f"messages[{i}]", messages)
    body: dict[str, Any] = {"model": model, "messages": messages}
    if isinstance(req.get("max_tokens"), int):
        body["max_tokens"] = req["max_tokens"]
    for name in ("temperature", "top_p"):
        if isinstance(req.get(name), (int, float)) and not isinstance(req.get(name), bool):
            body[name] = req[name]
    stops = req.get("stop_sequences")
    if isinstance(stops, list) and stops:
        body["stop"] = stops
    tools = [{"type": "function", "function": {"name": t.get("name"), **(
        {"description": t["description"]} if isinstance(t.get("description"), str) else {}),
        "parameters": t["input_schema"]}}
        for t in req.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("input_schema"), dict)]
    if tools:  # server tools (no input_schema) have no OpenAI equivalent
        body["tools"] = tools
        choice = req.get("tool_choice")
        if isinstance(choice, dict):
            kind = choice.get("type")
            if kind in ("auto", "any", "none"):
                body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
            elif kind == "tool" and isinstance(choice.get("name"), str):
                body["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
            if choice.get("disable_parallel_tool_use") is True and kind != "none":
                body["parallel_tool_calls"] = False
    if req.get("stream") is True:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    metadata = req.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user, str) and user:
        body["user"] = user if len(user) <= 64 else "cco-" + hashlib.sha256(user.encode()).hexdigest()[:32]
    return body


def _anthropic_message(message: dict, path: str, out: list[dict]) -> None:
    role, content = message.get("role"), message.get("content")
    if role == "system":
        out.append({"role": "system", "content": _blocks_text(content)})
        return
    if isinstance(content, str):
        out.append({"role": "assistant" if role == "assistant" else "user", "content": content})
        return
    blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    if role == "assistant":
        texts = [b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)]
        calls = _tool_calls(blocks)
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else (None if calls else "")}
        if calls:
            msg["tool_calls"] = calls
        out.append(msg)
        return
    parts: list[dict] = []
    for j, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "tool_result":  # one `tool` message each, before the rest of the turn
            result = block.get("content")
            text = _blocks_text(result)
            if block.get("is_error") is True:
                text = "Error: " + text
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
            if isinstance(result, list):
                parts += [_image_part(b, f"{path}.content[{j}]") for b in result
                          if isinstance(b, dict) and b.get("type") == "image"]
        elif kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, f"{path}.content[{j}]"))
        elif kind == "document":
            parts.append({"type": "text", "text": _document_text(block, f"{path}.content[{j}]")})
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})


def _image_part(block: dict, path: str) -> dict:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    kind = source.get("type")
    if kind == "base64":
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
    elif kind == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise ValueError(f"{path}.source: an image with source type {kind!r} cannot be sent to an "
                         "OpenAI-compatible backend")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_text(block: dict, path: str) -> str:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    kind = source.get("type")
    if kind == "text" and isinstance(source.get("data"), str):
        text = source["data"]
    elif kind == "content":
        text = _blocks_text(source.get("content"))
    else:
        raise ValueError(f"{path}.source: a document with source type {kind!r} cannot be sent to an "
                         "OpenAI-compatible backend (only text documents can)")
    title = block.get("title")
    return f"{title}\n{text}" if isinstance(title, str) and title else text


# ------------------------------------------------------------------------- response: OpenAI → Anthropic

def openai_to_anthropic_response(resp: dict, model: str) -> dict:
    if not isinstance(resp, dict) or resp.get("error") or resp.get("object") == "error":
        raise ValueError("the upstream answer is not a chat.completion")
    choices = resp.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[dict] = []
    text = _blocks_text(message.get("content"), "")
    refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else ""
    if text or refusal:
        content.append({"type": "text", "text": text or refusal})
    calls = message.get("tool_calls")
    calls = [calls] if isinstance(calls, dict) else calls if isinstance(calls, list) else []
    if isinstance(message.get("function_call"), dict):  # legacy functions API
        calls = [*calls, {"function": message["function_call"]}]
    calls = [c for c in calls if isinstance(c, dict) and isinstance(c.get("function"), dict)]
    for call in calls:
        content.append({"type": "tool_use", "id": _clean_id(call.get("id"), "toolu_"),
                        "name": call["function"].get("name") or "",
                        "input": parse_arguments(call["function"].get("arguments"))})
    finish = choice.get("finish_reason")
    stop_reason = finish_reason_to_stop_reason(finish, bool(calls))
    stop_sequence = None
    if stop_reason == "end_turn" and refusal and not text:
        stop_reason = "refusal"
    elif stop_reason == "end_turn" and finish == "stop" and isinstance(choice.get("stop_reason"), str):
        stop_reason, stop_sequence = "stop_sequence", choice["stop_reason"]  # vLLM names the matched string
    return {"id": _swap_prefix(resp.get("id"), "chatcmpl-", "msg_"), "type": "message", "role": "assistant",
            "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": openai_usage_to_anthropic(resp.get("usage"))}


# ------------------------------------------------------------------- stream: OpenAI SSE → Anthropic SSE

class _Segment:
    """One future Anthropic content block: a text run or one tool call."""

    __slots__ = ("kind", "id", "name", "args", "parts", "index", "closed", "snapshot", "checked", "complete")

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "text" | "tool"
        self.id: str | None = None
        self.name: str | None = None
        self.args = ""  # every argument character received (tools)
        self.parts: list[str] = []  # received but not yet emitted
        self.index: int | None = None  # Anthropic block index once started
        self.closed = False  # content_block_stop sent
        self.snapshot = False  # the backend sends cumulative argument snapshots
        self.checked = -1  # len(args) at the last completeness check
        self.complete = False


def _args_complete(seg: _Segment) -> bool:
    if seg.checked != len(seg.args):
        seg.checked = len(seg.args)
        tail = seg.args.rstrip()
        seg.complete = False
        if tail.endswith("}"):
            try:
                seg.complete = isinstance(orjson.loads(tail), dict)
            except orjson.JSONDecodeError:
                pass
    return seg.complete


def _stream_error(chunk: dict) -> tuple[str, str]:
    err = chunk.get("error")
    source = err if isinstance(err, dict) else chunk
    message = err if isinstance(err, str) else source.get("message")
    overloaded = "overload" in f"{source.get('type')} {message}".lower() or str(source.get("code")) in ("503", "529")
    kind = "overloaded_error" if overloaded else "api_error"
    return kind, message if isinstance(message, str) and message else "upstream stream error"


class OpenAIStreamToAnthropic:
    """Feed raw OpenAI SSE bytes as they arrive; get Anthropic SSE events `(event, data)` back (module doc).

    Read-only outcome attributes: `model` (served name), `message_id` (given, else derived from the first chunk),
    `upstream_model`, `stop_reason`, `done` (ended normally), `ended` (no more events: done or error), `error`
    (message of the error event sent, if any); property `usage` (Anthropic shape, as far as known)."""

    def __init__(self, model: str, message_id: str | None = None, *, input_tokens: int = 0) -> None:
        self.model = model
        self.message_id = message_id
        self.upstream_model: str | None = None
        self.stop_reason: str | None = None
        self.done = self.ended = False
        self.error: str | None = None
        self._splitter = SseSplitter()
        self._segments: list[_Segment] = []
        self._head = 0  # position in _segments of the live (or next to start) segment
        self._tools: dict[Any, _Segment] = {}  # OpenAI tool-call index → segment
        self._tool_ids: dict[str, Any] = {}
        self._next_index = 0
        self._started = self._refusal = False
        self._finish_reason: str | None = None
        self._stop_string: str | None = None
        self._quiet_chunks = 0
        self._upstream_usage: dict | None = None
        self._input_tokens = _count(input_tokens)

    @property
    def usage(self) -> dict:
        if self._upstream_usage is not None:
            return openai_usage_to_anthropic(self._upstream_usage)
        return {"input_tokens": self._input_tokens, "output_tokens": 0, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0}

    def feed(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        if self.ended:
            return out
        for block in self._splitter.feed(data):
            self._event(parse_event(block)[1].strip(), out)
            if self.ended:
                break
        return out

    def finish(self) -> list[Event]:
        """End of input: closes the answer, or reports a cut-off stream as an `error` event."""
        out: list[Event] = []
        if self.ended:
            return out
        payload = parse_event(self._splitter.pending)[1].strip()  # a last event missing its blank line
        if payload == b"[DONE]":
            self._event(payload, out)
        elif payload:
            try:
                orjson.loads(payload)
                self._event(payload, out)
            except orjson.JSONDecodeError:
                pass  # cut in the middle of a chunk
        if not self.ended:
            if self._finish_reason is not None:
                self._close(out)
            else:
                self._fail(out, "api_error", "upstream stream ended early")
        return out

    # events and chunks

    def _event(self, payload: bytes, out: list[Event]) -> None:
        if not payload:
            return  # comment-only block
        if payload == b"[DONE]":
            self._close(out)
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._fail(out, "api_error", "upstream sent a stream chunk that is not JSON")
            return
        if not isinstance(chunk, dict):
            return
        if chunk.get("error") or chunk.get("object") == "error":
            self._fail(out, *_stream_error(chunk))
            return
        if not self._started:
            self._start(chunk, out)
        if self.upstream_model is None and isinstance(chunk.get("model"), str):
            self.upstream_model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self._upstream_usage = chunk["usage"]
        emitted = len(out)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, out)
                if (delta.get("reasoning_content") or delta.get("reasoning")) and len(out) == emitted:
                    self._quiet_chunks += 1
                    if self._quiet_chunks % _PING_EVERY == 0:
                        out.append(_PING)
            if isinstance(choice.get("finish_reason"), str) and choice["finish_reason"]:
                self._finish_reason = choice["finish_reason"]
            if isinstance(choice.get("stop_reason"), str) and choice["stop_reason"]:
                self._stop_string = choice["stop_reason"]

    def _start(self, chunk: dict, out: list[Event]) -> None:
        self._started = True
        if self.message_id is None:
            self.message_id = _swap_prefix(chunk.get("id"), "chatcmpl-", "msg_")
        usage = {"input_tokens": self._input_tokens, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0, "output_tokens": 0}
        if isinstance(chunk.get("usage"), dict):
            usage = openai_usage_to_anthropic(chunk["usage"])
        message = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
        out.append(("message_start", orjson.dumps({"type": "message_start", "message": message})))

    def _delta(self, delta: dict, out: list[Event]) -> None:
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._text(content, out)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._refusal = True
            self._text(refusal, out)
        calls = delta.get("tool_calls")
        if isinstance(calls, dict):  # old TGI: a single object instead of a list
            calls = [calls]
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._tool(call, out)
        self._advance(out)

    def _text(self, text: str, out: list[Event]) -> None:
        segments = self._segments
        if segments and segments[-1].kind == "text" and self._head < len(segments):
            seg = segments[-1]
        else:
            seg = _Segment("text")
            segments.append(seg)
        self._emit_or_keep(seg, text, out)

    def _tool(self, call: dict, out: list[Event]) -> None:
        key = call.get("index")
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        if not isinstance(key, int) or isinstance(key, bool):
            if call_id is not None and call_id in self._tool_ids:
                key = self._tool_ids[call_id]
            elif call_id is not None or not self._tools:
                key = ("position", len(self._tools))
            else:
                key = next(reversed(self._tools))
        seg = self._tools.get(key)
        if seg is None:
            seg = self._tools[key] = _Segment("tool")
            self._segments.append(seg)
        if call_id is not None and seg.id is None:
            seg.id = call_id
            self._tool_ids[call_id] = key
        fn = call.get("function") if isinstance(call.get("function"), dict) else {}
        if isinstance(fn.get("name"), str) and fn["name"] and not seg.name:
            seg.name = fn["name"]
        args = fn.get("arguments")
        if isinstance(args, (dict, list)):  # an object, not a string: always a whole snapshot
            args = orjson.dumps(args).decode()
            seg.snapshot = seg.snapshot or bool(seg.args)
        if not isinstance(args, str) or not args:
            return
        received = seg.args
        if seg.snapshot or (len(received) >= 2 and args.startswith(received)):
            # cumulative snapshots instead of deltas: send what is new
            seg.snapshot = True
            if not args.startswith(received):
                return  # inconsistent snapshot: what was sent cannot be taken back
            args = args[len(received):]
            if not args:
                return
        seg.args += args
        self._emit_or_keep(seg, args, out)

    def _emit_or_keep(self, seg: _Segment, piece: str, out: list[Event]) -> None:
        if seg.closed:
            return  # only whitespace can follow arguments that already parsed as a complete object
        if seg.index is not None:  # started and not closed: the live segment
            out.append(self._delta_event(seg, piece))
        else:
            seg.parts.append(piece)

    def _delta_event(self, seg: _Segment, piece: str) -> Event:
        delta = {"type": "text_delta", "text": piece} if seg.kind == "text" else \
            {"type": "input_json_delta", "partial_json": piece}
        return "content_block_delta", orjson.dumps({"type": "content_block_delta", "index": seg.index,
                                                    "delta": delta})

    def _advance(self, out: list[Event]) -> None:
        segments = self._segments
        while self._head < len(segments):
            seg = segments[self._head]
            if seg.index is None:
                if seg.kind == "tool" and not seg.name:
                    return  # cannot start a tool_use block before its name is known
                self._start_block(seg, out)
            if self._head == len(segments) - 1:
                return  # the newest segment may still grow
            if seg.kind == "tool" and not _args_complete(seg):
                return  # more argument pieces may come: later segments wait
            self._stop_block(seg, out)
            self._head += 1

    def _start_block(self, seg: _Segment, out: list[Event]) -> None:
        seg.index = self._next_index
        self._next_index += 1
        if seg.kind == "text":
            block: dict[str, Any] = {"type": "text", "text": ""}
        else:
            block = {"type": "tool_use", "id": _clean_id(seg.id, "toolu_"), "name": seg.name, "input": {}}
        out.append(("content_block_start", orjson.dumps({"type": "content_block_start", "index": seg.index,
                                                         "content_block": block})))
        out += [self._delta_event(seg, piece) for piece in seg.parts]
        seg.parts = []

    def _stop_block(self, seg: _Segment, out: list[Event]) -> None:
        if seg.kind == "tool" and not seg.args.strip():
            out.append(self._delta_event(seg, "{}"))  # a tool call without arguments
        seg.closed = True
        out.append(("content_block_stop", orjson.dumps({"type": "content_block_stop", "index": seg.index})))

    def _close(self, out: list[Event]) -> None:
        if not self._started:
            self._start({}, out)
        for seg in self._segments[self._head:]:
            if seg.index is None:
                if seg.kind == "tool" and not seg.name:
                    continue  # a tool call that never got a name cannot be run: dropped
                self._start_block(seg, out)
            self._stop_block(seg, out)
        self._head = len(self._segments)
        has_tools = any(s.kind == "tool" and s.index is not None for s in self._segments)
        stop_reason = finish_reason_to_stop_reason(self._finish_reason, has_tools)
        stop_sequence = None
        if stop_reason == "end_turn" and self._refusal:
            stop_reason = "refusal"
        elif stop_reason == "end_turn" and self._finish_reason == "stop" and self._stop_string:
            stop_reason, stop_sequence = "stop_sequence", self._stop_string
        usage: dict[str, int] = {"output_tokens": 0}
        if self._upstream_usage is not None:
            usage = openai_usage_to_anthropic(self._upstream_usage)
        out.append(("message_delta", orjson.dumps({"type": "message_delta", "delta": {
            "stop_reason": stop_reason, "stop_sequence": stop_sequence}, "usage": usage})))
        out.append(_MESSAGE_STOP)
        self.stop_reason = stop_reason
        self.ended = self.done = True

    def _fail(self, out: list[Event], error_type: str, message: str) -> None:
        out.append(("error", orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})))
        self.error = message
        self.ended = True


# ------------------------------------------------------------------------- request: OpenAI → Anthropic

def _positive_int(req: dict, name: str) -> int | None:
    value = req.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive integer")
    return value


def _number(req: dict, name: str) -> float | None:
    value = req.get(name)
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        raise ValueError(f"{name}: expected a number")
    return value


def openai_to_anthropic_request(req: dict) -> dict:
    if not isinstance(req, dict):
        raise ValueError("body: expected a JSON object")
    messages = req.get("messages")
    if not isinstance(messages, list):
        raise ValueError("messages: expected an array")
    n = _positive_int(req, "n")
    if n is not None and n > 1:
        raise ValueError("n: only n=1 is supported for models served by Anthropic")
    system: list[str] = []
    turns: list[dict] = []
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ValueError(f"{path}: expected an object")
        role = message.get("role")
        if role in ("system", "developer"):
            text = _openai_text(message.get("content"), f"{path}.content")
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _openai_parts(message.get("content"), f"{path}.content")
        elif role == "assistant":
            blocks = _openai_assistant(message, path)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise ValueError(f"{path}.tool_call_id: expected a non-empty string")
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": _clean_id(call_id, "toolu_")}
            text = _openai_text(message.get("content"), f"{path}.content")
            if text:
                result["content"] = text
            blocks, role = [result], "user"
        else:
            raise ValueError(f"{path}.role: unsupported role {role!r}")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:  # Anthropic needs alternating roles: merge
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # tool results must open their user turn
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    max_tokens = _positive_int(req, "max_tokens")
    max_tokens = _positive_int(req, "max_completion_tokens") or max_tokens
    body: dict[str, Any] = {}
    if isinstance(req.get("model"), str):
        body["model"] = req["model"]
    body["messages"] = turns
    if system:
        body["system"] = "\n\n".join(system)
    body["max_tokens"] = max_tokens or DEFAULT_MAX_TOKENS
    temperature, top_p = _number(req, "temperature"), _number(req, "top_p")
    if temperature is not None:
        body["temperature"] = min(max(temperature, 0), 1)
    if top_p is not None and top_p != 1:
        body["top_p"] = top_p
    stop = req.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise ValueError("stop: expected a string or an array of strings")
    if stop:
        body["stop_sequences"] = stop
    tools = _openai_tools(req.get("tools"))
    if tools:
        body["tools"] = tools
        choice = _openai_tool_choice(req.get("tool_choice"))
        if req.get("parallel_tool_calls") is False and (choice is None or choice["type"] != "none"):
            choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if choice is not None:
            body["tool_choice"] = choice
    if isinstance(req.get("stream"), bool):
        body["stream"] = req["stream"]
    if isinstance(req.get("user"), str) and req["user"]:
        body["metadata"] = {"user_id": req["user"]}
    return body


def _openai_text(content: Any, path: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise ValueError(f"{path}: expected a string or an array of content parts")
    return _blocks_text(content)


def _openai_parts(content: Any, path: str) -> list[dict]:
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise ValueError(f"{path}: expected a string or an array of content parts")
    blocks: list[dict] = []
    for k, part in enumerate(content):
        p = f"{path}[{k}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise ValueError(f"{p}.{kind}: expected a string")
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise ValueError(f"{p}.image_url.url: expected a string")
            blocks.append({"type": "image", "source": _url_source(url, f"{p}.image_url.url")})
        elif kind == "file" and isinstance(part.get("file"), dict) and isinstance(part["file"].get("file_data"),
                                                                                   str):
            blocks.append({"type": "document", "source": _url_source(part["file"]["file_data"], f"{p}.file")})
        else:
            raise ValueError(f"{p}: content part type {kind!r} is not supported for models served by Anthropic")
    return blocks


def _url_source(url: str, path: str) -> dict:
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        params = header.split(";")
        if not comma or not params[0] or "base64" not in params[1:]:
            raise ValueError(f"{path}: only base64 data URLs with a media type are supported")
        return {"type": "base64", "media_type": params[0], "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise ValueError(f"{path}: expected an http(s) URL or a base64 data URL")


def _openai_assistant(message: dict, path: str) -> list[dict]:
    blocks = _openai_parts(message.get("content"), f"{path}.content")
    calls = message.get("tool_calls")
    if calls is None:
        return blocks
    if not isinstance(calls, list):
        raise ValueError(f"{path}.tool_calls: expected an array")
    for k, call in enumerate(calls):
        p = f"{path}.tool_calls[{k}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise ValueError(f"{p}.function: expected an object")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise ValueError(f"{p}.id: expected a non-empty string")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError(f"{p}.function.name: expected a non-empty string")
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments.strip():
            try:
                arguments = orjson.loads(arguments)
            except orjson.JSONDecodeError:
                raise ValueError(f"{p}.function.arguments: not valid JSON") from None
        elif arguments is None or isinstance(arguments, str):
            arguments = {}
        if not isinstance(arguments, dict):
            raise ValueError(f"{p}.function.arguments: expected a JSON object")
        blocks.append({"type": "tool_use", "id": _clean_id(call["id"], "toolu_"), "name": fn["name"],
                       "input": arguments})
    return blocks


def _openai_tools(tools: Any) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise ValueError("tools: expected an array")
    out = []
    for k, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ValueError(f"tools[{k}]: only function tools with a name are supported for models served by "
                             "Anthropic")
        schema = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {}
        entry: dict[str, Any] = {"name": fn["name"]}
        if isinstance(fn.get("description"), str):
            entry["description"] = fn["description"]
        entry["input_schema"] = {"type": "object", **schema} if schema else {"type": "object", "properties": {}}
        out.append(entry)
    return out


def _openai_tool_choice(choice: Any) -> dict | None:
    if choice is None:
        return None
    if choice in ("auto", "required", "none"):
        return {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
    fn = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"type": "tool", "name": fn["name"]}
    raise ValueError("tool_choice: expected \"auto\", \"required\", \"none\" or a function choice")


# ------------------------------------------------------------------------- response: Anthropic → OpenAI

def anthropic_to_openai_response(msg: dict, model: str, created: int) -> dict:
    blocks = [b for b in msg.get("content") or () if isinstance(b, dict)]
    texts = [b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)]
    calls = _tool_calls(blocks)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {"id": _swap_prefix(msg.get("id"), "msg_", "chatcmpl-"), "object": "chat.completion", "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": stop_reason_to_finish_reason(msg.get("stop_reason"))}],
            "usage": anthropic_usage_to_openai(msg.get("usage"))}


# ------------------------------------------------------------------- stream: Anthropic SSE → OpenAI SSE

class AnthropicStreamToOpenAI:
    """Feed one Anthropic SSE event at a time; get complete OpenAI `data: …\\n\\n` frames back (module doc)."""

    def __init__(self, model: str, created: int, include_usage: bool, completion_id: str | None = None) -> None:
        self._model = model
        self._created = created
        self._include_usage = include_usage
        self._id = completion_id
        self._role_sent = False
        self._tool_of_block: dict[int, int] = {}  # Anthropic block index → OpenAI tool_calls index
        self._start_inputs: dict[int, dict] = {}  # tool blocks started with a non-empty input and no deltas yet
        self._finish_sent = False
        self._stop_reason: str | None = None
        self._usage: dict[str, int] = {}
        self.ended = False

    @property
    def usage(self) -> dict:
        """Anthropic-shaped usage as far as known."""
        return {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, **self._usage}

    def feed(self, event: bytes | str, data: bytes) -> list[bytes]:
        if self.ended:
            return []
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self._error("api_error", "upstream sent an event that is not JSON")
        if not isinstance(obj, dict):
            return []
        name = (event.decode() if isinstance(event, bytes) else event) or obj.get("type")
        out: list[bytes] = []
        if name == "message_start":
            message = obj.get("message") if isinstance(obj.get("message"), dict) else {}
            if self._id is None:
                self._id = _swap_prefix(message.get("id"), "msg_", "chatcmpl-")
            self._take_usage(message.get("usage"))
        elif name == "content_block_start":
            block = obj.get("content_block") if isinstance(obj.get("content_block"), dict) else {}
            if block.get("type") == "tool_use":
                position = self._tool_of_block[obj.get("index")] = len(self._tool_of_block)
                if block.get("input"):
                    self._start_inputs[obj.get("index")] = block["input"]
                out.append(self._chunk({"tool_calls": [{"index": position, "id": block.get("id"), "type": "function",
                                                        "function": {"name": block.get("name"), "arguments": ""}}]},
                                       content=None))
            elif not self._role_sent:
                out.append(self._chunk({}))
        elif name == "content_block_delta":
            delta = obj.get("delta") if isinstance(obj.get("delta"), dict) else {}
            kind = delta.get("type")
            if kind == "text_delta" and delta.get("text"):
                out.append(self._chunk({"content": delta["text"]}))
            elif kind == "input_json_delta" and obj.get("index") in self._tool_of_block:
                self._start_inputs.pop(obj.get("index"), None)
                if delta.get("partial_json"):
                    out.append(self._arguments(self._tool_of_block[obj["index"]], delta["partial_json"]))
        elif name == "content_block_stop":
            start_input = self._start_inputs.pop(obj.get("index"), None)
            if start_input is not None:  # input given only in the start event
                out.append(self._arguments(self._tool_of_block[obj["index"]], _arguments_json(start_input)))
        elif name == "message_delta":
            delta = obj.get("delta") if isinstance(obj.get("delta"), dict) else {}
            self._take_usage(obj.get("usage"))
            if delta.get("stop_reason"):
                self._stop_reason = delta["stop_reason"]
                if not self._finish_sent:
                    out.append(self._finish())
        elif name == "message_stop":
            if not self._finish_sent:
                out.append(self._finish())
            if self._include_usage:
                out.append(b"data: " + orjson.dumps({"id": self._completion_id(), "object": "chat.completion.chunk",
                                                     "created": self._created, "model": self._model, "choices": [],
                                                     "usage": anthropic_usage_to_openai(self.usage)}) + b"\n\n")
            out.append(_DONE)
            self.ended = True
        elif name == "error":
            err = obj.get("error") if isinstance(obj.get("error"), dict) else {}
            return self._error(err.get("type") or "api_error", err.get("message") or "upstream stream error")
        return out

    def finish(self) -> list[bytes]:
        """End of input: a stream without message_stop was cut off and ends with an error frame."""
        if self.ended:
            return []
        return self._error("api_error", "upstream stream ended early")

    def _completion_id(self) -> str:
        if self._id is None:
            self._id = _swap_prefix(None, "msg_", "chatcmpl-")
        return self._id

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):  # cumulative: later figures replace earlier ones
            self._usage.update({k: _count(v) for k, v in usage.items()
                                if k in ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                                         "cache_read_input_tokens") and v is not None})

    def _chunk(self, delta: dict, finish_reason: str | None = None, content: str | None = "") -> bytes:
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", "content": content, **delta}
        chunk: dict[str, Any] = {"id": self._completion_id(), "object": "chat.completion.chunk",
                                 "created": self._created, "model": self._model,
                                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                              "finish_reason": finish_reason}]}
        if self._include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _arguments(self, position: int, piece: str) -> bytes:
        return self._chunk({"tool_calls": [{"index": position, "function": {"arguments": piece}}]})

    def _finish(self) -> bytes:
        self._finish_sent = True
        return self._chunk({}, stop_reason_to_finish_reason(self._stop_reason))

    def _error(self, error_type: str, message: str) -> list[bytes]:
        self.ended = True
        error = {"message": message, "type": _ERROR_TO_OPENAI.get(error_type, "server_error"), "param": None,
                 "code": error_type}
        return [b"data: " + orjson.dumps({"error": error}) + b"\n\n", _DONE]
