"""Whether vLLM's CPU backend can run an int4 (AWQ/GPTQ) model here, told before vLLM starts."""

from __future__ import annotations

import json
import platform

import pytest

from devloop.engine import crash, int4kernel

AVX2 = {"sse4_2", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl"}

x86_only = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                              reason="vLLM's choice of kernel library is x86's")


def _model(tmp_path, quant: str | None):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "qwen3", **({"quantization_config": {"quant_method": quant}} if quant else {})}))
    return str(tmp_path)


@x86_only
def test_an_avx2_only_cpu_has_no_int4_kernel_and_avx512_has_one():
    assert "AVX2 but not AVX-512" in int4kernel.missing_on_this_cpu(AVX2)
    assert int4kernel.missing_on_this_cpu(AVX512) is None
    assert int4kernel.missing_on_this_cpu(set()) is None  # unknown CPU: vLLM decides


@x86_only
@pytest.mark.parametrize("quant", ["awq", "gptq", "AWQ"])
def test_a_local_int4_model_is_refused_with_the_fix_on_avx2(tmp_path, quant):
    message = int4kernel.refusal(_model(tmp_path, quant), AVX2)
    assert f"is {quant.upper()} (int4)" in message and "gguf overlay" in message


@x86_only
@pytest.mark.parametrize("quant", [None, "fp8"])
def test_other_models_and_hub_ids_are_left_to_vllm(tmp_path, quant):
    assert int4kernel.refusal(_model(tmp_path, quant), AVX2) is None
    assert int4kernel.refusal("hxac/DeepSeek-R1-0528-Qwen3-8B-AWQ-4bit", AVX2) is None
    assert int4kernel.refusal(_model(tmp_path, "awq"), AVX512) is None


def test_the_engines_death_on_the_missing_kernel_is_named_with_the_fix():
    # vLLM 0.32's lines when an AWQ model's first completion reaches its AVX2 kernel library
    log = (
        "(EngineCore pid=18145) ERROR 12-07 01:31:29 [core.py:1512] EngineCore encountered a "
        "fatal error.\n"
        "(EngineCore pid=18145) ERROR 12-07 01:31:29 [core.py:1512] RuntimeError: Worker failed "
        "with error ''_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'', please check "
        "the stack trace above for the root cause\n"
        "(APIServer pid=18126) ERROR 12-07 01:31:29 [async_llm.py:906] vllm.v1.engine.exceptions."
        "EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root "
        "cause.\n"
    )
    diagnosis = crash.diagnose(log)
    assert "no int4 GEMM" in diagnosis.reason and "AVX2-only" in diagnosis.reason
    assert diagnosis.hint == int4kernel.FIX
