"""The candidates of devloop bench-compare's llama.cpp plans, and the environment their
llama-server gets: the gguf overlay's settings made local, as `devloop serve --overlay gguf`
makes them, with as many slots as the vLLM candidates decode sequences."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devloop.bench import launcher, plans
from devloop.engine.llamacpp import amx, gguf

ROOT = Path(__file__).resolve().parents[3]


def _optimized_literal(key: str) -> str:
    kustomization = yaml.safe_load((ROOT / "kustomize/overlays/optimized/kustomization.yaml")
                                   .read_text())
    (generator,) = [g for g in kustomization["configMapGenerator"]
                    if g["name"] == "llm-engine-config"]
    values = dict(literal.split("=", 1) for literal in generator["literals"])
    return values[key]


def test_the_slots_are_the_optimized_overlays_max_num_seqs():
    assert str(plans.SEQS) == _optimized_literal("MAX_NUM_SEQS")
    assert plans.SCALED["MAX_NUM_SEQS"] == str(plans.SEQS)


def test_the_llamacpp_plan_runs_vllm_beside_llama_server_on_four_gguf_kinds():
    plan = plans.PLANS["llamacpp"]
    by_name = {c.name: c for c in plan.candidates}
    assert plan.baseline == "vllm-defaults"
    assert {"vllm-defaults", "vllm-optimized", "vllm-optimized-awq"} <= set(by_name)
    llama = [c for c in plan.candidates if c.kind == plans.LLAMACPP]
    assert [c.model.gguf for c in llama] == ["bf16", "q8_0", "q4_0", "q4_k_m"]
    for candidate in llama:
        assert candidate.overlay == "gguf"  # the settings devloop serve --overlay gguf runs
        assert candidate.model.shape == "qwen3-0.6b" and not candidate.model.random_gguf
        assert candidate.settings["LLAMA_ARG_N_PARALLEL"] == str(plans.SEQS)
        # every slot holds a benchmark request (64 + 64 tokens by default) many times over
        assert int(candidate.settings["LLAMA_ARG_CTX_SIZE"]) >= plans.SEQS * 512


def test_vllm_candidates_run_without_the_overlays_parsers():
    # the optimized overlay enables a reasoning and a tool-call parser in EXTRA_ARGS
    assert "--reasoning-parser" in _optimized_literal("EXTRA_ARGS")
    for name in ("llamacpp", "llamacpp-8b", "tuning"):
        for candidate in plans.PLANS[name].candidates:
            if candidate.kind == plans.VLLM:
                assert "parser" not in candidate.settings.get("EXTRA_ARGS", "parser?"), \
                    candidate.name


def test_the_8b_plan_puts_the_awq_checkpoint_against_a_random_q4_k_m_gguf():
    plan = plans.PLANS["llamacpp-8b"]
    vllm, llama = plan.candidates
    assert plan.one_at_a_time and plan.baseline == vllm.name
    assert vllm.model == plans.ModelRef("qwen3-8b", quant="awq")
    assert vllm.settings == {"CPU_THREADS": "auto", "EXTRA_ARGS": ""}
    assert llama.model == plans.ModelRef("qwen3-8b", gguf="q4_k_m", random_gguf=True)
    assert llama.settings["LLAMA_ARG_N_PARALLEL"] == str(plans.SEQS)
    assert "random blocks" in llama.model.label()


@pytest.mark.parametrize("has_amx", [True, False])
def test_llama_server_gets_the_gguf_overlays_settings_with_the_candidates(
    tmp_path, monkeypatch, has_amx
):
    monkeypatch.setattr(amx, "has_amx_tiles", lambda cpuinfo=None: has_amx)
    candidate = plans.plan_by_name("llamacpp", ["llamacpp-q4_k_m"]).candidates[0]
    env = launcher.llamacpp_environment(candidate, tmp_path / "m.q4_k_m.gguf", 8123, tmp_path)
    assert "LLAMA_ARG_HF_REPO" not in env  # the overlay's download is replaced by the file
    assert env["LLAMA_ARG_MODEL"] == str(tmp_path / "m.q4_k_m.gguf")
    assert env["LLAMA_ARG_ALIAS"] == "llamacpp-q4_k_m"
    assert (env["LLAMA_ARG_HOST"], env["LLAMA_ARG_PORT"]) == ("127.0.0.1", "8123")
    assert env["LLAMA_ARG_N_PARALLEL"] == str(plans.SEQS)
    assert env["LLAMA_ARG_CTX_SIZE"] == str(plans.SEQS * plans.CONTEXT_PER_SLOT)
    assert int(env["LLAMA_ARG_THREADS"]) >= 1
    assert env["LLAMA_ARG_ENDPOINT_METRICS"] == "true"  # the overlay's own
    # the AMX rule of devloop serve and the pod: repacking off on a CPU with AMX tiles
    assert env.get("LLAMA_ARG_REPACK") == ("false" if has_amx else None)


def test_gguf_models_are_converted_or_written_directly(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(launcher.tinymodel, "ensure_model",
                        lambda shape, quant=None, cache_dir=None: tmp_path / shape)
    monkeypatch.setattr(launcher.gguf, "model_gguf",
                        lambda directory, kind: made.append((directory, kind)) or tmp_path / "x")
    launcher.model_path(plans.ModelRef("qwen3-0.6b", gguf="q4_k_m"), tmp_path)
    assert made == [(tmp_path / "qwen3-0.6b", "q4_k_m")]
    assert gguf.QUANTIZED["q4_k_m"] == "Q4_K_M"  # llama-quantize's name for it

    written = []
    monkeypatch.setattr(launcher.gguf, "tiny_gguf", lambda cache_dir=None: tmp_path / "tiny.gguf")
    monkeypatch.setattr(launcher.binary, "find_converter", lambda: tmp_path / "src")

    def write(shape, tiny, out, source, quant):
        written.append((shape, quant))
        out.write_bytes(b"GGUF")

    monkeypatch.setattr(launcher.randomgguf, "write", write)
    ref = plans.ModelRef("qwen3-8b", gguf="q4_k_m", random_gguf=True)
    first = launcher.model_path(ref, tmp_path)
    assert launcher.model_path(ref, tmp_path) == first  # made once
    assert written == [("qwen3-8b", "q4_k_m")] and first.read_bytes() == b"GGUF"
