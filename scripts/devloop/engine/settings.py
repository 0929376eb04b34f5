"""The engine's settings (kustomize/base/engine.env, from the container's environment), each
checked before vLLM spends a minute loading a model: `load_config` returns an EngineConfig or
raises ConfigError listing every problem with what to change. Also the typo check for keys
that neither the entrypoint nor vLLM reads (`unknown_settings`, used by `devloop serve --set`
and the manifest policy)."""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shlex
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devloop.common.errors import UsageError
from devloop.engine import cpus as cpu_info

TINY_MODEL = "tiny"
GIB = 1 << 30

# Every setting the entrypoint reads from its environment; kustomize/base/engine.env documents
# each (a test keeps the two in step). VLLM_API_KEY comes from a Secret, not the ConfigMap.
SETTINGS = (
    "MODEL_NAME", "SERVED_MODEL_NAME", "MAX_MODEL_LEN", "MAX_NUM_SEQS", "DTYPE",
    "VLLM_CPU_KVCACHE_SPACE", "CPU_THREADS", "VLLM_CPU_OMP_THREADS_BIND", "ENFORCE_EAGER", "PORT",
    "HOST", "SHUTDOWN_TIMEOUT", "HF_HOME", "VLLM_CACHE_ROOT", "EXTRA_ARGS", "VLLM_API_KEY",
)

# The `--dtype` values vLLM 0.32 accepts (vllm.config.model.ModelDType); a test keeps them in sync.
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off", "")

# Hugging Face repo ids: "name" or "owner/name", letters, digits, '-', '_', '.', at most 96 each.
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")

# Flags the entrypoint sets from their own keys: in EXTRA_ARGS they would silently win or clash.
_OWNED_FLAGS = {
    "--model": "MODEL_NAME",
    "--served-model-name": "SERVED_MODEL_NAME",
    "--max-model-len": "MAX_MODEL_LEN",
    "--max-num-seqs": "MAX_NUM_SEQS",
    "--dtype": "DTYPE",
    "--enforce-eager": "ENFORCE_EAGER",
    "--port": "PORT",
    "--host": "HOST",
    "--shutdown-timeout": "SHUTDOWN_TIMEOUT",
    "--api-key": "VLLM_API_KEY (from a Secret; a flag would show the key in the process list)",
}
# Flags from older guides that this vLLM does not have.
_NONEXISTENT_FLAGS = {
    "--cpu-only": "vLLM has no --cpu-only flag: the CPU build is its own package and image",
    "--disable-log-requests": "removed from vLLM; request logging is off by default",
    "--device": "removed from vLLM; the installed build decides the device",
}


class ConfigError(UsageError):
    """One or more settings are invalid; the message lists each with what to change."""


@dataclass(frozen=True)
class Limits:
    """What the container may use, read from the kernel (parameters so tests can vary them)."""

    cpus: list[int]
    cpu_limit: float | None  # cores, from the cgroup quota; None = no limit
    memory_limit: int | None  # bytes, from the cgroup; None = no limit (then physical RAM)
    physical_memory: int

    @classmethod
    def of_this_process(cls) -> Limits:
        return cls(
            cpus=cpu_info.available_cpus(),
            cpu_limit=cpu_info.cgroup_cpu_limit(),
            memory_limit=cpu_info.cgroup_memory_limit(),
            physical_memory=cpu_info.physical_memory(),
        )

    @property
    def usable_cpus(self) -> int:
        return cpu_info.usable_cpu_count(self.cpus, self.cpu_limit)

    @property
    def memory_ceiling(self) -> int:
        return self.memory_limit if self.memory_limit is not None else self.physical_memory

    def describe_cpus(self) -> str:
        quota = "no cgroup limit" if self.cpu_limit is None else f"cgroup limit {self.cpu_limit:g}"
        return f"{self.usable_cpus} (CPUs {cpu_info.format_cpu_list(self.cpus)}, {quota})"


@dataclass(frozen=True)
class EngineConfig:
    """The validated settings; `model` is what vLLM loads (a hub id or a directory)."""

    model_source: str
    model: str
    served_model_name: str
    max_model_len: int
    max_num_seqs: int
    dtype: str
    kvcache_space_gib: int
    cpu_threads: int
    threads_bind: str
    enforce_eager: bool
    host: str
    port: int
    shutdown_timeout: int  # seconds vLLM lets in-flight requests finish after SIGTERM
    hf_home: str
    vllm_cache_root: str
    api_key_set: bool
    extra_args: list[str] = field(default_factory=list)


