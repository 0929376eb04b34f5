"""The official `openai` client, as applications use the service."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def client(base_url, api_key):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key or "unused", max_retries=0)


def test_client_lists_the_model(client, model):
    assert model in [entry.id for entry in client.models.list()]


def test_client_completion_and_chat(client, model):
    completion = client.completions.create(model=model, prompt="Hello", max_tokens=5,
                                           temperature=0, extra_body={"ignore_eos": True})
    assert completion.usage.completion_tokens == 5
    chat = client.chat.completions.create(
        model=model, max_tokens=5, temperature=0, extra_body={"ignore_eos": True},
        messages=[{"role": "user", "content": "쿠버네티스가 뭐예요?"}],
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens == 5


def test_client_streams_chat_chunks(client, model):
    stream = client.chat.completions.create(
        model=model, max_tokens=6, temperature=0, stream=True, extra_body={"ignore_eos": True},
        messages=[{"role": "user", "content": "Hello"}],
    )
    chunks = list(stream)
    assert len(chunks) >= 2
    assert chunks[-1].choices[0].finish_reason == "length"


def test_client_raises_not_found_for_an_unknown_model(client):
    import openai

    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="Hello", max_tokens=1)
