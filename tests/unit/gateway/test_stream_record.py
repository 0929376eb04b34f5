"""The stream cache's record on real vLLM 0.32 answers (tests/unit/gateway/streams/recorded.json,
made by record.py next to it): a stream stored and replayed, a stream assembled into the whole
answer, a whole answer cut into chunks, each compared with what the engine itself sent, and
every form parsed by the official openai client's types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai._models import construct_type
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from devloop.gateway.cache.assemble import whole_answer
from devloop.gateway.cache.key import cache_key, is_cacheable, is_form_bound
from devloop.gateway.cache.record import StoredAnswer, fresh_id
from devloop.gateway.cache.sse import DONE, event_data

RECORDED = json.loads((Path(__file__).parent / "streams" / "recorded.json").read_text())
CASES = RECORDED["cases"]
NEW_ID, NOW = "cmpl-replayed", 1_900_000_000


def _chunks(raw: str | bytes) -> list[dict]:
    events, complete = event_data(raw.encode() if isinstance(raw, str) else raw)
    assert complete and events[-1] == DONE
    return [json.loads(event) for event in events[:-1]]


def _restamped(value: dict, new_id: str = NEW_ID, created: int = NOW) -> dict:
    """What the engine sent, with the id and created a replay gives it; random tool call ids
    (vLLM draws a new one per request) are blanked on both sides of a comparison."""
    value = json.loads(json.dumps(value))
    value["id"], value["created"] = new_id, created
    for choice in value.get("choices") or []:
        for call in (choice.get("delta") or choice.get("message") or {}).get("tool_calls") or []:
            if call.get("id"):
                call["id"] = "tool"
    return value


def _client_text(chunks: list[dict]) -> dict[int, str]:
    """What an OpenAI client accumulates from a stream, per choice, parsed as the client parses
    each event (openai's Stream builds its types with construct_type, no validation)."""
    texts: dict[int, str] = {}
    for chunk in chunks:
        chat = chunk["object"] == "chat.completion.chunk"
        parsed = construct_type(type_=ChatCompletionChunk if chat else Completion, value=chunk)
        for choice in parsed.choices:
            piece = (choice.delta.content or "") if chat else choice.text
            if chat and choice.delta.tool_calls:
                piece += "".join(c.function.arguments or "" for c in choice.delta.tool_calls)
            texts[choice.index] = texts.get(choice.index, "") + piece
    return texts


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_recorded_stream_replays_chunk_for_chunk_with_a_fresh_id(name: str) -> None:
    raw = CASES[name]["stream_usage"]["raw"]
    entry = StoredAnswer.from_stream(raw.encode())
    assert entry is not None
    replay = entry.render_stream(NEW_ID, NOW, include_usage=True)
    original = _chunks(raw)
    assert _chunks(replay) == [_restamped(chunk) | {"choices": chunk["choices"]}
                               for chunk in original]
    # byte for byte what vLLM wrote, but for the two stamped values
    stamped = raw.replace(original[0]["id"], NEW_ID).replace(
        f'"created":{original[0]["created"]}', f'"created":{NOW}')
    assert replay.decode() == stamped


@pytest.mark.parametrize("name", sorted(CASES))
def test_without_include_usage_the_replay_is_the_engines_stream_without_usage(name: str) -> None:
    entry = StoredAnswer.from_stream(CASES[name]["stream_usage"]["raw"].encode())
    replay = _chunks(entry.render_stream(NEW_ID, NOW, include_usage=False))
    engine = [_restamped(chunk) for chunk in _chunks(CASES[name]["stream"]["raw"])]
    # the engine's own no-usage stream of the same greedy request: the fingerprint moved to
    # the terminal chunks, the usage chunk gone, everything else the same
    assert [_restamped(chunk) for chunk in replay] == engine


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_stored_stream_answers_a_whole_request_exactly_as_the_engine_does(name: str) -> None:
    entry = StoredAnswer.from_stream(CASES[name]["stream_usage"]["raw"].encode())
    whole = json.loads(entry.render_json(NEW_ID, NOW))
    engine = json.loads(CASES[name]["json"]["body"])
    if name == "chat_named_tool" and whole != _restamped(engine):
        # Structured output on random weights: the greedy arguments can differ in whitespace
        # between the two engine calls; the shape must not.
        engine_call = engine["choices"][0]["message"]["tool_calls"][0]
        whole_call = whole["choices"][0]["message"]["tool_calls"][0]
        assert whole_call["function"]["name"] == engine_call["function"]["name"]
        engine_call["function"]["arguments"] = whole_call["function"]["arguments"]
    assert _restamped(whole) == _restamped(engine)
    model = ChatCompletion if engine["object"] == "chat.completion" else Completion
    assert model.model_validate(whole) == model.model_validate(_restamped(engine) | {
        "id": NEW_ID, "created": NOW,
        "choices": whole["choices"] if name == "chat_named_tool" else engine["choices"],
    })


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("include_usage", [True, False])
def test_a_stored_whole_answer_streams_what_the_engine_streams(
    name: str, include_usage: bool
) -> None:
    entry = StoredAnswer.from_json_answer(CASES[name]["json"]["body"].encode())
    assert entry is not None and entry.can_answer(stream=True, include_usage=include_usage)
    replay = _chunks(entry.render_stream(NEW_ID, NOW, include_usage))
    engine = _chunks(CASES[name]["stream_usage" if include_usage else "stream"]["raw"])
    assert {chunk["id"] for chunk in replay} == {NEW_ID}
    # every chunk has the keys of one kind of the engine's chunks (role, delta, terminal, usage)
    def kinds(chunks: list[dict]) -> set:
        return {(frozenset(chunk), frozenset(key for c in chunk["choices"] for key in c))
                for chunk in chunks}

    assert kinds(replay) <= kinds(engine)
    assert set(replay[-1]) == set(engine[-1])
    assert replay[-1].get("usage") == engine[-1].get("usage")
    if name != "chat_named_tool":
        assert _client_text(replay) == _client_text(engine)
    # and assembled again, it is the stored answer (without usage, but for the usage)
    stored = _restamped(json.loads(CASES[name]["json"]["body"]))
    if not include_usage:
        stored.pop("usage")
    assert _restamped(whole_answer(replay)) == stored


def test_a_stream_without_usage_cannot_answer_what_needs_usage() -> None:
    entry = StoredAnswer.from_stream(CASES["completion"]["stream"]["raw"].encode())
    assert entry.can_answer(stream=True, include_usage=False)
    assert not entry.can_answer(stream=True, include_usage=True)
    assert not entry.can_answer(stream=False, include_usage=False)


def test_an_entry_survives_its_round_trip_through_bytes() -> None:
    entry = StoredAnswer.from_stream(CASES["chat"]["stream_usage"]["raw"].encode())
    again = StoredAnswer.from_bytes(entry.to_bytes())
    assert (again.form, again.chunks, again.stored_at) == ("stream", entry.chunks, entry.stored_at)
    assert StoredAnswer.from_bytes(b'{"id": "cmpl-1", "choices": []}') is None  # a v1 value
    assert StoredAnswer.from_bytes(b"\xff") is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: raw.index("data: [DONE]")],  # no [DONE]
        lambda raw: raw[: len(raw) // 2],  # broke off mid-event
        lambda raw: raw.replace(  # vLLM's mid-stream failure: an error event, then [DONE]
            "data: [DONE]",
            'data: {"error": {"message": "boom", "type": "InternalServerError", "code": 500}}'
            "\n\ndata: [DONE]",
        ),
        lambda raw: raw.replace('"finish_reason":"length"', '"finish_reason":null'),
        lambda raw: raw.replace("data: [DONE]\n\n", "data: [DONE]\n\ndata: [DONE]\n\n"),
        lambda raw: raw.replace('"model":"tiny"', '"model":"ti', 1),  # not JSON
    ],
    ids=["no-done", "cut-mid-event", "error-event", "unfinished-choice", "two-dones", "bad-json"],
)
def test_an_incomplete_or_failed_stream_is_never_stored(damage) -> None:
    raw = CASES["chat"]["stream_usage"]["raw"]
    assert StoredAnswer.from_stream(raw.encode()) is not None
    assert StoredAnswer.from_stream(damage(raw).encode()) is None


