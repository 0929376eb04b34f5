"""/v1/completions: structure, token counts, limits, stop sequences, seeds, streaming."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.sse import stream_json

pytestmark = pytest.mark.vllm

PROMPT = "Explain Kubernetes in one sentence."


def complete(base_url, http, **body):
    response = http.post(f"{base_url}/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_completion_has_the_openai_shape_and_consistent_usage(base_url, http, model):
    body = complete(base_url, http, model=model, prompt=PROMPT, max_tokens=8, temperature=0)
    assert body["object"] == "text_completion"
    assert body["model"] == model
    assert body["id"]
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert isinstance(choice["text"], str)
    assert choice["finish_reason"] in ("length", "stop")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_usage_counts_match_the_tokens_returned(base_url, http, model):
    body = complete(base_url, http, model=model, prompt=PROMPT, max_tokens=12, temperature=0,
                    logprobs=1, echo=False)
    tokens = body["choices"][0]["logprobs"]["tokens"]
    assert body["usage"]["completion_tokens"] == len(tokens)
    longer = complete(base_url, http, model=model, prompt=PROMPT + " " + PROMPT, max_tokens=1)
    assert longer["usage"]["prompt_tokens"] > body["usage"]["prompt_tokens"]


@pytest.mark.parametrize("max_tokens", [1, 5, 17])
def test_max_tokens_is_honoured_exactly(base_url, http, model, max_tokens):
    # ignore_eos (a vLLM extension) keeps a random model from ending early by chance.
    body = complete(base_url, http, model=model, prompt=PROMPT, max_tokens=max_tokens,
                    temperature=0, ignore_eos=True)
    assert body["usage"]["completion_tokens"] == max_tokens
    assert body["choices"][0]["finish_reason"] == "length"


def test_temperature_zero_gives_the_same_text_every_time(base_url, http, model):
    texts = {
        complete(base_url, http, model=model, prompt=PROMPT, max_tokens=16, temperature=0,
                 ignore_eos=True)["choices"][0]["text"]
        for _ in range(3)
    }
    assert len(texts) == 1


def test_same_seed_gives_the_same_sample_and_another_seed_differs(base_url, http, model):
    def sample(seed):
        return complete(base_url, http, model=model, prompt=PROMPT, max_tokens=16,
                        temperature=1.0, seed=seed, ignore_eos=True)["choices"][0]["text"]

    first = sample(1234)
    assert sample(1234) == first
    # 16 tokens drawn from a near-uniform 1k vocabulary: equal by chance ~never.
    assert sample(4321) != first


def test_stop_sequence_cuts_the_text_before_it(base_url, http, model):
    full = complete(base_url, http, model=model, prompt=PROMPT, max_tokens=32, temperature=0,
                    ignore_eos=True)["choices"][0]["text"]
    assert len(full) >= 8, f"need some text to cut: {full!r}"
    stop = full[len(full) // 2: len(full) // 2 + 2]
    cut = complete(base_url, http, model=model, prompt=PROMPT, max_tokens=32, temperature=0,
                   ignore_eos=True, stop=[stop])["choices"][0]
    assert cut["finish_reason"] == "stop"
    assert cut["text"] == full[: full.index(stop)]
    assert stop not in cut["text"]


def test_streaming_events_add_up_to_the_plain_completion(base_url, http, model):
    params = {"model": model, "prompt": PROMPT, "max_tokens": 12, "temperature": 0,
              "ignore_eos": True}
    plain = complete(base_url, http, **params)
    response = http.post(
        f"{base_url}/v1/completions",
        json={**params, "stream": True, "stream_options": {"include_usage": True}},
        stream=True,
        timeout=120,
    )
    chunks = stream_json(response)
    text_chunks = [chunk for chunk in chunks if chunk["choices"]]
    assert len(text_chunks) >= 2, "a 12-token answer should arrive in several events"
    for chunk in chunks:
        assert chunk["object"] == "text_completion"
        assert chunk["id"] == chunks[0]["id"]
    assert "".join(c["choices"][0]["text"] for c in text_chunks) == plain["choices"][0]["text"]
    assert text_chunks[-1]["choices"][0]["finish_reason"] == "length"
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["prompt_tokens"] == plain["usage"]["prompt_tokens"]


def test_concurrent_requests_all_complete_with_their_own_limits(base_url, http, model):
    def one(i):
        return complete(base_url, http, model=model, prompt=f"{PROMPT} #{i}", max_tokens=4 + i,
                        temperature=0, ignore_eos=True)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(8)))
    assert [r["usage"]["completion_tokens"] for r in results] == [4 + i for i in range(8)]
    assert len({r["id"] for r in results}) == 8