def vllm_variables() -> frozenset[str] | None:
    """The environment variables the installed vLLM reads (vllm/envs.py's table), or None when
    vLLM is not installed. envs.py imports only the standard library, so it is loaded on its
    own, in milliseconds, rather than through `import vllm` (5-15 s)."""
    spec = importlib.util.find_spec("vllm")
    locations = list(spec.submodule_search_locations or []) if spec else []
    envs_file = next((Path(place) / "envs.py" for place in locations
                      if (Path(place) / "envs.py").is_file()), None)
    if envs_file is None:
        return None
    module_spec = importlib.util.spec_from_file_location("_devloop_vllm_envs", envs_file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return frozenset(module.environment_variables)


def unknown_settings(
    keys: Iterable[str], vllm_reads: Collection[str] | None = None
) -> list[str]:
    """The keys that neither the entrypoint nor vLLM reads, each with a did-you-mean when one is
    close ("MAX_NUM_SEQ (did you mean MAX_NUM_SEQS?)"): a typo would otherwise be ignored without
    a word. VLLM_* keys pass when the installed vLLM reads them (`vllm_reads`, default:
    vllm_variables())."""
    keys = [key for key in keys if key not in SETTINGS]
    if any(key.startswith("VLLM_") for key in keys) and vllm_reads is None:
        vllm_reads = vllm_variables() or ()
    known = [*SETTINGS, *sorted(vllm_reads or ())]
    unknown = []
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        unknown.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return unknown


SETTINGS_HELP = (
    f"the settings are {', '.join(SETTINGS)}, or a VLLM_* variable vLLM reads "
    "(kustomize/base/engine.env documents each)"
)


def _int_setting(
    env: Mapping[str, str], key: str, low: int, high: int, unit: str, errors: list[str],
    default: str | None = None,
) -> int:
    raw = env.get(key, default)
    if raw is None or raw.strip() == "":
        errors.append(f"{key} is not set: give an integer from {low} to {high} ({unit})")
        return low
    try:
        value = int(raw.strip())
    except ValueError:
        errors.append(f"{key}={raw!r} is not an integer: give one from {low} to {high} ({unit})")
        return low
    if not low <= value <= high:
        errors.append(f"{key}={value} is out of range: give an integer from {low} to {high} ({unit})")
    return value


def _model_kind(source: str) -> str:
    """'tiny', 'path' or 'hub'; raises ValueError with the reason when it is none of them."""
    if source == TINY_MODEL:
        return "tiny"
    looks_like_path = source.startswith(("/", "./", "../", "~")) or os.path.exists(source)
    if looks_like_path:
        path = Path(source).expanduser()
        if not path.is_dir():
            raise ValueError(
                f"MODEL_NAME={source}: no such directory; mount the model there, fix the path, "
                f"or use a Hugging Face id (owner/name) or `{TINY_MODEL}`"
            )
        if not (path / "config.json").is_file():
            raise ValueError(
                f"MODEL_NAME={source}: the directory has no config.json, so it is not a "
                "Hugging Face model directory (save_pretrained output)"
            )
        return "path"
    if _HUB_ID.match(source) and ".." not in source:
        return "hub"
    raise ValueError(
        f"MODEL_NAME={source!r} is neither a Hugging Face id (owner/name: letters, digits, "
        f"'-', '_', '.'), an existing directory, nor `{TINY_MODEL}`"
    )


def _extra_args(raw: str, errors: list[str]) -> list[str]:
    try:
        args = shlex.split(raw)
    except ValueError as error:
        errors.append(f"EXTRA_ARGS={raw!r} is not valid shell quoting ({error})")
        return []
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in _NONEXISTENT_FLAGS:
            errors.append(f"EXTRA_ARGS has {flag}: {_NONEXISTENT_FLAGS[flag]}; remove it")
        elif flag in _OWNED_FLAGS:
            errors.append(f"EXTRA_ARGS has {flag}: set {_OWNED_FLAGS[flag]} instead")
    return args


def _writable_dir(key: str, value: str, errors: list[str]) -> None:
    try:
        Path(value).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        errors.append(
            f"{key}={value} cannot be created ({error.strerror}): mount the model-cache volume "
            f"there or point {key} at a writable directory"
        )
        return
    if not os.access(value, os.W_OK | os.X_OK):
        errors.append(
            f"{key}={value} is not writable by uid {os.getuid()}: fix the volume's ownership "
            f"(fsGroup) or point {key} at a writable directory"
        )


def _model_setting(env: Mapping[str, str], errors: list[str]) -> tuple[str, str]:
    """MODEL_NAME and its kind ('tiny', 'path', 'hub'; '' when invalid)."""
    source = env.get("MODEL_NAME", "").strip()
    if not source:
        errors.append(f"MODEL_NAME is not set: give a Hugging Face id, a directory or `{TINY_MODEL}`")
        return source, ""
    try:
        return source, _model_kind(source)
    except ValueError as error:
        errors.append(str(error))
        return source, ""


def _kvcache_setting(env: Mapping[str, str], limits: Limits, errors: list[str]) -> int:
    # Without it vLLM's CPU backend reserves 92 % of the machine's RAM and fails to start.
    kv_gib = _int_setting(env, "VLLM_CPU_KVCACHE_SPACE", 1, 4096, "GiB of KV cache", errors)
    if kv_gib * GIB >= limits.memory_ceiling:
        where = "memory limit" if limits.memory_limit is not None else "machine's RAM"
        errors.append(
            f"VLLM_CPU_KVCACHE_SPACE={kv_gib} GiB does not fit in the container's {where} of "
            f"{limits.memory_ceiling / GIB:.1f} GiB, which must also hold the weights and the "
            "runtime: lower VLLM_CPU_KVCACHE_SPACE or raise resources.limits.memory"
        )
    return kv_gib


def _threads_setting(env: Mapping[str, str], limits: Limits, errors: list[str]) -> int:
    """CPU_THREADS: `auto` (every CPU the container may use) or at most that many."""
    threads_raw = env.get("CPU_THREADS", "auto").strip() or "auto"
    usable = limits.usable_cpus
    if threads_raw == "auto":
        return usable
    try:
        threads = int(threads_raw)
    except ValueError:
        errors.append(f"CPU_THREADS={threads_raw!r} is neither `auto` nor an integer")
        return usable
    if threads < 1:
        errors.append(f"CPU_THREADS={threads} must be at least 1 (or `auto`)")
    elif threads > usable:
        errors.append(
            f"CPU_THREADS={threads} is more than the CPUs this container may use: "
            f"{limits.describe_cpus()}; lower CPU_THREADS (or use `auto`) or raise "
            "resources.limits.cpu"
        )
    return threads


def _bool_setting(env: Mapping[str, str], key: str, default: str, errors: list[str]) -> bool:
    raw = env.get(key, default).strip().lower()
    if raw not in TRUE_WORDS + FALSE_WORDS:
        errors.append(f"{key}={raw!r} must be true or false")
    return raw in TRUE_WORDS


def load_config(env: Mapping[str, str], limits: Limits) -> EngineConfig:
    """Validate every setting and return them; raise ConfigError listing all problems at once
    (one round trip through the ConfigMap instead of one per mistake). The model is not
    generated here: `tiny` resolves to its path in `resolve_model`."""
    errors: list[str] = []
    source, kind = _model_setting(env, errors)
    served = env.get("SERVED_MODEL_NAME", "").strip() or source
    max_model_len = _int_setting(env, "MAX_MODEL_LEN", 16, 1 << 20, "tokens", errors)
    max_num_seqs = _int_setting(env, "MAX_NUM_SEQS", 1, 1024, "sequences per batch", errors)
    port = _int_setting(env, "PORT", 1, 65535, "TCP port", errors, default="8000")
    # vLLM's own default, 0, aborts every request at SIGTERM and leaves open streams hanging
    # until the kubelet's SIGKILL; the manifests set it to the longest stream (engine.env).
    shutdown_timeout = _int_setting(env, "SHUTDOWN_TIMEOUT", 0, 86400,
                                    "seconds in-flight requests may run on after SIGTERM",
                                    errors, default="0")
    dtype = env.get("DTYPE", "auto").strip() or "auto"
    if dtype not in DTYPES:
        errors.append(f"DTYPE={dtype!r} is not one of {', '.join(DTYPES)}")
    kv_gib = _kvcache_setting(env, limits, errors)
    threads = _threads_setting(env, limits, errors)
    # One OpenMP thread pinned per CPU, none held back: measured 1.4-1.6x faster than vLLM's
    # default (which reserves a core for the frontend) on a 2-core machine (design.md).
    bind = env.get("VLLM_CPU_OMP_THREADS_BIND", "").strip() or cpu_info.format_cpu_list(
        limits.cpus[: max(1, threads)]
    )
    enforce_eager = _bool_setting(env, "ENFORCE_EAGER", "false", errors)
    hf_home = env.get("HF_HOME", "").strip() or os.path.expanduser("~/.cache/huggingface")
    cache_root = env.get("VLLM_CACHE_ROOT", "").strip() or os.path.expanduser("~/.cache/vllm")
    _writable_dir("HF_HOME", hf_home, errors)
    _writable_dir("VLLM_CACHE_ROOT", cache_root, errors)
    extra = _extra_args(env.get("EXTRA_ARGS", ""), errors)
    if errors:
        raise ConfigError(
            "invalid engine settings (kustomize/base/engine.env or the overlay's "
            "configMapGenerator):\n  - " + "\n  - ".join(errors)
        )
    return EngineConfig(
        model_source=source,
        model=source if kind != "path" else str(Path(source).expanduser()),
        served_model_name=served,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        dtype=dtype,
        kvcache_space_gib=kv_gib,
        cpu_threads=threads,
        threads_bind=bind,
        enforce_eager=enforce_eager,
        host=env.get("HOST", "").strip() or "0.0.0.0",
        port=port,
        shutdown_timeout=shutdown_timeout,
        hf_home=hf_home,
        vllm_cache_root=cache_root,
        api_key_set=bool(env.get("VLLM_API_KEY", "").strip()),
        extra_args=extra,
    )
