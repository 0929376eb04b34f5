"""Stream chunks for a replay: a stored stream as the new request asks for it, or a whole
answer cut into the chunks vLLM 0.32 streams (read off the real server and its source,
vllm/entrypoints/openai/{completion,chat_completion}/serving.py):

- chat: first a chunk per choice with `delta: {"role": "assistant", "content": ""}` (and
  top-level `prompt_token_ids`/`prompt_text` null, as vLLM's first chunk has), then per choice
  the reasoning, then the content and tool calls with the finish_reason;
- completions: one chunk per choice with its text and finish_reason;
- the terminal chunks carry `system_fingerprint` when no usage chunk follows; with
  `stream_options.include_usage` a last chunk has `choices: []`, the usage and the fingerprint
  (vLLM writes it with exclude_none: null usage details are left out).
"""

from __future__ import annotations

from typing import Any


def is_usage_chunk(chunk: dict[str, Any]) -> bool:
    return chunk.get("choices") == [] and "usage" in chunk


def as_requested(chunks: list[dict[str, Any]], include_usage: bool) -> list[dict[str, Any]]:
    """A stored stream for a request that does or does not want the usage chunk. Without it,
    the fingerprint moves to the terminal chunks, where vLLM puts it when there is no usage
    chunk."""
    if include_usage:
        return chunks
    usage_chunks = [chunk for chunk in chunks if is_usage_chunk(chunk)]
    if not usage_chunks:
        return chunks
    fingerprint = usage_chunks[-1].get("system_fingerprint")
    out = []
    for chunk in chunks:
        if is_usage_chunk(chunk):
            continue
        if fingerprint is not None and _is_terminal(chunk) and "system_fingerprint" not in chunk:
            chunk = {**chunk, "system_fingerprint": fingerprint}
        out.append(chunk)
    return out


def stream_chunks(body: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """The chunks of a whole answer (see the module docstring)."""
    chat = body.get("object") == "chat.completion" or any(
        "message" in choice for choice in body.get("choices") or []
    )
    head = {name: body[name] for name in ("id", "object", "created", "model") if name in body}
    if "object" in head:
        head["object"] = "chat.completion.chunk" if chat else "text_completion"
    fingerprint = body.get("system_fingerprint")
    usage = body.get("usage") if include_usage else None
    choices = body.get("choices") or []
    out: list[dict[str, Any]] = []
    if chat:
        for choice in choices:
            role = (choice.get("message") or {}).get("role") or "assistant"
            first = {"index": choice.get("index", 0), "delta": {"role": role, "content": ""},
                     "logprobs": None, "finish_reason": None}
            out.append({**head, "choices": [first], "prompt_token_ids": None,
                        "prompt_text": None})
    for choice in choices:
        for piece in (_chat_pieces(choice) if chat else [_completion_piece(choice)]):
            chunk = {**head, "choices": [piece]}
            if usage is None and fingerprint is not None and piece.get("finish_reason"):
                chunk["system_fingerprint"] = fingerprint
            out.append(chunk)
    if usage is not None:
        final = {**head, "choices": [],
                 "usage": {name: value for name, value in usage.items() if value is not None}}
        if fingerprint is not None:
            final["system_fingerprint"] = fingerprint
        out.append(final)
    return out


def _completion_piece(choice: dict[str, Any]) -> dict[str, Any]:
    return {"index": choice.get("index", 0), "text": choice.get("text") or "",
            "logprobs": None, "finish_reason": choice.get("finish_reason"),
            "stop_reason": choice.get("stop_reason"), "prompt_token_ids": None,
            "token_ids": None}


def _chat_pieces(choice: dict[str, Any]) -> list[dict[str, Any]]:
    message = choice.get("message") or {}
    index = choice.get("index", 0)
    pieces = []
    for name in ("reasoning", "reasoning_content"):
        if message.get(name):
            pieces.append({"index": index, "delta": {name: message[name]}, "logprobs": None,
                           "finish_reason": None, "token_ids": None})
    delta: dict[str, Any] = {}
    if message.get("content") is not None:
        delta["content"] = message["content"]
    calls = message.get("tool_calls") or []
    if calls:
        delta["tool_calls"] = [
            {"id": call.get("id"), "type": call.get("type", "function"), "index": position,
             "function": call.get("function")}
            for position, call in enumerate(calls)
        ]
    pieces.append({"index": index, "delta": delta, "logprobs": None,
                   "finish_reason": choice.get("finish_reason"),
                   "stop_reason": choice.get("stop_reason"), "token_ids": None})
    return pieces


def _is_terminal(chunk: dict[str, Any]) -> bool:
    return any(choice.get("finish_reason") is not None for choice in chunk.get("choices") or [])
