"""What a starting vLLM server is doing, read from its log: the phase of its start-up.

vLLM 0.32 opens its port only after the engine is built (`Starting vLLM server on ...` comes
after the weights, the compile and the KV cache), so until then a health check sees nothing but
"connection refused". The log says where the start is; each pattern below is a line the
installed vLLM writes (tests/unit/engine/data/ holds real logs they were read from).

There is no line while weights download: vLLM's downloader runs with its progress bars off
(weight_utils.download_weights_from_hf, tqdm_class=DisabledTqdm) and logs "Time spent
downloading weights" only after it. So the phase from "Starting to load model" to the first
"Loading safetensors checkpoint shards" is "downloading or reading the weights".
"""

from __future__ import annotations

import re
from pathlib import Path

# (pattern, phase), in the order vLLM writes them; the last line that matches any names the
# phase. Each pattern is matched anywhere in a line, so vLLM's prefix ("(Worker pid=7) INFO
# 12-02 07:09:55 [cpu_model_runner.py:68] ") and the entrypoint's JSON records both match.
PHASES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), phase) for pattern, phase in (
        # devloop entrypoint (before exec): settings checked, `tiny` generated.
        (r"model tiny: generating", "generating the offline tiny model"),
        (r"effective engine configuration", "settings checked; starting vLLM"),
        (r"exec: .*vllm\.entrypoints", "starting vLLM (importing torch and vLLM)"),
        # vllm/entrypoints/utils.py, vllm/config/model.py (API server process)
        (r"non-default args: |Resolved architecture: ", "reading the model's configuration"),
        # vllm/v1/engine/core.py (engine core process)
        (r"Initializing a V1 LLM engine", "starting the engine processes"),
        # vllm/v1/worker/cpu_model_runner.py; the download, if any, happens after this line
        (r"Starting to load model ", "downloading or reading the model weights"),
        (r"Time spent downloading weights", "weights downloaded; loading them"),
        (r"Loading safetensors checkpoint shards|Loading weights took", "loading the model weights"),
        # ENFORCE_EAGER=false: on CPU the torch.compile happens inside the warm-up run
        # (vllm/v1/worker/cpu_model_runner.py: warming_up_model); its cache, when a previous
        # start left one, is read instead (vllm/compilation/decorators.py).
        (r"Warming up model for the compilation",
         "compiling the model (torch.compile, in a warm-up run)"),
        (r"Starting torch\.compile", "compiling the model (torch.compile)"),
        (r"Directly load AOT compilation from", "loading the compiled model from its cache"),
        (r"saved AOT compiled function|Initial profiling/warmup run took",
         "compiled; finishing the warm-up"),
        (r"Warming up done\.", "warm-up done"),
        # vllm/v1/worker/cpu_worker.py, vllm/v1/core/kv_cache_utils.py
        (r"for KV cache on node|KV cache size: ", "allocating the KV cache"),
        # vllm/v1/engine/core.py
        (r"init engine \(profile, create kv cache, warmup model\) took",
         "engine ready; starting the API server"),
        # vllm/entrypoints/launchers/api_server/entry.py, uvicorn
        (r"Starting vLLM server on ", "opening the API port"),
        (r"Application startup complete", "API server up"),
    )
)


def phase_of(log_text: str) -> str | None:
    """The phase named by the last line of `log_text` that a PHASES pattern matches; None when
    no line does (nothing logged yet)."""
    for line in reversed(log_text.splitlines()):
        for pattern, phase in reversed(PHASES):
            if pattern.search(line):
                return phase
    return None


def phase_of_file(path: Path, tail_bytes: int = 256 * 1024) -> str | None:
    """phase_of the end of a log file (a start-up log is small; a long-running one is read
    from its last `tail_bytes` only); None when the file does not exist yet."""
    try:
        with open(path, "rb") as log:
            log.seek(0, 2)
            size = log.tell()
            log.seek(max(0, size - tail_bytes))
            text = log.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    return phase_of(text)
