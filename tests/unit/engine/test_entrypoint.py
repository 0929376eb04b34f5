"""The engine entrypoint: settings in, validated vLLM arguments out, clear messages on mistakes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devloop.engine import warmcache
from devloop.engine.entrypoint import command, describe, vllm_args, vllm_env
from devloop.engine.settings import Limits, load_config
from devloop.manifests.kustomize import project_root

from .limits import GIB, TWO_CPUS

ROOT = project_root(Path(__file__).parent)


@pytest.fixture(autouse=True)
def warm_start_plugin_installed(monkeypatch):
    """As in the image (pip install .): the warm-start loader's entry point is installed."""
    monkeypatch.setattr(warmcache, "plugin_installed", lambda: True)


def test_base_settings_become_vllm_arguments(env):
    config = load_config(env, TWO_CPUS)
    assert vllm_args(config) == [
        "--model", "Qwen/Qwen3-0.6B",
        "--served-model-name", "Qwen/Qwen3-0.6B",
        "--max-model-len", "2048",
        "--max-num-seqs", "4",
        "--dtype", "bfloat16",
        "--host", "0.0.0.0",
        "--port", "8000",
        "--shutdown-timeout", "0",
        "--load-format", "devloop_warm",
    ]
    assert command(config)[:3] == [sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry"]


def test_enforce_eager_and_extra_args_are_appended(env):
    env.update(ENFORCE_EAGER="true", SERVED_MODEL_NAME="qwen", EXTRA_ARGS="--seed 7 --block-size '32'")
    args = vllm_args(load_config(env, TWO_CPUS))
    assert args[args.index("--served-model-name") + 1] == "qwen"
    assert args[-7:] == ["--enforce-eager", "--load-format", "devloop_warm", "--seed", "7",
                         "--block-size", "32"]


def test_warm_starts_keep_their_entries_on_the_model_cache_volume(env):
    out = vllm_env(load_config(env, TWO_CPUS), {})
    assert out[warmcache.DIR_ENV] == str(Path(env["VLLM_CACHE_ROOT"]) / warmcache.SUBDIR)


def test_shutdown_timeout_lets_vllm_drain_in_flight_requests_on_sigterm(env):
    env["SHUTDOWN_TIMEOUT"] = "300"
    config = load_config(env, TWO_CPUS)
    args = vllm_args(config)
    assert args[args.index("--shutdown-timeout") + 1] == "300"
    assert "up to 300 s for in-flight requests after SIGTERM" in describe(config, TWO_CPUS)


def test_auto_threads_bind_every_allowed_cpu_and_reserve_none(env):
    config = load_config(env, TWO_CPUS)
    out = vllm_env(config, env)
    assert config.cpu_threads == 2
    assert out["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert out["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert out["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_auto_threads_follow_the_cgroup_quota_not_the_cpu_count(env):
    limits = Limits(cpus=[2, 3, 4, 5, 9], cpu_limit=3.5, memory_limit=None, physical_memory=8 * GIB)
    config = load_config(env, limits)
    assert config.cpu_threads == 3
    assert config.threads_bind == "2-4"


def test_explicit_thread_count_binds_that_many_cpus(env):
    env["CPU_THREADS"] = "1"
    assert load_config(env, TWO_CPUS).threads_bind == "0"


def test_an_explicit_bind_list_is_kept(env):
    env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    assert vllm_env(load_config(env, TWO_CPUS), env)["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"


def test_the_api_key_reaches_vllm_only_through_its_environment(env):
    env["VLLM_API_KEY"] = "s3cret"
    config = load_config(env, TWO_CPUS)
    assert vllm_env(config, env)["VLLM_API_KEY"] == "s3cret"
    assert "s3cret" not in " ".join(command(config))
    assert "s3cret" not in describe(config, TWO_CPUS)


def test_an_empty_api_key_from_an_absent_secret_is_dropped(env):
    env["VLLM_API_KEY"] = ""
    assert "VLLM_API_KEY" not in vllm_env(load_config(env, TWO_CPUS), env)


def test_effective_configuration_lists_every_setting(env):
    text = describe(load_config(env, TWO_CPUS), TWO_CPUS)
    for label in ("model", "max model len", "KV cache", "CPU threads", "threads bind", "listen"):
        assert label in text


def _entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in env}
    return subprocess.run([sys.executable, "-m", "devloop", "entrypoint", *args],
                          env={**clean, **env}, check=False, capture_output=True, text=True, timeout=60)


def test_a_bad_configuration_fails_in_seconds_with_exit_code_2(env):
    env.update(CPU_THREADS="64", MAX_MODEL_LEN="lots")
    started = time.monotonic()
    result = _entrypoint(env)
    assert result.returncode == 2
    assert "CPU_THREADS=64" in result.stderr and "MAX_MODEL_LEN='lots'" in result.stderr
    assert time.monotonic() - started < 20  # no vLLM import, no model load before refusing


def test_a_bad_setting_is_named_even_when_the_port_is_busy(env, busy_port):
    env.update(PORT=str(busy_port), HOST="127.0.0.1", MAX_NUM_SEQS="abc")
    result = _entrypoint(env)
    assert result.returncode == 2
    assert "MAX_NUM_SEQS='abc'" in result.stderr and "in use" not in result.stderr


def test_a_busy_port_is_a_settings_mistake_found_before_the_model_is_made(env, busy_port):
    """Exit 2 naming PORT, before `tiny` is generated and before vLLM is started."""
    env.update(PORT=str(busy_port), HOST="127.0.0.1", MODEL_NAME="tiny")
    result = _entrypoint(env)
    assert result.returncode == 2
    assert f"port {busy_port} on 127.0.0.1 is in use" in result.stderr and "set PORT" in result.stderr
    assert not list(Path(env["HF_HOME"]).rglob("config.json")), "the model was generated"
    assert "exec:" not in result.stderr


def test_dry_run_prints_the_configuration_and_the_command(env):
    result = _entrypoint(env, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "effective engine configuration" in result.stderr
    assert "vllm.entrypoints.launchers.api_server.entry --model Qwen/Qwen3-0.6B" in result.stdout


def test_vllm_gets_faulthandler_so_a_native_crash_names_its_signal(env):
    assert vllm_env(load_config(env, TWO_CPUS), {})["PYTHONFAULTHANDLER"] == "1"


@pytest.mark.parametrize("plugins, expected", [
    (None, None),  # unset: vLLM loads every plugin, ours included
    ("", "devloop_amx,devloop_warmstart"),
    ("lora_filesystem_resolver", "lora_filesystem_resolver,devloop_amx,devloop_warmstart"),
    ("devloop_amx,other,devloop_warmstart", "devloop_amx,other,devloop_warmstart"),
])
def test_an_allowlist_of_vllm_plugins_keeps_ours(env, plugins, expected):
    base = {} if plugins is None else {"VLLM_PLUGINS": plugins}
    assert vllm_env(load_config(env, TWO_CPUS), base).get("VLLM_PLUGINS") == expected


def _local_model(tmp_path: Path, tokenizer_text: str) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen3"}')
    (model / "tokenizer_config.json").write_text(tokenizer_text)
    return model


THINK = '{"added_tokens_decoder": {"1": {"content": "<think>"}, "2": {"content": "</think>"}}}'
DEEPSEEK_TOOLS = ('{"added_tokens": [{"content": "<｜tool▁calls▁begin｜>"}, '
                  '{"content": "<｜tool▁calls▁end｜>"}]}')
PLAIN = '{"added_tokens_decoder": {"1": {"content": "<|im_start|>"}}}'
OPTIMIZED_ARGS = ("--reasoning-parser deepseek_r1 --enable-auto-tool-choice "
                  "--tool-call-parser deepseek_v3 --max-num-batched-tokens 512")


@pytest.mark.parametrize("tokenizer, kept", [
    (THINK + DEEPSEEK_TOOLS, OPTIMIZED_ARGS.split()),
    (THINK, ["--reasoning-parser", "deepseek_r1", "--max-num-batched-tokens", "512"]),
    (DEEPSEEK_TOOLS, ["--enable-auto-tool-choice", "--tool-call-parser", "deepseek_v3",
                      "--max-num-batched-tokens", "512"]),
    (PLAIN, ["--max-num-batched-tokens", "512"]),
])
def test_a_local_model_is_served_without_the_parsers_its_tokenizer_cannot_support(
    env, tmp_path, tokenizer, kept
):
    """vLLM refuses to start a reasoning or DeepSeek tool parser on a tokenizer without their
    tokens (the tiny model and its AWQ copy under the optimized overlay, a local non-thinking
    model); auto tool choice goes with its parser; everything else stays."""
    from devloop.engine.entrypoint import resolve_model

    env = {**env, "MODEL_NAME": str(_local_model(tmp_path, tokenizer)),
           "EXTRA_ARGS": OPTIMIZED_ARGS}
    assert resolve_model(load_config(env, TWO_CPUS)).extra_args == kept


def test_the_dev_overlays_hermes_tool_parser_needs_no_token(env, tmp_path):
    from devloop.engine.entrypoint import resolve_model

    env = {**env, "MODEL_NAME": str(_local_model(tmp_path, PLAIN)),
           "EXTRA_ARGS": "--reasoning-parser=qwen3 --enable-auto-tool-choice "
                         "--tool-call-parser hermes"}
    assert resolve_model(load_config(env, TWO_CPUS)).extra_args == [
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]


def test_a_hub_model_keeps_its_parsers(env):
    from devloop.engine.entrypoint import resolve_model

    env = {**env, "MODEL_NAME": "deepseek-ai/DeepSeek-R1-0528-Qwen3-8B",
           "EXTRA_ARGS": "--reasoning-parser=deepseek_r1 --tool-call-parser deepseek_v3"}
    assert resolve_model(load_config(env, TWO_CPUS)).extra_args == [
        "--reasoning-parser=deepseek_r1", "--tool-call-parser", "deepseek_v3"]
