"""devloop bench's client against the real llama-server (the run's, tests/conftest.py): prompts
sized with its /tokenize, `ignore_eos` honoured (exactly max_tokens each), its own token counts
from the streamed usage, as devloop bench-compare's llama.cpp candidates are measured."""

from __future__ import annotations

import asyncio

import pytest

from devloop.bench.client import BenchConfig
from devloop.bench.driver import run_benchmark

pytestmark = pytest.mark.llamacpp


def test_two_requests_are_calibrated_and_generate_exactly_max_tokens(llamacpp_server):
    config = BenchConfig(url=llamacpp_server.base_url, model=llamacpp_server.served_model,
                         concurrency=[2], input_len=16, output_len=8, num_prompts=2, warmup=0)
    report = asyncio.run(run_benchmark(config))
    (level,) = report["levels"]
    assert (level["completed"], level["failed"]) == (2, 0)
    assert report["prompt_lengths"].startswith(("exact", "calibrated")), report["prompt_lengths"]
    assert level["mean_output_tokens"] == 8  # ignore_eos: a random-weight model would stop early
    assert 14 <= level["mean_input_tokens"] <= 17  # its own count, a BOS token at most added
    assert level["ttft_ms"]["p50"] > 0 and level["tpot_ms"]["p50"] > 0
