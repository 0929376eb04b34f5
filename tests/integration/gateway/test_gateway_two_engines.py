"""The multi overlay's shape on this machine: a real vLLM server and a real llama-server behind
one `devloop gateway --upstream A --upstream B`. Each request reaches the engine that serves its
`model`, and /v1/models lists both. The engines: the run's shared vLLM server (model `tiny`) and
a llama-server of this module on the tiny GGUF served as `tiny-gguf` (as Tilt's --model=tiny
names it beside vLLM: one name on both would make them replicas of one model)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import EngineServer, _stop_process_group, llamacpp_unavailable, start_llamacpp

pytestmark = [pytest.mark.vllm, pytest.mark.llamacpp]

LLAMACPP_MODEL = "tiny-gguf"
VLLM_SUCCESSES = "vllm:request_success_total"
LLAMACPP_PROMPT_TOKENS = "llamacpp:prompt_tokens_total"


@pytest.fixture(scope="module")
def llamacpp_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    from devloop.engine.llamacpp import binary

    missing = binary.available()
    if missing:
        llamacpp_unavailable(missing)
    log = tmp_path_factory.mktemp("llamacpp") / "llama-server.log"
    state = start_llamacpp(log, overrides={"LLAMA_ARG_ALIAS": LLAMACPP_MODEL})
    if "error" in state:
        pytest.fail(state["error"], pytrace=False)
    server = EngineServer(**state)
    assert server.served_model == LLAMACPP_MODEL, "llama-server must list its own name"
    try:
        yield server
    finally:
        _stop_process_group(server.pid)


@pytest.fixture
def gateway(start_gateway, vllm_base_url: str, llamacpp_engine: EngineServer):
    return start_gateway(vllm_base_url, "", "--upstream", llamacpp_engine.base_url,
                         "--upstream-health-interval-seconds", "0.5")


def _metric(url: str, name: str) -> float:
    """A counter's total on an engine's /metrics (both engines serve Prometheus text)."""
    text = requests.get(url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def _chat(url: str, model: str) -> requests.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 4, "temperature": 0.7}
    return requests.post(url + "/v1/chat/completions", json=body, timeout=300)


def test_the_model_list_names_both_engines_models(gateway, vllm_served_model: str) -> None:
    listing = requests.get(gateway.url + "/v1/models", timeout=10).json()
    assert sorted(entry["id"] for entry in listing["data"]) == sorted(
        [vllm_served_model, LLAMACPP_MODEL])


def _grew(url: str, name: str, before: float) -> bool:
    """Whether the engine's counter passed `before` within 10 s (vLLM counts a request from its
    output loop, a moment after the answer)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _metric(url, name) > before:
            return True
        time.sleep(0.2)
    return False


def test_each_model_is_answered_by_the_engine_that_serves_it(
    gateway, vllm_base_url: str, vllm_served_model: str, llamacpp_engine: EngineServer
) -> None:
    # Each engine's own count of what it answered, before and after one request per model.
    vllm_before = _metric(vllm_base_url, VLLM_SUCCESSES)
    llama_before = _metric(llamacpp_engine.base_url, LLAMACPP_PROMPT_TOKENS)
    answer = _chat(gateway.url, LLAMACPP_MODEL)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == LLAMACPP_MODEL
    assert _grew(llamacpp_engine.base_url, LLAMACPP_PROMPT_TOKENS, llama_before)
    assert _metric(vllm_base_url, VLLM_SUCCESSES) == vllm_before, "vLLM answered llama.cpp's model"
    llama_before = _metric(llamacpp_engine.base_url, LLAMACPP_PROMPT_TOKENS)
    answer = _chat(gateway.url, vllm_served_model)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == vllm_served_model
    assert _grew(vllm_base_url, VLLM_SUCCESSES, vllm_before)
    assert _metric(llamacpp_engine.base_url, LLAMACPP_PROMPT_TOKENS) == llama_before, (
        "llama.cpp answered vLLM's model")
    health = requests.get(gateway.url + "/health", timeout=10).json()["upstream"]
    models = {engine["url"]: engine["models"] for engine in health["engines"]}
    assert models == {vllm_base_url: [vllm_served_model],
                      llamacpp_engine.base_url: [LLAMACPP_MODEL]}


def test_an_unknown_model_is_refused_naming_both(gateway, vllm_served_model: str) -> None:
    answer = _chat(gateway.url, "no-such-model")
    assert answer.status_code == 404
    message = answer.json()["error"]["message"]
    assert vllm_served_model in message and LLAMACPP_MODEL in message
