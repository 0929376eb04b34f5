"""The optimized overlay's model format, AWQ 4-bit, served for real by vLLM's CPU backend.

A tiny random-weight AWQ checkpoint (AutoAWQ's GEMM layout, devloop.engine.tinymodel.awq) goes through the pod's
own path: the optimized overlay's rendered engine settings, `devloop entrypoint`, vLLM. The
overlay's settings are scaled to this machine only where they must be (threads: `auto` instead
of 6; a 1 GiB KV cache instead of 5 for a model this small) and eager mode keeps the start
short; the full-size 8B model with the overlay's torch.compile is `devloop bench-compare
--plan awq-8b` (README, Performance). This server is the test's own, not the session's shared one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devloop.common.ports import free_port
from devloop.engine import health, int4kernel, serve, tinymodel
from tests.conftest import engine_start_slot

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="installed by scripts/bootstrap.sh")

SERVED_NAME = serve.overlay_engine_settings("optimized")["SERVED_MODEL_NAME"]
READY_TIMEOUT = 600.0  # model generation is cached; a start on a busy 2-core machine is minutes


@pytest.fixture(scope="module")
def awq_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    missing = int4kernel.missing_on_this_cpu()
    if missing:
        pytest.skip(f"{missing} (test_an_awq_model_is_refused_at_once_where_vllm_cannot_run_it "
                    "covers this CPU)")
    workdir = tmp_path_factory.mktemp("awq")
    model = tinymodel.ensure_model("tiny", quant="awq")
    port = free_port()
    settings = serve.local_environment(
        "optimized", model=str(model), port=port, cache_dir=workdir,
        overrides={"SERVED_MODEL_NAME": SERVED_NAME, "CPU_THREADS": "auto",
                   "VLLM_CPU_KVCACHE_SPACE": "1", "ENFORCE_EAGER": "true",
                   "DEVLOOP_LOG_FORMAT": "json"},  # the log is read back below
    )
    log_path = workdir / "vllm.log"
    url = f"http://127.0.0.1:{port}"
    with engine_start_slot():
        process = serve.start_server(settings, log_path)

        def exited() -> str | None:
            code = process.poll()
            return None if code is None else f"exited with code {code}"

        report = health.wait_until_ready(url, READY_TIMEOUT, interval=0.5, give_up=exited)
    try:
        if not report.ready:
            pytest.fail(f"the AWQ server did not become ready ({report.waiting_for}):\n"
                        f"{serve.log_tail(log_path, 40)}", pytrace=False)
        yield url, log_path
    finally:
        serve.stop_server(process)


def test_vllm_loads_the_awq_layers_with_its_cpu_int4_kernel(awq_server):
    _, log_path = awq_server
    log = log_path.read_text(errors="replace")
    # Without the quantization config, or with a layout vLLM refused, this line never appears
    # (an unquantized load fails on the missing `.weight` tensors instead).
    assert "Using CPUWNA16LinearKernel for AutoAWQMarlinLinearMethod" in log


def test_the_awq_model_answers_a_completion_under_the_overlays_served_name(awq_server):
    url, _ = awq_server
    assert [m["id"] for m in requests.get(f"{url}/v1/models", timeout=30).json()["data"]] == [
        SERVED_NAME
    ]
    response = requests.post(
        f"{url}/v1/completions",
        json={"model": SERVED_NAME, "prompt": "Explain Kubernetes in one sentence.",
              "max_tokens": 12, "temperature": 0, "ignore_eos": True},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usage"]["completion_tokens"] == 12
    assert body["choices"][0]["text"].strip()


def test_the_entrypoint_passed_the_overlays_settings_to_vllm(awq_server):
    _, log_path = awq_server
    settings = next(
        json.loads(line)["settings"] for line in log_path.read_text().splitlines()
        if line.startswith("{") and "effective engine configuration" in line
    )
    overlay = serve.overlay_engine_settings("optimized")
    assert settings["max model len"] == f"{overlay['MAX_MODEL_LEN']} tokens"
    assert settings["max num seqs"] == overlay["MAX_NUM_SEQS"]
    assert settings["dtype"] == overlay["DTYPE"]


def test_an_awq_model_is_refused_at_once_where_vllm_cannot_run_it(tmp_path):
    """On an AVX2-only x86 CPU vLLM's kernels have no int4 GEMM: serving the optimized overlay's
    model format fails in seconds with the reason and the fix (exit 2), not after the load."""
    import subprocess
    import sys

    missing = int4kernel.missing_on_this_cpu()
    if not missing:
        pytest.skip("this CPU has AVX-512: vLLM has its int4 kernel here (the tests above run)")
    model = tinymodel.ensure_model("tiny", quant="awq")
    result = subprocess.run(
        [sys.executable, "-m", "devloop", "serve", "--overlay", "optimized", "--model", str(model),
         "--set", "CPU_THREADS=auto", "--set", "VLLM_CPU_KVCACHE_SPACE=1",
         "--port", str(free_port()), "--cache-dir", str(tmp_path), "--exit-when-ready"],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "AWQ (int4)" in result.stderr and "gguf overlay" in result.stderr
    assert "Traceback" not in result.stderr
