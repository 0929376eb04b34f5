"""Start and stop the servers of a benchmark plan: each candidate of devloop.bench.plans becomes a
running OpenAI-compatible server on a free port, timed from start to ready, with the PSS of all
its processes sampled until it stops.

vLLM candidates start as `devloop serve` starts them (the overlay's settings through the
entrypoint) or, for its defaults, as `vllm serve` alone; llama.cpp candidates as `devloop serve
--overlay gguf` does: the overlay's llm-llamacpp-config, made local (engine.llamacpp.local: the
model file, 127.0.0.1, the AMX rule), with the candidate's settings and threads scaled here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devloop.bench import plans, procmem, warmstart
from devloop.common.errors import DevloopError
from devloop.common.ports import free_port
from devloop.engine import cpus, health, serve, tinymodel
from devloop.engine.entrypoint import VLLM_SERVER_MODULE
from devloop.engine.llamacpp import binary, gguf, randomgguf
from devloop.engine.llamacpp import local as llamacpp_local

READY_TIMEOUT = 1800.0  # an 8B model's load and compile on two busy cores
# Settings the entrypoint derives that vLLM's defaults must not inherit from this environment.
_ENTRYPOINT_ONLY = ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")


def model_path(ref: plans.ModelRef, models_dir: Path) -> Path:
    """The candidate's model on disk, generated (and converted) on first use."""
    if ref.random_gguf:
        return random_gguf_path(ref, models_dir)
    directory = tinymodel.ensure_model(ref.shape, quant=ref.quant, cache_dir=models_dir)
    return gguf.model_gguf(directory, ref.gguf) if ref.gguf else directory


def random_gguf_path(ref: plans.ModelRef, models_dir: Path) -> Path:
    """A GGUF of `ref`'s shape written directly with random blocks (engine.llamacpp.randomgguf),
    made once: the tokenizer from the tiny model's GGUF."""
    target = models_dir / f"random-{ref.shape}.{ref.gguf}.gguf"
    if target.is_file():
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
    models_dir.mkdir(parents=True, exist_ok=True)
    randomgguf.write(ref.shape, gguf.tiny_gguf(cache_dir=models_dir), staging,
                     binary.find_converter(), quant=ref.gguf or "q8_0")
    staging.rename(target)
    return target


class StartFailed(DevloopError):
    """The server never answered; what it used until then is still worth reporting."""

    def __init__(self, message: str, server: RunningServer) -> None:
        super().__init__(message)
        self.server = server


@dataclass
class RunningServer:
    candidate: plans.Candidate
    model: Path
    process: subprocess.Popen
    url: str
    log_path: Path
    load_seconds: float
    memory: procmem.SessionMemorySampler

    def stop(self) -> None:
        serve.stop_server(self.process)
        self.memory.__exit__(None, None, None)


def llamacpp_environment(candidate: plans.Candidate, model: Path, port: int,
                         cache_dir: Path) -> dict[str, str]:
    """llama-server's LLAMA_* environment for `candidate`: its overlay's settings, local as
    `devloop serve` makes them, threads from the CPUs usable here (like CPU_THREADS=auto), the
    candidate's settings, and its name as the served model."""
    settings = llamacpp_local.overlay_settings(candidate.overlay)
    if settings is None:
        raise DevloopError(f"{candidate.name}: overlay {candidate.overlay} has no llama.cpp engine")
    threads = cpus.usable_cpu_count(cpus.available_cpus(), cpus.cgroup_cpu_limit())
    return llamacpp_local.local_environment(
        settings, cache_dir, model=str(model), port=port,
        overrides={"LLAMA_ARG_THREADS": str(threads), **candidate.settings,
                   "LLAMA_ARG_ALIAS": candidate.name},
    )


def _command(candidate: plans.Candidate, model: Path, port: int
             ) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a vllm-defaults candidate."""
    env = {k: v for k, v in os.environ.items() if k not in _ENTRYPOINT_ONLY}
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # else vLLM sizes its cache from the machine's RAM
    env.setdefault("HF_HUB_OFFLINE", "1")
    argv = [sys.executable, "-m", VLLM_SERVER_MODULE, "--model", str(model),
            "--served-model-name", candidate.name, "--host", "127.0.0.1", "--port", str(port),
            *candidate.args]
    return argv, env


def _prepare(candidate: plans.Candidate, model: Path, port: int, workdir: Path,
             log_path: Path) -> Callable[[], subprocess.Popen]:
    """What starts `candidate`'s server, with its settings rendered and checked already: the
    load time counts from the start, not from rendering the overlay."""
    if candidate.kind == plans.VLLM:
        settings = serve.local_environment(
            candidate.overlay, model=str(model), port=port,
            cache_dir=warmstart.cache_dir(candidate, workdir),
            overrides={**candidate.settings, "SERVED_MODEL_NAME": candidate.name},
        )
        return lambda: serve.start_server(settings, log_path)
    if candidate.kind == plans.LLAMACPP:
        env = llamacpp_environment(candidate, model, port, warmstart.cache_dir(candidate, workdir))
        return lambda: llamacpp_local.start_server(env, log_path, serve.stop_with_parent)
    argv, env = _command(candidate, model, port)

    def popen() -> subprocess.Popen:
        with open(log_path, "ab") as log:
            return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=serve.stop_with_parent)  # noqa: PLW1509 - one system call
    return popen


def start(candidate: plans.Candidate, models_dir: Path, workdir: Path) -> RunningServer:
    """Start `candidate` and return once it answers a completion (devloop health's check)."""
    model = model_path(candidate.model, models_dir)
    port = free_port()
    log_path = workdir / "logs" / f"{candidate.name}-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    launch = _prepare(candidate, model, port, workdir, log_path)
    started = time.monotonic()
    process = launch()
    sampler = procmem.SessionMemorySampler(process.pid).__enter__()
    url = f"http://127.0.0.1:{port}"

    def exited() -> str | None:
        code = process.poll()
        return None if code is None else f"exited with code {code}"

    report = health.wait_until_ready(url, READY_TIMEOUT, interval=1.0, give_up=exited)
    waiting_for = None if report.ready else report.waiting_for
    server = RunningServer(candidate, model, process, url, log_path,
                           time.monotonic() - started, sampler)
    if waiting_for:
        server.stop()
        raise StartFailed(f"{candidate.name} did not become ready ({waiting_for}); "
                          f"end of {log_path}:\n{serve.log_tail(log_path, 25)}", server)
    return server

