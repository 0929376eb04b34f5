"""Record real vLLM answers, streamed and not, for the stream cache's unit tests.

    python tests/unit/gateway/streams/record.py http://127.0.0.1:PORT

Each case is sent twice to the running server, once with `stream: true` and once without, and
both answers are written to recorded.json exactly as they came off the wire (the raw SSE text,
the JSON body, the headers that matter). The tiny model has random weights: the tests check
structure and equality between forms, never meaning. Re-record after a vLLM upgrade.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import requests

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def cases(model: str) -> dict[str, tuple[str, dict]]:
    messages = [{"role": "user", "content": "Say hello."}]
    return {
        "completion": ("/v1/completions", {"model": model, "prompt": "Once upon a time",
                                           "temperature": 0, "max_tokens": 8}),
        "completion_stop": ("/v1/completions", {"model": model, "prompt": "The quick brown",
                                                "temperature": 0, "max_tokens": 12,
                                                "stop": ["."]}),
        "completion_n2_seed": ("/v1/completions", {"model": model, "prompt": "Hello",
                                                   "seed": 3, "temperature": 0.9, "n": 2,
                                                   "max_tokens": 6}),
        "chat": ("/v1/chat/completions", {"model": model, "messages": messages,
                                          "temperature": 0, "max_tokens": 8}),
        "chat_named_tool": ("/v1/chat/completions", {
            "model": model, "messages": messages, "temperature": 0, "max_tokens": 24,
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        }),
    }


def reasoning_stream(model: str) -> str:
    """A reasoning model's stream, serialised by vLLM's own protocol classes exactly as its chat
    server writes each chunk (the tiny model's tokenizer has no think tokens, so no reasoning
    parser runs on it): role, reasoning deltas, content, finish, usage."""
    from vllm.entrypoints.generate.base.protocol import DeltaMessage
    from vllm.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionResponseStreamChoice,
        ChatCompletionStreamResponse,
    )
    from vllm.entrypoints.serve.engine.protocol import UsageInfo

    def chunk(finish: str | None = None, usage: UsageInfo | None = None, **delta: str) -> str:
        choices = [] if usage else [ChatCompletionResponseStreamChoice(
            index=0, delta=DeltaMessage(**delta), logprobs=None, finish_reason=finish)]
        response = ChatCompletionStreamResponse(
            id="chatcmpl-reasoning", object="chat.completion.chunk", created=1796195000,
            choices=choices, model=model, **({"usage": usage} if usage else {}))
        if usage:
            return response.model_dump_json(exclude_unset=True, exclude_none=True)
        return response.model_dump_json(exclude_unset=True)

    events = [
        chunk(role="assistant", content=""), chunk(reasoning="Think "),
        chunk(reasoning="hard."), chunk(content="Answer."), chunk("stop", content=""),
        chunk(usage=UsageInfo(prompt_tokens=3, completion_tokens=4, total_tokens=7)),
    ]
    return "".join(f"data: {event}\n\n" for event in events) + "data: [DONE]\n\n"


def _headers(response: requests.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in ("content-type",) if name in response.headers}


def record(base: str) -> dict:
    model = requests.get(base + "/v1/models", timeout=30).json()["data"][0]["id"]
    out: dict = {"vllm_base_url": base, "model": model, "cases": {}}
    for name, (path, body) in cases(model).items():
        entry: dict = {"path": path, "request": body}
        plain = requests.post(base + path, json=body, timeout=300)
        entry["json"] = {"status": plain.status_code, "headers": _headers(plain),
                         "body": plain.text}
        for usage in (True, False):
            streamed = {**body, "stream": True}
            if usage:
                streamed["stream_options"] = {"include_usage": True}
            answer = requests.post(base + path, json=streamed, timeout=300)
            entry["stream_usage" if usage else "stream"] = {
                "status": answer.status_code, "headers": _headers(answer), "raw": answer.text,
            }
        out["cases"][name] = entry
    out["reasoning_stream"] = reasoning_stream(model)
    return out


if __name__ == "__main__":
    result = record(sys.argv[1].rstrip("/"))
    target = Path(__file__).with_name("recorded.json")
    target.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {target}")
