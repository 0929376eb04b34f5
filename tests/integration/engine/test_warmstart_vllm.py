"""Warm starts for real: the second start of vLLM on a small AWQ model loads what the first one
computed (devloop.engine.warmloader) and answers a temperature-0 prompt token for token as the
first one did; a damaged entry is not used (the start is cold again, and still answers the same).

Three starts of the tiny AWQ checkpoint through the pod's path (the optimized overlay's settings
via `devloop entrypoint`, eager so each start is short), one after another on one model-cache
directory. Skips when the warm-start plugin is not in the installed metadata (an editable
install older than its entry point: `pip install -e .`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from devloop.common.ports import free_port
from devloop.engine import health, int4kernel, serve, tinymodel, warmcache
from tests.conftest import engine_start_slot

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="installed by scripts/bootstrap.sh")
if not warmcache.plugin_installed():
    pytest.skip(f"the {warmcache.PLUGIN_NAME} vLLM plugin is not installed (pip install -e .)",
                allow_module_level=True)

if int4kernel.missing_on_this_cpu():
    # What the warm start keeps is vLLM's CPU conversion of int4 (AWQ) layers.
    pytest.skip(f"{int4kernel.missing_on_this_cpu()}: no AWQ model runs here to warm-start",
                allow_module_level=True)

READY_TIMEOUT = 600.0
PROMPT = {"model": "warm", "prompt": "Explain Kubernetes in one sentence.", "max_tokens": 12,
          "temperature": 0, "ignore_eos": True, "return_token_ids": True}


def _start_and_ask(cache_dir: Path, name: str) -> tuple[list[int], str]:
    """One start: the completion's token ids, and the server's log."""
    model = tinymodel.ensure_model("tiny", quant="awq")
    port = free_port()
    settings = serve.local_environment(
        "optimized", model=str(model), port=port, cache_dir=cache_dir,
        overrides={"SERVED_MODEL_NAME": "warm", "CPU_THREADS": "auto",
                   "VLLM_CPU_KVCACHE_SPACE": "1", "ENFORCE_EAGER": "true"},
    )
    log_path = cache_dir / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    with engine_start_slot():
        process = serve.start_server(settings, log_path)
        report = health.wait_until_ready(
            url, READY_TIMEOUT, interval=0.5,
            give_up=lambda: None if process.poll() is None else "exited")
    try:
        if not report.ready:
            pytest.fail(f"{name} start did not become ready ({report.waiting_for}):\n"
                        f"{serve.log_tail(log_path, 40)}", pytrace=False)
        response = requests.post(f"{url}/v1/completions", json=PROMPT, timeout=300)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["token_ids"], log_path.read_text(errors="replace")
    finally:
        serve.stop_server(process)


@pytest.fixture(scope="module")
def starts(tmp_path_factory) -> dict[str, tuple[list[int], str]]:
    cache_dir = tmp_path_factory.mktemp("warm")
    out = {"cold": _start_and_ask(cache_dir, "cold"), "warm": _start_and_ask(cache_dir, "warm")}
    root = cache_dir / "vllm-cache" / warmcache.SUBDIR
    (entry,) = [p for p in root.iterdir() if not p.name.startswith(warmcache.TEMP_PREFIX)]
    shard = min(entry.glob("replayed-*.safetensors"))
    with shard.open("r+b") as handle:  # a copy cut short, as a full disk would leave it
        handle.truncate(shard.stat().st_size // 2)
    out["damaged"] = _start_and_ask(cache_dir, "damaged")
    return out


def test_the_first_start_computes_and_keeps_the_converted_layers(starts):
    _, log = starts["cold"]
    assert "cold start: checkpoint read in" in log
    assert "warm-start entry" in log and "written in" in log


def test_the_second_start_is_warm_and_answers_token_for_token_the_same(starts):
    cold_tokens, _ = starts["cold"]
    warm_tokens, log = starts["warm"]
    assert "warm start: " in log and "conversion skipped" in log
    assert "cold start: " not in log
    assert len(cold_tokens) == 12
    assert warm_tokens == cold_tokens


def test_a_truncated_entry_is_not_used_and_the_start_is_cold_again(starts):
    cold_tokens, _ = starts["cold"]
    tokens, log = starts["damaged"]
    assert "has the wrong size: ignored" in log
    assert "warm start: " not in log and "cold start: checkpoint read in" in log
    assert tokens == cold_tokens
