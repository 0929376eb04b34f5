"""Start and stop the servers of a benchmark plan: each candidate of devloop.bench.plans becomes a
running OpenAI-compatible server on a free port, timed from start to ready, with the PSS of all
its processes sampled until it stops."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devloop.bench import llamacpp, plans, procmem, warmstart
from devloop.common.errors import DevloopError
from devloop.common.ports import free_port
from devloop.engine import cpus, health, serve, tinymodel
from devloop.engine.entrypoint import VLLM_SERVER_MODULE

READY_TIMEOUT = 1800.0  # an 8B model's load and compile on two busy cores
# Settings the entrypoint derives that vLLM's defaults must not inherit from this environment.
_ENTRYPOINT_ONLY = ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")


def model_path(ref: plans.ModelRef, models_dir: Path) -> Path:
    """The candidate's model on disk, generated (and converted) on first use."""
    directory = tinymodel.ensure_model(ref.shape, quant=ref.quant, cache_dir=models_dir)
    return llamacpp.gguf_for(directory, ref.gguf) if ref.gguf else directory


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


def _command(candidate: plans.Candidate, model: Path, port: int
             ) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a vllm-defaults or llamacpp candidate."""
    env = {k: v for k, v in os.environ.items() if k not in _ENTRYPOINT_ONLY}
    if candidate.kind == plans.LLAMACPP:
        threads = cpus.usable_cpu_count(cpus.available_cpus(), cpus.cgroup_cpu_limit())
        return llamacpp.server_command(model, port, threads, context=2048), env
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # else vLLM sizes its cache from the machine's RAM
    env.setdefault("HF_HUB_OFFLINE", "1")
    argv = [sys.executable, "-m", VLLM_SERVER_MODULE, "--model", str(model),
            "--served-model-name", candidate.name, "--host", "127.0.0.1", "--port", str(port),
            *candidate.args]
    return argv, env


def _start_process(candidate: plans.Candidate, model: Path, port: int, workdir: Path,
                   log_path: Path) -> subprocess.Popen:
    if candidate.kind == plans.VLLM:
        settings = serve.local_environment(
            candidate.overlay, model=str(model), port=port,
            cache_dir=warmstart.cache_dir(candidate, workdir),
            overrides={**candidate.settings, "SERVED_MODEL_NAME": candidate.name},
        )
        return serve.start_server(settings, log_path)
    argv, env = _command(candidate, model, port)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=serve.stop_with_parent)  # noqa: PLW1509 - one system call


def start(candidate: plans.Candidate, models_dir: Path, workdir: Path) -> RunningServer:
    """Start `candidate` and return once it answers a completion (devloop health's check)."""
    model = model_path(candidate.model, models_dir)
    port = free_port()
    log_path = workdir / "logs" / f"{candidate.name}-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    process = _start_process(candidate, model, port, workdir, log_path)
    sampler = procmem.SessionMemorySampler(process.pid).__enter__()
    url = f"http://127.0.0.1:{port}"

    def exited() -> str | None:
        code = process.poll()
        return None if code is None else f"exited with code {code}"

    if candidate.kind == plans.LLAMACPP:
        waiting_for = _wait_for_completion(url, READY_TIMEOUT, exited)
    else:
        report = health.wait_until_ready(url, READY_TIMEOUT, interval=1.0, give_up=exited)
        waiting_for = None if report.ready else report.waiting_for
    server = RunningServer(candidate, model, process, url, log_path,
                           time.monotonic() - started, sampler)
    if waiting_for:
        server.stop()
        raise StartFailed(f"{candidate.name} did not become ready ({waiting_for}); "
                          f"end of {log_path}:\n{serve.log_tail(log_path, 25)}", server)
    return server


def _wait_for_completion(url: str, timeout: float, exited) -> str | None:
    """Ready as devloop health means it, for a server without /health (llama-cpp-python): it
    lists a model and answers a one-token completion. None when ready, else what it lacked."""
    import requests

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if reason := exited():
            return reason
        try:
            models = requests.get(f"{url}/v1/models", timeout=10).json()["data"]
            answer = requests.post(f"{url}/v1/completions", timeout=120, json={
                "model": models[0]["id"], "prompt": "Hello", "max_tokens": 1})
            if answer.status_code == 200:
                return None
            last = f"completion: HTTP {answer.status_code}"
        except (requests.RequestException, ValueError, KeyError, IndexError) as error:
            last = f"{type(error).__name__}: {error}"
        time.sleep(1.0)
    return f"not ready after {timeout:g} s; last: {last}"
