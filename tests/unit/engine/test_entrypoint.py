"""The engine entrypoint: settings in, validated vLLM arguments out, clear messages on mistakes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devloop.engine import cpus
from devloop.engine.entrypoint import command, describe, vllm_args, vllm_env
from devloop.engine.settings import SETTINGS, ConfigError, Limits, load_config, unknown_settings
from devloop.manifests.kustomize import project_root

ROOT = project_root(Path(__file__).parent)
GIB = 1 << 30
TWO_CPUS = Limits(cpus=[0, 1], cpu_limit=2.0, memory_limit=4 * GIB, physical_memory=24 * GIB)


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


def problems(env: dict[str, str], limits: Limits = TWO_CPUS) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(env, limits)
    return str(raised.value)


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
    ]
    assert command(config)[:3] == [sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry"]


def test_enforce_eager_and_extra_args_are_appended(env):
    env.update(ENFORCE_EAGER="true", SERVED_MODEL_NAME="qwen", EXTRA_ARGS="--seed 7 --block-size '32'")
    args = vllm_args(load_config(env, TWO_CPUS))
    assert args[args.index("--served-model-name") + 1] == "qwen"
    assert args[-5:] == ["--enforce-eager", "--seed", "7", "--block-size", "32"]


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


def test_dry_run_prints_the_configuration_and_the_command(env):
    result = _entrypoint(env, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "effective engine configuration" in result.stderr
    assert "vllm.entrypoints.launchers.api_server.entry --model Qwen/Qwen3-0.6B" in result.stdout


def test_cpu_lists_use_the_range_syntax():
    assert cpus.format_cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert cpus.format_cpu_list([3]) == "3"


def test_cgroup_v2_limits_are_read(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "memory.max").write_text("4294967296\n")
    assert cpus.cgroup_cpu_limit(tmp_path) == 1.5
    assert cpus.cgroup_memory_limit(tmp_path) == 4 * GIB


def test_cgroup_v2_without_limits_reads_as_none(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    assert cpus.cgroup_cpu_limit(tmp_path) is None
    assert cpus.cgroup_memory_limit(tmp_path) is None


def test_cgroup_v1_limits_are_read(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cpus.cgroup_cpu_limit(tmp_path) == 2.0
    assert cpus.cgroup_memory_limit(tmp_path) is None


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


def test_vllm_gets_faulthandler_so_a_native_crash_names_its_signal(env):
    assert vllm_env(load_config(env, TWO_CPUS), {})["PYTHONFAULTHANDLER"] == "1"


@pytest.mark.parametrize("plugins, expected", [
    (None, None),  # unset: vLLM loads every plugin, ours included
    ("", "devloop_amx"),
    ("lora_filesystem_resolver", "lora_filesystem_resolver,devloop_amx"),
    ("devloop_amx,other", "devloop_amx,other"),
])
def test_an_allowlist_of_vllm_plugins_keeps_the_amx_one(env, plugins, expected):
    base = {} if plugins is None else {"VLLM_PLUGINS": plugins}
    assert vllm_env(load_config(env, TWO_CPUS), base).get("VLLM_PLUGINS") == expected
