"""The llama.cpp engine's settings: the `LLAMA_ARG_*` environment variables llama-server reads
(kustomize/components/llamacpp/llamacpp.env), checked strictly because llama-server is lax:

- it ignores any key it does not know, without a word (a typo is a setting silently not made);
- a flag-style key (`LLAMA_ARG_ENDPOINT_METRICS`) set to a false word is ignored too;
- a bad number fails only when the pod starts, after the image pull.

`unknown_keys` refuses every key llama-server does not read, with a did-you-mean; `check`
validates the values devloop relies on (model source, context size, parallel slots, threads,
reasoning format, metrics on) and returns a LlamaConfig or raises ConfigError with every
problem at once. The manifest policy, `devloop validate` and `devloop serve` all call it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from devloop.common.errors import UsageError
from devloop.engine.llamacpp.server_env import SERVER_ENV

TINY_MODEL = "tiny"
# Keys llama-server reads that are not LLAMA_ARG_*: where `-hf` downloads go (hf-cache.cpp
# looks at LLAMA_CACHE first, then the Hugging Face variables, then HOME).
OTHER_KEYS = frozenset({"LLAMA_CACHE", "HF_HUB_CACHE", "HF_HOME", "HOME"})
KNOWN_KEYS = SERVER_ENV | OTHER_KEYS

# The ways to name the model (llama-server takes one; with two it picks by its own precedence).
MODEL_KEYS = ("LLAMA_ARG_MODEL", "LLAMA_ARG_HF_REPO", "LLAMA_ARG_MODEL_URL")
# --reasoning-format values (common/chat.cpp common_reasoning_format_from_name).
REASONING_FORMATS = ("none", "auto", "deepseek", "deepseek-legacy")
# --load-mode (LLAMA_ARG_LOAD_MODE), as b11312's `llama-server --help` lists them; the gguf overlay
# sets none. llama-server refuses another value only when it starts, with exit code 1.
LOAD_MODES = ("auto", "none", "mmap", "mlock", "mmap+mlock", "dio")
# common_arg_utils::is_truthy / is_falsey: the only words llama-server takes as booleans.
TRUE_WORDS = ("on", "enabled", "true", "1")
FALSE_WORDS = ("off", "disabled", "false", "0")
BOOLEAN_KEYS = ("LLAMA_ARG_JINJA", "LLAMA_ARG_ENDPOINT_METRICS", "LLAMA_ARG_REPACK",
                "LLAMA_ARG_CONT_BATCHING", "LLAMA_ARG_OFFLINE", "LLAMA_ARG_KV_UNIFIED")
# `-hf owner/name[:quant]`: a Hugging Face repo id and an optional quant tag (Q4_K_M, q8_0...).
_HF_REPO = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}(?::[A-Za-z0-9_.-]+)?$"
)

SETTINGS_HELP = (
    "the keys are the LLAMA_ARG_* variables `llama-server --help` lists (env: ...) and "
    f"{', '.join(sorted(OTHER_KEYS))}; kustomize/components/llamacpp/llamacpp.env documents "
    "the ones the project sets"
)


class ConfigError(UsageError):
    """One or more llama.cpp settings are invalid; the message lists each with what to change."""


@dataclass(frozen=True)
class LlamaConfig:
    """What devloop needs to know of a valid settings map."""

    model_source: str  # the value of the one model key, or `tiny`
    model_key: str  # which of MODEL_KEYS names it
    ctx_size: int  # tokens of KV cache, shared by the slots (0: the model's own length)
    parallel: int  # slots decoded together (continuous batching)
    threads: int  # -1: llama-server's default (every core)
    reasoning_format: str
    port: int


def unknown_keys(keys: Iterable[str]) -> list[str]:
    """The keys llama-server does not read, each with a did-you-mean when one is close
    ("LLAMA_ARG_CTX_SIZ (did you mean LLAMA_ARG_CTX_SIZE?)")."""
    unknown = []
    for key in keys:
        if key in KNOWN_KEYS:
            continue
        close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1, cutoff=0.8)
        unknown.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return unknown


def _int(env: Mapping[str, str], key: str, low: int, high: int, unit: str, default: str,
         errors: list[str]) -> int:
    raw = env.get(key, default).strip()
    try:
        value = int(raw)
    except ValueError:
        errors.append(f"{key}={raw!r} is not an integer: give one from {low} to {high} ({unit})")
        return low
    if not low <= value <= high:
        errors.append(f"{key}={value} is out of range: give an integer from {low} to {high} ({unit})")
    return value


def _model(env: Mapping[str, str], errors: list[str]) -> tuple[str, str]:
    named = [(key, env[key].strip()) for key in MODEL_KEYS if env.get(key, "").strip()]
    if not named:
        errors.append(f"no model: set one of {', '.join(MODEL_KEYS)} (LLAMA_ARG_HF_REPO="
                      "owner/name:QUANT downloads once into LLAMA_CACHE), or `tiny`")
        return "", ""
    if len(named) > 1:
        errors.append(f"{' and '.join(key for key, _ in named)} are both set: llama-server would "
                      "pick one by its own precedence; keep exactly one")
    key, source = named[0]
    if source == TINY_MODEL:
        return key, source
    if key == "LLAMA_ARG_HF_REPO" and not _HF_REPO.match(source):
        errors.append(f"LLAMA_ARG_HF_REPO={source!r} is not owner/name[:QUANT] (e.g. "
                      "bartowski/deepseek-ai_DeepSeek-R1-0528-Qwen3-8B-GGUF:Q4_K_M)")
    if key == "LLAMA_ARG_MODEL" and not source.endswith(".gguf"):
        errors.append(f"LLAMA_ARG_MODEL={source!r} is not a .gguf file: llama-server loads GGUF only")
    if key == "LLAMA_ARG_MODEL_URL" and not source.startswith(("https://", "http://")):
        errors.append(f"LLAMA_ARG_MODEL_URL={source!r} is not an http(s) URL")
    return key, source


def check(env: Mapping[str, str]) -> LlamaConfig:
    """Validate the keys and the values devloop relies on; raise ConfigError listing every
    problem (one round trip through the ConfigMap instead of one per mistake)."""
    errors = [f"unknown key {key}" for key in unknown_keys(env)]
    model_key, source = _model(env, errors)
    # 0 takes the model's training length (131072 for the guide's model: gigabytes of KV cache).
    ctx = _int(env, "LLAMA_ARG_CTX_SIZE", 0, 1 << 20, "tokens of KV cache for all slots", "0",
               errors)
    parallel = _int(env, "LLAMA_ARG_N_PARALLEL", 1, 256, "slots decoded together", "1", errors)
    threads = _int(env, "LLAMA_ARG_THREADS", -1, 1024, "CPU threads; -1 every core", "-1", errors)
    if threads == 0:
        errors.append("LLAMA_ARG_THREADS=0: give a thread count, or -1 for every core")
    port = _int(env, "LLAMA_ARG_PORT", 1, 65535, "TCP port", "8080", errors)
    if ctx and ctx < 64 * parallel:
        errors.append(f"LLAMA_ARG_CTX_SIZE={ctx} leaves {ctx // parallel} tokens to each of "
                      f"{parallel} slots: raise it or lower LLAMA_ARG_N_PARALLEL")
    reasoning = env.get("LLAMA_ARG_THINK", "auto").strip()
    if reasoning not in REASONING_FORMATS:
        errors.append(f"LLAMA_ARG_THINK={reasoning!r} (--reasoning-format) is not one of "
                      f"{', '.join(REASONING_FORMATS)}")
    load_mode = env.get("LLAMA_ARG_LOAD_MODE", "auto").strip()
    if load_mode not in LOAD_MODES:
        errors.append(f"LLAMA_ARG_LOAD_MODE={load_mode!r} (--load-mode) is not one of "
                      f"{', '.join(LOAD_MODES)}")
    for key in BOOLEAN_KEYS:
        if key in env and env[key].strip() not in TRUE_WORDS + FALSE_WORDS:
            errors.append(f"{key}={env[key]!r}: llama-server takes only {'/'.join(TRUE_WORDS)} "
                          f"or {'/'.join(FALSE_WORDS)}")
    # A flag-style option: llama-server ignores a false word, so "off" would read as set.
    if env.get("LLAMA_ARG_ENDPOINT_METRICS", "").strip() not in TRUE_WORDS:
        errors.append("LLAMA_ARG_ENDPOINT_METRICS must be true: /metrics is scraped like vLLM's")
    if errors:
        raise ConfigError(
            "invalid llama.cpp settings (kustomize/components/llamacpp/llamacpp.env or the "
            "overlay's configMapGenerator):\n  - " + "\n  - ".join(errors)
            + f"\n  ({SETTINGS_HELP})"
        )
    return LlamaConfig(source, model_key, ctx, parallel, threads, reasoning, port)
