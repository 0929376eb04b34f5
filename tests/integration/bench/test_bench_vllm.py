"""`devloop bench` against the real vLLM CPU server (the session's tiny model), and through the
caching gateway in front of it: exact lengths, no errors, consistent timings, the JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm


def _bench(url: str, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    report_path = tmp_path / "bench.json"
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "devloop",
            "bench",
            "--url",
            url,
            "--concurrency",
            "1,2",
            "--input-len",
            "32",
            "--output-len",
            "8",
            "--num-prompts",
            "4",
            "--warmup",
            "1",
            "--seed",
            "3",
            "--json",
            str(report_path),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    return process, json.loads(report_path.read_text())


def test_bench_against_vllm_gets_exact_lengths_and_no_errors(
    vllm_base_url, vllm_served_model, tmp_path
):
    process, report = _bench(vllm_base_url, tmp_path)
    assert report["model"] == vllm_served_model
    assert report["prompt_lengths"].startswith("exact")  # vLLM has /tokenize
    assert [level["concurrency"] for level in report["levels"]] == [1, 2]
    for level in report["levels"]:
        assert (level["completed"], level["failed"]) == (4, 0)
        # The server's own counts: /tokenize calibration and ignore_eos make them exact.
        assert level["mean_input_tokens"] == 32
        assert level["mean_output_tokens"] == 8
        assert 0 < level["ttft_ms"]["p50"] < level["e2e_ms"]["p50"]
        # The tiny model outruns the network: the events of several tokens can share one read,
        # so gaps of 0 are real measurements here (tests/unit/bench/test_client.py pins ITL
        # against a server with known gaps).
        assert level["tpot_ms"]["p50"] > 0
        assert 0 <= level["itl_ms"]["p50"] <= level["itl_ms"]["p99"] <= level["e2e_ms"]["p99"]
        # 8 tokens: e2e is the first token plus 7 gaps, so TPOT cannot exceed e2e / 7.
        assert level["tpot_ms"]["p50"] <= level["e2e_ms"]["p99"] / 7
        assert level["output_throughput"] == pytest.approx(
            level["total_output_tokens"] / level["duration_s"]
        )
    # The closing table: a header, a rule, one row per concurrency.
    rows = [line.split() for line in process.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2"]
    assert "concurrency 2 [" in process.stderr  # the progress line


def test_bench_through_the_gateway_streams_every_request(vllm_base_url, start_gateway, tmp_path):
    gateway = start_gateway(vllm_base_url)
    _, report = _bench(gateway.url, tmp_path)
    for level in report["levels"]:
        assert (level["completed"], level["failed"]) == (4, 0)
        assert level["mean_output_tokens"] == 8
        # Streams are relayed, never cached: every token is timed, as against the engine.
        assert level["itl_ms"]["p99"] is not None  # every token's gap was timed


def test_plot_is_written_or_the_missing_dependency_is_named(vllm_base_url, tmp_path):
    plot = tmp_path / "bench.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        process = subprocess.run(
            [sys.executable, "-m", "devloop", "bench", "--url", vllm_base_url, "--plot", str(plot)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert process.returncode == 1
        assert "pip install matplotlib" in process.stderr
        return
    _bench(vllm_base_url, tmp_path, "--plot", str(plot))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
