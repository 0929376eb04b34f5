"""The `env` fixture of the entrypoint's and the settings' unit tests: engine.env's settings."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The base engine.env's settings, with the volume paths under tmp_path."""
    return {
        "MODEL_NAME": "Qwen/Qwen3-0.6B",
        "SERVED_MODEL_NAME": "",
        "MAX_MODEL_LEN": "2048",
        "MAX_NUM_SEQS": "4",
        "DTYPE": "bfloat16",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "CPU_THREADS": "auto",
        "ENFORCE_EAGER": "false",
        "PORT": "8000",
        "HF_HOME": str(tmp_path / "huggingface"),
        "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"),
        "EXTRA_ARGS": "",
    }
