"""The engine's settings: every mistake named with its key and the fix, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from devloop.engine.settings import SETTINGS, Limits, load_config, unknown_settings
from devloop.manifests.kustomize import project_root

from .limits import GIB, TWO_CPUS, problems

ROOT = project_root(Path(__file__).parent)


def test_more_threads_than_the_container_may_use_is_refused_with_the_fix(env):
    env["CPU_THREADS"] = "6"
    message = problems(env)
    assert "CPU_THREADS=6" in message
    assert "CPUs 0-1" in message and "cgroup limit 2" in message
    assert "resources.limits.cpu" in message


def test_kv_cache_that_does_not_fit_the_memory_limit_is_refused(env):
    env["VLLM_CPU_KVCACHE_SPACE"] = "5"
    message = problems(env)
    assert "VLLM_CPU_KVCACHE_SPACE=5 GiB" in message
    assert "memory limit of 4.0 GiB" in message
    assert "resources.limits.memory" in message


def test_kv_cache_is_checked_against_ram_when_no_limit_is_set(env):
    env["VLLM_CPU_KVCACHE_SPACE"] = "64"
    limits = Limits(cpus=[0], cpu_limit=None, memory_limit=None, physical_memory=16 * GIB)
    assert "machine's RAM of 16.0 GiB" in problems(env, limits)


def test_missing_kv_cache_space_is_refused_because_vllm_would_take_92_percent(env):
    del env["VLLM_CPU_KVCACHE_SPACE"]
    assert "VLLM_CPU_KVCACHE_SPACE is not set" in problems(env)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("MAX_MODEL_LEN", "2k", "MAX_MODEL_LEN='2k' is not an integer"),
        ("MAX_MODEL_LEN", "8", "MAX_MODEL_LEN=8 is out of range"),
        ("MAX_NUM_SEQS", "0", "MAX_NUM_SEQS=0 is out of range"),
        ("PORT", "70000", "PORT=70000 is out of range"),
        ("VLLM_CPU_KVCACHE_SPACE", "0", "VLLM_CPU_KVCACHE_SPACE=0 is out of range"),
        ("CPU_THREADS", "two", "CPU_THREADS='two' is neither `auto` nor an integer"),
        ("CPU_THREADS", "0", "CPU_THREADS=0 must be at least 1"),
        ("DTYPE", "bf16", "DTYPE='bf16' is not one of"),
        ("ENFORCE_EAGER", "maybe", "ENFORCE_EAGER='maybe' must be true or false"),
        ("EXTRA_ARGS", "--seed '7", "EXTRA_ARGS=\"--seed '7\" is not valid shell quoting"),
        ("SHUTDOWN_TIMEOUT", "2m", "SHUTDOWN_TIMEOUT='2m' is not an integer"),
        ("SHUTDOWN_TIMEOUT", "-1", "SHUTDOWN_TIMEOUT=-1 is out of range"),
    ],
)
def test_invalid_values_name_the_key_and_the_accepted_range(env, key, value, expected):
    env[key] = value
    assert expected in problems(env)


def test_every_problem_is_reported_at_once(env):
    env.update(MAX_NUM_SEQS="-1", DTYPE="fp8", CPU_THREADS="99")
    message = problems(env)
    assert "MAX_NUM_SEQS" in message and "DTYPE" in message and "CPU_THREADS" in message


@pytest.mark.parametrize(
    "flag, hint",
    [
        ("--cpu-only", "no --cpu-only flag"),
        ("--disable-log-requests", "request logging is off by default"),
        ("--max-model-len=4096", "set MAX_MODEL_LEN instead"),
        ("--api-key secret", "VLLM_API_KEY"),
        ("--shutdown-timeout 60", "set SHUTDOWN_TIMEOUT instead"),
    ],
)
def test_extra_args_refuse_flags_that_do_not_exist_or_that_keys_own(env, flag, hint):
    env["EXTRA_ARGS"] = flag
    assert hint in problems(env)


def test_a_model_path_that_does_not_exist_is_refused(env, tmp_path):
    env["MODEL_NAME"] = str(tmp_path / "nowhere")
    message = problems(env)
    assert "no such directory" in message and "tiny" in message


def test_a_directory_without_config_json_is_not_a_model(env, tmp_path):
    env["MODEL_NAME"] = str(tmp_path)
    assert "has no config.json" in problems(env)


def test_a_model_directory_is_served_by_its_absolute_path(env, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    env["MODEL_NAME"] = str(tmp_path)
    config = load_config(env, TWO_CPUS)
    assert config.model == str(tmp_path)


@pytest.mark.parametrize("source", ["Qwen/Qwen3 0.6B", "a/b/c", "org/", "-bad/name", "x" * 97])
def test_malformed_hub_ids_are_refused(env, source):
    env["MODEL_NAME"] = source
    assert "neither a Hugging Face id" in problems(env)


@pytest.mark.parametrize("source", ["gpt2", "Qwen/Qwen3-0.6B", "hxac/DeepSeek-R1-0528-Qwen3-8B-AWQ-4bit"])
def test_hub_ids_are_accepted(env, source):
    env["MODEL_NAME"] = source
    assert load_config(env, TWO_CPUS).model == source


def test_an_unwritable_cache_directory_is_refused(env, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    env["HF_HOME"] = str(blocker / "huggingface")
    assert "HF_HOME=" in problems(env) and "cannot be created" in problems(env)


def test_this_process_limits_are_readable():
    limits = Limits.of_this_process()
    assert limits.cpus and limits.usable_cpus >= 1 and limits.memory_ceiling > GIB


def test_every_setting_the_entrypoint_reads_is_documented_in_engine_env_and_back():
    engine_env = ROOT / "kustomize" / "base" / "engine.env"
    documented = {line.split("=", 1)[0] for line in engine_env.read_text().splitlines()
                  if line and not line.startswith("#")}
    # VLLM_API_KEY comes from a Secret, VLLM_CPU_OMP_THREADS_BIND is derived unless set, and
    # HOST is for local runs: none belongs in the ConfigMap.
    assert documented == set(SETTINGS) - {"VLLM_API_KEY", "VLLM_CPU_OMP_THREADS_BIND", "HOST"}


@pytest.mark.parametrize("key, expected", [
    ("MAX_NUM_SEQ", ["MAX_NUM_SEQ (did you mean MAX_NUM_SEQS?)"]),
    ("DTYP", ["DTYP (did you mean DTYPE?)"]),
    ("VLLM_CPU_KVCACHE_SPAC", ["VLLM_CPU_KVCACHE_SPAC (did you mean VLLM_CPU_KVCACHE_SPACE?)"]),
    ("SHOE_SIZE", ["SHOE_SIZE"]),
    ("MAX_NUM_SEQS", []),
    ("VLLM_CPU_SGL_KERNEL", []),  # a variable vLLM reads itself passes through
])
def test_unknown_settings_are_named_with_a_guess(key, expected):
    assert unknown_settings([key], vllm_reads={"VLLM_CPU_SGL_KERNEL", "VLLM_CPU_KVCACHE_SPACE"}) \
        == expected
