"""What llama-server does beyond the shared suite, pinned on the real server: its context
error, the reasoning split the gguf overlay turns on, tool calls with --jinja, and the
/metrics gauges the Deployment's preStop drain waits on."""

from __future__ import annotations

import pytest

from devloop.engine.llamacpp import binary
from tests.conftest import _stop_process_group as stop_process_group
from tests.conftest import start_llamacpp
from tests.e2e.llamacpp.conftest import running_gateway
from tests.e2e.sse import stream_json

pytestmark = pytest.mark.llamacpp

# A chat template that opens a thinking block, as DeepSeek-R1's does: llama.cpp's own copy.
R1_TEMPLATE = "models/templates/llama-cpp-deepseek-r1.jinja"


def test_a_prompt_over_the_context_is_400_saying_so(base_url, http, model, model_card):
    too_long = "hello " * (model_card["meta"]["n_ctx"] + 10)
    response = http.post(f"{base_url}/v1/completions", timeout=60,
                         json={"model": model, "prompt": too_long, "max_tokens": 4})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "context" in error["message"]
    assert error["type"] == "exceed_context_size_error"


def test_tool_choice_auto_is_accepted_with_the_jinja_template(base_url, http, model):
    tool = {"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}
    response = http.post(f"{base_url}/v1/chat/completions", timeout=60, json={
        "model": model, "messages": [{"role": "user", "content": "Weather in Seoul?"}],
        "tools": [tool], "tool_choice": "auto", "max_tokens": 8})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["role"] == "assistant"


def test_metrics_has_the_gauges_the_prestop_drain_waits_on(base_url, http):
    text = http.get(f"{base_url}/metrics", timeout=10).text
    lines = {line.split()[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert {"llamacpp:requests_processing", "llamacpp:requests_deferred"} <= lines


@pytest.fixture(scope="module")
def thinking_server(tmp_path_factory):
    """A llama-server of its own on the tiny GGUF with DeepSeek-R1's kind of template (a
    thinking block opened in the generation prompt) and --reasoning-format deepseek."""
    template = binary.find_converter() / R1_TEMPLATE
    state = start_llamacpp(tmp_path_factory.mktemp("thinking") / "llamacpp.log",
                           overrides={"LLAMA_ARG_CHAT_TEMPLATE_FILE": str(template)})
    if "error" in state:
        pytest.fail(state["error"], pytrace=False)
    yield state["base_url"]
    stop_process_group(state["pid"])


def test_thinking_comes_back_in_reasoning_content_apart_from_the_answer(thinking_server, http):
    response = http.post(f"{thinking_server}/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12, "temperature": 0})
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    # Random weights never close the block: all of it is thinking, none of it answer.
    assert message["reasoning_content"]
    assert message["content"] == ""


def test_streamed_thinking_comes_in_reasoning_content_deltas(thinking_server, http):
    with http.post(f"{thinking_server}/v1/chat/completions", stream=True, timeout=60, json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "stream": True,
            "temperature": 0}) as response:
        assert response.status_code == 200
        deltas = [event["choices"][0]["delta"] for event in stream_json(response) if event["choices"]]
    assert "".join(delta.get("reasoning_content") or "" for delta in deltas)
    assert not "".join(delta.get("content") or "" for delta in deltas)


@pytest.fixture(scope="module")
def thinking_gateway(thinking_server, tmp_path_factory):
    with running_gateway(thinking_server, tmp_path_factory.mktemp("gw") / "gateway.log") as url:
        yield url


def test_through_the_gateway_the_thinking_is_under_both_names(thinking_gateway, http):
    """The gateway's reasoning contract (docs/llamacpp.md, Reasoning): llama-server's
    reasoning_content is also `reasoning`, as vLLM 0.32 names it, the answer untouched."""
    response = http.post(f"{thinking_gateway}/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12, "temperature": 0})
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    assert message["reasoning_content"] and message["reasoning"] == message["reasoning_content"]
    assert message["content"] == ""


def test_through_the_gateway_streamed_thinking_deltas_carry_both_names(thinking_gateway, http):
    with http.post(f"{thinking_gateway}/v1/chat/completions", stream=True, timeout=60, json={
            "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 6,
            "stream": True, "temperature": 0}) as response:
        assert response.status_code == 200
        deltas = [event["choices"][0]["delta"] for event in stream_json(response) if event["choices"]]
    thought = "".join(delta.get("reasoning_content") or "" for delta in deltas)
    assert thought and thought == "".join(delta.get("reasoning") or "" for delta in deltas)
