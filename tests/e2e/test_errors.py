"""Bad requests get a 4xx with an OpenAI-style error body, never a 5xx or a hang."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vllm


def assert_openai_error(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    return error


def test_unknown_model_is_404_naming_the_model(base_url, http):
    response = http.post(f"{base_url}/v1/completions", timeout=30,
                         json={"model": "no-such-model", "prompt": "Hello", "max_tokens": 1})
    error = assert_openai_error(response, 404)
    assert "no-such-model" in error["message"]


def test_malformed_json_is_400(base_url, http):
    response = http.post(f"{base_url}/v1/completions", timeout=30,
                         data=b'{"model": "x", "prompt": "unterminated',
                         headers={"Content-Type": "application/json"})
    assert_openai_error(response, 400)


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/completions", {"max_tokens": 1}),  # model and prompt missing
        ("/v1/chat/completions", {"max_tokens": 1}),  # messages missing
    ],
    ids=["completion-without-prompt", "chat-without-messages"],
)
def test_missing_required_fields_are_400(base_url, http, model, path, body):
    response = http.post(f"{base_url}{path}", json={"model": model, **body}, timeout=30)
    assert_openai_error(response, 400)


def test_prompt_longer_than_the_context_is_400_saying_so(base_url, http, model, model_card):
    too_long = "hello " * (model_card["max_model_len"] + 10)
    response = http.post(f"{base_url}/v1/completions", timeout=60,
                         json={"model": model, "prompt": too_long, "max_tokens": 1})
    error = assert_openai_error(response, 400)
    assert "context length" in error["message"]


def test_negative_max_tokens_is_400(base_url, http, model):
    response = http.post(f"{base_url}/v1/completions", timeout=30,
                         json={"model": model, "prompt": "Hello", "max_tokens": -1})
    assert_openai_error(response, 400)
