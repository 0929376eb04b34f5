"""Streams from the cache, read by the official openai client, against the real vLLM server
(the session's tiny model) and the gateway in front of it: a replayed stream parses exactly as
the engine's own stream of the same greedy request, streams answer whole requests and the
reverse, and every hit carries its own id."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.redis]

openai = pytest.importorskip("openai")


@pytest.fixture
def gateway(start_gateway, vllm_base_url: str, redis_url: str):
    return start_gateway(vllm_base_url, redis_url)


def _client(base: str):
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)


def _create(client, chat: bool, **fields):
    api = client.chat.completions if chat else client.completions
    return api.with_raw_response.create(**fields)


def _request(model: str, chat: bool, prompt: str) -> dict:
    body: dict = {"model": model, "temperature": 0, "max_tokens": 12}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def _unstamped(chunk: dict) -> dict:
    return {**chunk, "id": "-", "created": 0}


def _accumulated(chunks: list[dict]) -> tuple:
    """What a client builds from a stream: per choice the text and finish_reason; the usage."""
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            piece = choice["delta"]["content"] if "delta" in choice else choice["text"]
            texts[choice["index"]] = texts.get(choice["index"], "") + (piece or "")
            if choice["finish_reason"]:
                finish[choice["index"]] = choice["finish_reason"]
    return texts, finish, chunks[-1]["usage"], [sorted(c) for c in chunks[:1]]


def _stream(client, chat: bool, body: dict, include_usage: bool) -> tuple[str | None, list[dict]]:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    raw = _create(client, chat, stream=True, **options, **body)
    return raw.headers.get("X-Cache"), [chunk.model_dump() for chunk in raw.parse()]


@pytest.mark.parametrize("include_usage", [True, False], ids=["usage", "no-usage"])
@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_a_replayed_stream_parses_exactly_like_the_engines_own(
    gateway, vllm_base_url: str, vllm_served_model: str, chat: bool, include_usage: bool
) -> None:
    body = _request(vllm_served_model, chat, f"Replay me ({chat}, {include_usage}).")
    _, engine = _stream(_client(vllm_base_url), chat, body, include_usage)
    miss_state, miss = _stream(_client(gateway.url), chat, body, include_usage)
    hit_state, hit = _stream(_client(gateway.url), chat, body, include_usage)
    assert (miss_state, hit_state) == ("MISS", "HIT")
    # the replay is the recorded stream chunk for chunk; the engine's own chunking varies from
    # call to call (how many tokens one event carries depends on timing), its text does not
    assert [_unstamped(c) for c in hit] == [_unstamped(c) for c in miss]
    assert _accumulated(hit) == _accumulated(miss) == _accumulated(engine)
    assert len({c["id"] for c in hit}) == 1 and hit[0]["id"] != miss[0]["id"]
    assert (hit[-1]["usage"] is not None) == include_usage
    assert hit[-1]["choices"] == [] if include_usage else hit[-1]["choices"][0]["finish_reason"]


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_a_stored_stream_answers_a_whole_request_as_the_engine_would(
    gateway, vllm_base_url: str, vllm_served_model: str, chat: bool
) -> None:
    body = _request(vllm_served_model, chat, f"Stream first, then whole ({chat}).")
    assert _stream(_client(gateway.url), chat, body, include_usage=True)[0] == "MISS"
    whole = _create(_client(gateway.url), chat, **body)
    engine = _create(_client(vllm_base_url), chat, **body).parse().model_dump()
    assert whole.headers["X-Cache"] == "HIT"
    assert _unstamped(whole.parse().model_dump()) == _unstamped(engine)


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_a_stored_whole_answer_answers_a_stream_with_the_same_text_and_usage(
    gateway, vllm_served_model: str, chat: bool
) -> None:
    body = _request(vllm_served_model, chat, f"Whole first, then streamed ({chat}).")
    whole = _create(_client(gateway.url), chat, **body)
    assert whole.headers["X-Cache"] == "MISS"
    answer = whole.parse()
    state, chunks = _stream(_client(gateway.url), chat, body, include_usage=True)
    assert state == "HIT"
    if chat:
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
        assert text == answer.choices[0].message.content
    else:
        assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == (
            answer.choices[0].text
        )
    assert chunks[-1]["usage"] == answer.usage.model_dump()
    assert {c["id"] for c in chunks} != {answer.id}


def test_the_openai_clients_own_stream_helper_reads_a_replay(gateway, vllm_served_model) -> None:
    body = _request(vllm_served_model, True, "Accumulate me.")
    client = _client(gateway.url)
    texts = []
    for _ in range(2):  # a miss, then a hit
        with client.chat.completions.stream(**body) as stream:
            deltas = [event.delta for event in stream if event.type == "content.delta"]
            snapshot = stream.current_completion_snapshot  # the helper's own accumulation
        assert "".join(deltas) == snapshot.choices[0].message.content
        texts.append((snapshot.choices[0].message.content, snapshot.choices[0].finish_reason))
    assert texts[0] == texts[1] and texts[0][0]
