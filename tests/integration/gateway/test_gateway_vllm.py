"""The caching gateway in front of the real vLLM server (the session's shared tiny model)."""

from __future__ import annotations

import concurrent.futures
import json

import pytest
import requests

pytestmark = [pytest.mark.vllm, pytest.mark.redis]


@pytest.fixture
def gateway(start_gateway, vllm_base_url: str, redis_url: str):
    return start_gateway(vllm_base_url, redis_url)


def _post(base: str, path: str, body: dict | str, **kwargs) -> requests.Response:
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(
        base + path, data=data, headers={"Content-Type": "application/json"}, timeout=300, **kwargs
    )


def _text(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    return choice["text"] if "text" in choice else choice["message"]["content"]


def test_prompts_sharing_a_500_character_prefix_get_their_own_answers(
    gateway, vllm_base_url: str, vllm_served_model: str
) -> None:
    prefix = "The quick brown fox jumps over the lazy dog. " * 12  # 540 characters
    assert len(prefix) > 500
    answers = {}
    for ending in ("Where does it go next?", "What colour is the dog?"):
        body = {
            "model": vllm_served_model,
            "prompt": prefix + ending,
            "temperature": 0,
            "max_tokens": 8,
        }
        through = _post(gateway.url, "/v1/completions", body)
        assert (
            through.headers["X-Cache"] == "MISS"
        )  # the second prompt must not hit the first's entry
        assert _text(through) == _text(_post(vllm_base_url, "/v1/completions", body))
        answers[ending] = through.json()
    assert answers["Where does it go next?"]["id"] != answers["What colour is the dog?"]["id"]


def test_parameter_order_and_formatting_hit_the_same_entry(gateway, vllm_served_model: str) -> None:
    first = (
        f'{{"model": "{vllm_served_model}", "prompt": "Order test", "temperature": 0, '
        f'"max_tokens": 6, "top_p": 1.0}}'
    )
    second = (
        f'{{\n  "top_p": 1,\n  "max_tokens": 6,\n  "temperature": 0.0,\n  "prompt": "Order test",'
        f'\n  "model": "{vllm_served_model}"\n}}'
    )
    miss, hit = (
        _post(gateway.url, "/v1/completions", first),
        _post(gateway.url, "/v1/completions", second),
    )
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    # vLLM's answer, under the hit's own id and time (the original id in a header)
    assert hit.headers["X-Cache-Original-Id"] == miss.json()["id"] != hit.json()["id"]
    assert {**hit.json(), "id": miss.json()["id"], "created": miss.json()["created"]} == miss.json()


def test_sampled_requests_always_reach_the_engine(gateway, vllm_served_model: str) -> None:
    body = {"model": vllm_served_model, "prompt": "Sample me", "temperature": 1.0, "max_tokens": 4}
    before = gateway.stats()["upstream_requests"]
    for _ in range(2):
        assert _post(gateway.url, "/v1/completions", body).headers["X-Cache"] == "BYPASS"
    assert gateway.stats()["upstream_requests"] - before == 2
    assert gateway.stats()["stores"] == 0


def test_engine_errors_reach_the_client_and_are_not_cached(gateway, vllm_served_model: str) -> None:
    unknown_model = {"model": "no-such-model", "prompt": "hi", "temperature": 0, "max_tokens": 4}
    too_long = {"model": vllm_served_model, "prompt": "hi", "temperature": 0, "max_tokens": 10**7}
    for body in (unknown_model, unknown_model, too_long, too_long):
        answer = _post(gateway.url, "/v1/completions", body)
        assert 400 <= answer.status_code < 500
        assert answer.headers["X-Cache"] == "BYPASS"
        assert answer.json()["error"]["message"]
    assert gateway.stats()["stores"] == 0


def test_sixteen_identical_concurrent_misses_reach_the_engine_once(
    gateway, vllm_served_model: str
) -> None:
    body = {
        "model": vllm_served_model,
        "prompt": "Single flight, please.",
        "temperature": 0,
        "max_tokens": 48,
        "ignore_eos": True,
    }
    before = gateway.stats()["upstream_requests"]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: _post(gateway.url, "/v1/completions", body), range(16)))
    assert {answer.status_code for answer in answers} == {200}
    assert len({json.dumps(answer.json()["choices"]) for answer in answers}) == 1
    assert len({answer.json()["id"] for answer in answers}) == 16
    assert gateway.stats()["upstream_requests"] - before == 1


def test_a_stream_passes_through_intact(gateway, vllm_served_model: str) -> None:
    body = {
        "model": vllm_served_model,
        "prompt": "Stream this",
        "temperature": 0.8,  # sampled, no seed: relayed, never cached
        "max_tokens": 16,
        "ignore_eos": True,
    }
    events = []
    with _post(gateway.url, "/v1/completions", {**body, "stream": True}, stream=True) as answer:
        assert answer.status_code == 200
        assert answer.headers["X-Cache"] == "BYPASS"
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith(b"data: "):
                events.append(line[len(b"data: ") :])
    assert events[-1] == b"[DONE]"
    streamed = "".join(
        json.loads(event)["choices"][0]["text"]
        for event in events[:-1]
        if json.loads(event)["choices"]
    )
    assert len(events) > 3  # token by token, not one buffered blob
    assert len(streamed) > 0


def test_chat_completions_are_cached_by_their_whole_message_list(
    gateway, vllm_base_url: str, vllm_served_model: str
) -> None:
    messages = [{"role": "user", "content": "Say something."}]
    body = {"model": vllm_served_model, "messages": messages, "temperature": 0, "max_tokens": 6}
    first, second = (_post(gateway.url, "/v1/chat/completions", body) for _ in range(2))
    if first.status_code == 400 and "template" in first.text:
        pytest.skip("the tiny model has no chat template")
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert _text(first) == _text(_post(vllm_base_url, "/v1/chat/completions", body))
    longer = {**body, "messages": [{"role": "system", "content": "Be brief."}, *messages]}
    assert _post(gateway.url, "/v1/chat/completions", longer).headers["X-Cache"] == "MISS"


def test_models_are_listed_through_the_gateway(gateway, vllm_served_model: str) -> None:
    listed = requests.get(gateway.url + "/v1/models", timeout=30).json()
    assert vllm_served_model in [model["id"] for model in listed["data"]]


def test_health_reports_the_engine_and_redis_up(gateway) -> None:
    health = requests.get(gateway.url + "/health", timeout=10).json()
    assert (health["upstream"]["state"], health["redis"]) == ("up", "up")
