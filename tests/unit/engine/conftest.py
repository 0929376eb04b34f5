"""Fixtures of the engine's unit tests: `env` (engine.env's settings) and `busy_port`."""

from __future__ import annotations

import socket
from collections.abc import Iterator
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


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something really listens on (127.0.0.1), as a server left running on 8000 does."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]
