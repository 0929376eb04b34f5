"""The README's main job, `devloop serve --overlay dev --model tiny`, run for real: ready, a bf16
completion on an AMX CPU, and the cause named when the engine dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from devloop.common.ports import free_port, port_is_free
from devloop.engine.amx import cpu_flags
from tests.conftest import engine_start_slot

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="installed by scripts/bootstrap.sh")

SERVE = [sys.executable, "-m", "devloop", "serve", "--overlay", "dev", "--model", "tiny"]
TEXT_LOGS = {**os.environ, "DEVLOOP_LOG_FORMAT": "text"}
READY_TIMEOUT = 600


def test_serve_brings_the_dev_overlay_up_and_stops_it():
    port = free_port()
    with engine_start_slot():
        result = subprocess.run(
            [*SERVE, "--port", str(port), "--exit-when-ready", "--timeout", str(READY_TIMEOUT)],
            capture_output=True, text=True, timeout=READY_TIMEOUT + 100, env=TEXT_LOGS,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"http://127.0.0.1:{port}/v1 is ready: model 'tiny'" in result.stderr
    # While the port is closed the progress says the server lives and what it is doing.
    assert "starting: server process " in result.stderr
    assert "cannot connect" not in result.stderr
    assert "starting vLLM (importing torch and vLLM)" in result.stderr \
        or "starting the engine processes" in result.stderr, result.stderr[-3000:]
    assert port_is_free("127.0.0.1", port), "the server outlived `devloop serve`"


@dataclass
class RunningServe:
    process: subprocess.Popen
    port: int
    output: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def server_log(self) -> str:
        return Path(self.text().split("server log: ", 1)[1].split()[0]).read_text(errors="replace")


@contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[RunningServe]:
    """`devloop serve ... ARGS` in the background until it prints that it is ready."""
    port = free_port()
    output = tmp_path / "serve.out"
    slot = ExitStack()  # the start slot, held from the start until ready, not while it serves
    slot.enter_context(engine_start_slot())
    with output.open("wb") as sink:
        process = subprocess.Popen([*SERVE, "--port", str(port), *args], stdout=sink,
                                   stderr=subprocess.STDOUT, env=TEXT_LOGS)
    running = RunningServe(process, port, output)
    try:
        with slot:
            deadline = time.monotonic() + READY_TIMEOUT
            while "is ready: model" not in running.text():
                assert process.poll() is None, f"devloop serve exited:\n{running.text()[-3000:]}"
                assert time.monotonic() < deadline, "devloop serve never became ready"
                time.sleep(0.5)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


@pytest.mark.skipif("amx_tile" not in cpu_flags(),
                    reason="this CPU has no AMX tiles (grep amx_tile /proc/cpuinfo): vLLM takes "
                    "no AMX kernel here; test_amx.py covers the permission logic")
def test_a_bf16_completion_is_served_on_an_amx_cpu(tmp_path):
    """vLLM's bf16 AMX attention kernel killed the worker with SIGILL until every vLLM process
    requested the AMX tile permission (the devloop_amx vLLM plugin)."""
    with serving(tmp_path, "--set", "DTYPE=bfloat16") as server:
        for stream in (False, True):
            response = requests.post(f"{server.url}/v1/completions", timeout=120, json={
                "model": "tiny", "prompt": "Hello", "max_tokens": 16, "temperature": 0,
                "ignore_eos": True, "stream": stream,
            })
            assert response.status_code == 200, response.text[:500]
        usage = requests.post(f"{server.url}/v1/completions", timeout=120, json={
            "model": "tiny", "prompt": "Hello again", "max_tokens": 16, "ignore_eos": True,
        }).json()["usage"]
        assert usage["completion_tokens"] == 16
        assert "dtype=torch.bfloat16" in server.server_log()
        assert "AMX refused" not in server.text() + server.server_log()
    assert server.process.returncode == 0
    assert port_is_free("127.0.0.1", server.port)
    # Ctrl-C (SIGINT, sent by `serving`) is said as what happens, then that it is done.
    assert "stopping the server: vLLM finishes the requests in flight" in server.text()
    assert "server stopped (exit code 0)" in server.text()


def test_serve_names_the_signal_that_killed_the_engine_and_the_fix(tmp_path):
    """A worker killed by SIGILL (what the AMX bug did): serve must say so, not "exited with
    code 0" (vLLM's API server exits 0 after its engine died)."""
    with serving(tmp_path) as server:
        workers = [pid for pid in _descendants(server.process.pid)
                   if _comm(pid).startswith("VLLM::Worker")]
        assert workers, "no vLLM worker process found"
        os.kill(workers[0], signal.SIGILL)
        server.process.wait(timeout=120)
    assert server.process.returncode == 1
    output = server.text()
    assert "vLLM worker VllmWorker-0 killed by SIGILL (illegal instruction)" in output, output[-3000:]
    assert "hint: the CPU or kernel refused an instruction" in output
    assert "Fatal Python error: Illegal instruction" in output
    assert "exited with code 0" not in output
    assert "Traceback" not in output
    assert port_is_free("127.0.0.1", server.port), "the server outlived `devloop serve`"
