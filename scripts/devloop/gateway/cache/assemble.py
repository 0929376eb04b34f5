"""A complete stream's chunks assembled into the whole answer the engine sends without `stream`.

The shape is vLLM 0.32's (read off the real server: tests/unit/gateway/streams/recorded.json):
for a request whose two forms carry the same information (devloop.gateway.cache.key
.is_form_bound is false), vLLM's non-streaming answer is this, field for field, with the
extension fields it leaves null in that case. Deltas are joined per choice `index`: text,
content and reasoning (vLLM's `reasoning`, llama.cpp's `reasoning_content`) concatenated, tool
calls merged by their own `index` (id, type and name from the first delta that has them, the
argument fragments concatenated).
"""

from __future__ import annotations

from typing import Any

# Delta fields that arrive in pieces and are joined.
_JOINED_DELTA_FIELDS = ("content", "reasoning", "reasoning_content")
# The vLLM extension fields of a non-streaming answer that are null unless a form-bound
# feature (logprobs, token ids, KV transfer, per-request metrics) was asked for.
_COMPLETION_CHOICE_TAIL = ("token_ids", "prompt_logprobs", "prompt_token_ids", "routed_experts")
_CHAT_CHOICE_TAIL = ("token_ids", "routed_experts")
_COMPLETION_TAIL = ("kv_transfer_params", "ec_transfer_params", "metrics")
_CHAT_TAIL = ("prompt_logprobs", "prompt_token_ids", "prompt_text", "kv_transfer_params",
              "ec_transfer_params", "metrics")


def is_chat(chunks: list[dict[str, Any]]) -> bool:
    return any(chunk.get("object") == "chat.completion.chunk" for chunk in chunks) or any(
        "delta" in choice for chunk in chunks for choice in chunk.get("choices") or []
    )


def whole_answer(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streaming answer these chunks make (see the module docstring)."""
    chat = is_chat(chunks)
    first = chunks[0]
    choices: dict[int, dict[str, Any]] = {}
    usage: dict[str, Any] | None = None
    fingerprint = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        fingerprint = chunk.get("system_fingerprint") or fingerprint
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            merged = choices.setdefault(index, _empty_choice(index, chat))
            if chat:
                _merge_delta(merged["message"], choice.get("delta") or {})
            else:
                merged["text"] += choice.get("text") or ""
            if choice.get("finish_reason") is not None:
                merged["finish_reason"] = choice["finish_reason"]
                merged["stop_reason"] = choice.get("stop_reason")
    body: dict[str, Any] = {}
    for name in ("id", "object", "created", "model"):
        if name in first:
            body[name] = first[name]
    if "object" in body:
        body["object"] = "chat.completion" if chat else "text_completion"
    body["choices"] = [_finish_choice(choices[index], chat) for index in sorted(choices)]
    body["service_tier"] = None
    body["system_fingerprint"] = fingerprint
    if usage is not None:
        body["usage"] = {
            **usage,
            "prompt_tokens_details": usage.get("prompt_tokens_details"),
            "completion_tokens_details": usage.get("completion_tokens_details"),
        }
    for name in _CHAT_TAIL if chat else _COMPLETION_TAIL:
        body[name] = None
    return body


def _empty_choice(index: int, chat: bool) -> dict[str, Any]:
    if chat:
        message: dict[str, Any] = {"role": None, "_tool_calls": {}}
        return {"index": index, "message": message, "finish_reason": None, "stop_reason": None}
    return {"index": index, "text": "", "finish_reason": None, "stop_reason": None}


def _merge_delta(message: dict[str, Any], delta: dict[str, Any]) -> None:
    if delta.get("role"):
        message["role"] = delta["role"]
    for name in _JOINED_DELTA_FIELDS:
        if isinstance(delta.get(name), str):
            message[name] = message.get(name, "") + delta[name]
    for call in delta.get("tool_calls") or []:
        merged = message["_tool_calls"].setdefault(call.get("index", 0), {})
        for name in ("id", "type"):
            if call.get(name) and not merged.get(name):
                merged[name] = call[name]
        function = call.get("function") or {}
        target = merged.setdefault("function", {"name": None, "arguments": ""})
        if function.get("name") and not target["name"]:
            target["name"] = function["name"]
        target["arguments"] += function.get("arguments") or ""


def _finish_choice(merged: dict[str, Any], chat: bool) -> dict[str, Any]:
    """A choice in the non-streaming field order (vLLM's CompletionResponseChoice /
    ChatCompletionResponseChoice)."""
    if not chat:
        choice = {
            "index": merged["index"], "text": merged["text"], "logprobs": None,
            "finish_reason": merged["finish_reason"], "stop_reason": merged["stop_reason"],
        }
        return {**choice, **dict.fromkeys(_COMPLETION_CHOICE_TAIL)}
    parts = merged["message"]
    message: dict[str, Any] = {
        "role": parts["role"] or "assistant",
        "content": parts.get("content"),
        "refusal": None, "annotations": None, "audio": None, "function_call": None,
    }
    calls = parts["_tool_calls"]
    if calls:  # vLLM leaves an empty tool_calls list out
        message["tool_calls"] = [
            {"id": call.get("id"), "type": call.get("type", "function"),
             "function": call["function"]}
            for _, call in sorted(calls.items())
        ]
    message["reasoning"] = parts.get("reasoning")
    if "reasoning_content" in parts:  # llama.cpp's name, kept where the engine used it
        message["reasoning_content"] = parts["reasoning_content"]
    choice = {
        "index": merged["index"], "message": message, "logprobs": None,
        "finish_reason": merged["finish_reason"], "stop_reason": merged["stop_reason"],
    }
    return {**choice, **dict.fromkeys(_CHAT_CHOICE_TAIL)}
