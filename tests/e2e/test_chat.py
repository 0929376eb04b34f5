"""/v1/chat/completions, including the guide's Korean prompt, plain and streamed."""

from __future__ import annotations

import pytest

from tests.e2e.sse import stream_json

pytestmark = pytest.mark.vllm

KOREAN = "쿠버네티스에 대해 한국어로 설명해 주세요."


def chat(base_url, http, **body):
    response = http.post(f"{base_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_chat_answers_a_korean_prompt_as_the_assistant(base_url, http, model):
    body = chat(base_url, http, model=model, max_tokens=10, temperature=0, ignore_eos=True,
                messages=[{"role": "user", "content": KOREAN}])
    assert body["object"] == "chat.completion"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 10
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_template_wraps_the_messages(base_url, http, model):
    plain = http.post(f"{base_url}/v1/completions", timeout=60, json={
        "model": model, "prompt": KOREAN, "max_tokens": 1}).json()
    body = chat(base_url, http, model=model, max_tokens=1,
                messages=[{"role": "user", "content": KOREAN}])
    # The template adds role markers around the same text: more prompt tokens, not fewer.
    assert body["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]


def test_system_and_multi_turn_messages_are_accepted(base_url, http, model):
    body = chat(base_url, http, model=model, max_tokens=4, messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": KOREAN},
    ])
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_streamed_chat_starts_with_the_role_and_adds_up_to_the_plain_answer(base_url, http, model):
    params = {"model": model, "max_tokens": 8, "temperature": 0, "ignore_eos": True,
              "messages": [{"role": "user", "content": KOREAN}]}
    plain = chat(base_url, http, **params)
    response = http.post(f"{base_url}/v1/chat/completions", json={**params, "stream": True},
                         stream=True, timeout=120)
    chunks = stream_json(response)
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def test_tool_choice_auto_is_accepted(base_url, http, model):
    """The overlays turn tool calling on (vLLM: --enable-auto-tool-choice with the model's
    parser; llama-server: --jinja): without it vLLM answers `tool_choice: auto` with 400."""
    response = http.post(f"{base_url}/v1/chat/completions", timeout=120, json={
        "model": model, "messages": [{"role": "user", "content": "Weather in Seoul?"}],
        "tools": [TOOL], "tool_choice": "auto", "max_tokens": 8, "temperature": 0})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["role"] == "assistant"