def test_reasoning_deltas_survive_both_round_trips() -> None:
    # chunks serialised by vLLM's own protocol classes (record.py: reasoning_stream)
    entry = StoredAnswer.from_stream(RECORDED["reasoning_stream"].encode())
    message = json.loads(entry.render_json(NEW_ID, NOW))["choices"][0]["message"]
    assert (message["reasoning"], message["content"]) == ("Think hard.", "Answer.")
    for stored in (entry, StoredAnswer.from_json_answer(entry.render_json(NEW_ID, NOW))):
        streamed = _chunks(stored.render_stream(NEW_ID, NOW, include_usage=False))
        deltas = [chunk["choices"][0]["delta"] for chunk in streamed]
        assert "".join(delta.get("reasoning") or "" for delta in deltas) == "Think hard."
        assert "".join(delta.get("content") or "" for delta in deltas) == "Answer."


def test_llama_cpp_reasoning_content_is_kept_under_its_own_name() -> None:
    body = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "4", "reasoning_content": "2+2"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    entry = StoredAnswer.from_json_answer(json.dumps(body).encode())
    streamed = _chunks(entry.render_stream(NEW_ID, NOW, include_usage=True))
    assembled = whole_answer(streamed)["choices"][0]["message"]
    assert (assembled["reasoning_content"], assembled["content"]) == ("2+2", "4")


def test_the_key_ignores_how_the_answer_is_delivered_unless_the_forms_differ() -> None:
    body = {"model": "m", "prompt": "p", "temperature": 0}
    key = cache_key("/v1/completions", body)
    assert cache_key("/v1/completions", {**body, "stream": True}) == key
    assert cache_key("/v1/completions", {**body, "stream": True,
                                         "stream_options": {"include_usage": True}}) == key
    with_logprobs = {**body, "logprobs": 2}
    assert is_form_bound(with_logprobs) and is_cacheable({**with_logprobs, "stream": True})
    assert cache_key("/v1/completions", {**with_logprobs, "stream": True}) != cache_key(
        "/v1/completions", with_logprobs)


def test_a_hit_is_named_like_the_engine_names_a_request_with_that_id() -> None:
    assert fresh_id("chatcmpl-88e840f7", "abc123", chat=True) == "chatcmpl-abc123"
    assert fresh_id("cmpl-1", "r", chat=False) == "cmpl-r"
    assert fresh_id(None, "r", chat=True) == "chatcmpl-r"


def test_the_tee_hands_over_the_stream_once_its_done_event_went_out_even_split() -> None:
    from devloop.gateway.replay import StreamTee

    raw = CASES["completion"]["stream_usage"]["raw"].encode()
    got: list[bytes] = []
    tee = StreamTee(got.append)
    cut = len(raw) - 7  # "data: [DO" | "NE]\n\n"-ish: the end split across two reads
    tee.feed(raw[:cut])
    assert got == []
    tee.feed(raw[cut:])
    tee.finished()  # the proxy's own end-of-stream call changes nothing
    assert got == [raw]
