"""llama-server on a CPU with AMX tiles (engine/llamacpp/amx.py), on the real binary: with the
automatic choice (repacking off) it serves Q8_0 and Q4_0 GGUFs; with llama.cpp's AMX kernels
forced on it still dies on this kind of machine, which is why the choice exists. When that
second test fails, llama.cpp's AMX path works here: drop the fallback."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from devloop.common.ports import free_port
from devloop.engine.llamacpp import amx, binary, gguf
from tests.conftest import _stop_process_group, llamacpp_unavailable, start_llamacpp

pytestmark = [
    pytest.mark.llamacpp,
    pytest.mark.skipif(not amx.has_amx_tiles(), reason="this CPU has no AMX tiles (amx_tile in "
                       "/proc/cpuinfo): the AMX question does not arise"),
]


@pytest.fixture(scope="module", autouse=True)
def _server_binary():
    if binary.available():
        llamacpp_unavailable(binary.available())


@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
def test_the_automatic_choice_serves_amx_kernel_formats(kind, tmp_path):
    state = start_llamacpp(tmp_path / "server.log",
                           overrides={"LLAMA_ARG_MODEL": str(gguf.tiny_gguf(kind))})
    assert "error" not in state, state.get("error")
    try:
        response = requests.post(f"{state['base_url']}/v1/completions", timeout=60,
                                 json={"prompt": "Hello", "max_tokens": 8})
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == 8
        assert "load_tensors:          AMX model buffer" not in Path(state["log_path"]).read_text()
    finally:
        _stop_process_group(state["pid"])


def test_llamacpps_amx_kernels_still_crash_here(tmp_path):
    """Forced on, llama-server dies by a signal while loading (the AMX weight repacking),
    warming up or at its first completion."""
    port = free_port()
    env = {"LLAMA_ARG_MODEL": str(gguf.tiny_gguf("q8_0")), "LLAMA_ARG_PORT": str(port),
           "LLAMA_ARG_HOST": "127.0.0.1", "LLAMA_ARG_CTX_SIZE": "512", "LLAMA_ARG_REPACK": "true",
           "PATH": "/usr/bin:/bin"}
    log = tmp_path / "amx.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(binary.find_server())], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                requests.post(f"http://127.0.0.1:{port}/v1/completions", timeout=5,
                              json={"prompt": "Hello", "max_tokens": 4})
            except requests.RequestException:
                pass
            time.sleep(0.3)
        assert process.poll() in (-signal.SIGSEGV, -signal.SIGILL), (
            f"llama-server with AMX kernels {process.poll()=}: it no longer crashes here, so "
            "engine/llamacpp/amx.py and the pod's start shell can stop turning repacking off; "
            f"log: {log.read_text(errors='replace')[-500:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
