"""The reasoning contract (gateway/reasoning.py) on the answers the real engines give: the
llama-server shape below is what b11312 returned with --reasoning-format deepseek
(tests/e2e/llamacpp/test_llamacpp_api.py), the vLLM one what 0.32's reasoning parsers write."""

from __future__ import annotations

import json

from devloop.gateway import reasoning

LLAMACPP_ANSWER = {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop",
                   "message": {"role": "assistant", "content": "42", "reasoning_content": "Think."}}]}
VLLM_ANSWER = {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop",
               "message": {"role": "assistant", "content": "42", "reasoning": "Think."}}]}


def test_llamacpp_reasoning_content_is_mirrored_into_reasoning():
    body = json.loads(json.dumps(LLAMACPP_ANSWER))
    assert reasoning.normalize_body(body)
    message = body["choices"][0]["message"]
    assert message["reasoning"] == message["reasoning_content"] == "Think."
    assert message["content"] == "42"


def test_vllm_reasoning_is_mirrored_into_reasoning_content():
    body = json.loads(json.dumps(VLLM_ANSWER))
    assert reasoning.normalize_body(body)
    assert body["choices"][0]["message"]["reasoning_content"] == "Think."


def test_an_answer_without_thinking_is_left_byte_for_byte():
    raw = b'{"choices":[{"message":{"role":"assistant","content":"hi","reasoning":null}}]}'
    assert reasoning.normalize_json_bytes(raw) == raw
    assert reasoning.normalize_json_bytes(b"not json") == b"not json"
    assert reasoning.normalize_json_bytes(b'{"error": {"message": "x"}}') == b'{"error": {"message": "x"}}'


def test_an_answer_that_already_has_both_is_unchanged():
    body = {"choices": [{"message": {"reasoning": "a", "reasoning_content": "a"}}]}
    assert not reasoning.normalize_body(body)


def test_streamed_reasoning_deltas_carry_both_names_and_keep_the_line_ending():
    line = b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"\\n be"}}]}\n'
    out = reasoning.normalize_sse_line(line)
    assert out.endswith(b"\n") and out.startswith(b"data: ")
    delta = json.loads(out[len(b"data: "):])["choices"][0]["delta"]
    assert delta == {"reasoning_content": "\n be", "reasoning": "\n be"}


def test_other_stream_lines_pass_unchanged():
    for line in (b"data: [DONE]\n", b"\n", b": ping\n",
                 b'data: {"choices":[{"delta":{"content":"x"}}]}\n'):
        assert reasoning.normalize_sse_line(line) is line


def test_joined_deltas_give_the_whole_thought_under_each_name():
    pieces = ["Let", " me", " think"]
    deltas = []
    for piece in pieces:
        line = json.dumps({"choices": [{"delta": {"reasoning": piece}}]}).encode()
        deltas.append(json.loads(reasoning.normalize_sse_line(b"data: " + line)[6:])["choices"][0]["delta"])
    for name in reasoning.NAMES:
        assert "".join(delta[name] for delta in deltas) == "Let me think"


def test_a_stream_split_mid_line_is_rewritten_once_the_line_is_whole():
    event = b'data: {"choices": [{"delta": {"reasoning": "Hm"}}]}\n\n'
    normalizer = reasoning.StreamNormalizer()
    pieces = [normalizer.feed(event[:10]), normalizer.feed(event[10:30]),
              normalizer.feed(event[30:] + b"data: [DONE]\n\n"), normalizer.flush()]
    assert pieces[0] == pieces[1] == b"" and pieces[3] == b""
    lines = pieces[2].split(b"\n")
    assert json.loads(lines[0][len(b"data: "):])["choices"][0]["delta"] == {
        "reasoning": "Hm", "reasoning_content": "Hm"}
    assert pieces[2].endswith(b"\n\ndata: [DONE]\n\n")


def test_a_last_line_without_its_newline_comes_out_at_the_end():
    normalizer = reasoning.StreamNormalizer()
    assert normalizer.feed(b"data: [DONE]") == b""
    assert normalizer.flush() == b"data: [DONE]"
