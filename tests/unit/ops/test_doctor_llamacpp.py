"""`devloop doctor` on the overlays with a llama.cpp engine: gguf (llama.cpp alone) and multi
(llama.cpp beside vLLM), read off the rendered overlays: what the first start fetches, and
whether the nodes hold the engines' memory limits."""

from __future__ import annotations

import pytest

from .test_doctor import GIB, healthy, kind_node, result


def test_an_overlay_without_llamacpp_passes_saying_so(rendered):
    res = result(healthy(rendered, "dev"), "llamacpp")
    assert res.status == "pass" and res.summary == "overlay dev runs no llama.cpp engine"


@pytest.mark.parametrize(("overlay", "model", "beside"), [
    ("gguf", "bartowski/deepseek-ai_DeepSeek-R1-0528-Qwen3-8B-GGUF:Q4_K_M", ()),
    ("multi", "Qwen/Qwen3-0.6B-GGUF:Q8_0", ("llm-engine",)),
])
def test_the_needs_are_read_off_the_overlay(rendered, overlay, model, beside):
    needs = healthy(rendered, overlay).llamacpp
    assert needs.image == "ghcr.io/ggml-org/llama.cpp:server-b11312"
    assert (needs.model, needs.downloads, needs.beside) == (model, True, beside)
    assert needs.cache_request_bytes >= 10 * GIB
    res = result(healthy(rendered, overlay), "llamacpp")
    assert res.status == "pass" and f"downloads {model} from huggingface.co" in res.summary


def test_multi_counts_the_vllm_engine_beside_llamacpp(rendered):
    needs = healthy(rendered, "multi").llamacpp
    # The Deployments' limits: llama.cpp 2Gi, the dev overlay's vLLM engine 5Gi.
    assert (needs.memory_limit_bytes, needs.beside_limit_bytes) == (2 * GIB, 5 * GIB)
    summary = result(healthy(rendered, "multi"), "llamacpp").summary
    assert "beside llm-engine (memory limits 2.0 GiB + 5.0 GiB)" in summary


def test_a_node_that_holds_llamacpp_but_not_both_engines_fails_on_multi(rendered):
    # 6 GiB: llama.cpp's 2Gi fits, with vLLM's 5Gi beside it it does not.
    small = (kind_node(cpu="4", memory="6Gi"),)
    res = result(healthy(rendered, "multi", nodes=small), "llamacpp")
    assert res.status == "fail"
    assert "the engines' memory limits (7.0 GiB) exceed the nodes' 6.0 GiB" in res.summary
    assert "10 GB for the multi overlay" in res.fix
    # The same node runs the gguf overlay's engine only if it holds its own 7Gi limit.
    res = result(healthy(rendered, "gguf", nodes=small), "llamacpp")
    assert res.status == "fail" and "its memory limit 7.0 GiB exceeds the nodes' 6.0 GiB" in res.summary
    assert "8 GB for the gguf overlay" in res.fix
    assert result(healthy(rendered, "multi", nodes=(kind_node(memory="8Gi"),)), "llamacpp").status == "pass"
