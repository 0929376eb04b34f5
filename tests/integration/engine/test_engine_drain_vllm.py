"""The engine pod's shutdown against the real vLLM, with the dev overlay's own settings.

The kubelet sends SIGTERM to the container's PID 1, which is vLLM itself (the entrypoint execs
it). With the overlay's SHUTDOWN_TIMEOUT (vLLM's --shutdown-timeout) a stream in flight runs to
its last token, new requests are refused from the signal on (which is why the preStop sleep keeps
them away until the endpoint is gone), and the server exits 0 within the teardown time the
manifests' grace period allows after the drain. vLLM's default (0) instead kills the engine at
once and leaves open streams hanging until the kubelet's SIGKILL.

This needs a server of its own (it is stopped), so it is the one test here that starts vLLM.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from devloop.common.ports import free_port
from devloop.engine import health, serve
from tests.conftest import VLLM_READY_TIMEOUT, engine_start_slot
from tests.manifests.policy import ENGINE_TEARDOWN_SECONDS

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="installed by scripts/bootstrap.sh")

STREAM_TOKENS = 300   # about 10 s of the tiny model on 2 busy cores
SIGTERM_AFTER = 20    # chunks received before the signal: the stream is well under way


class Stream(threading.Thread):
    """One streamed completion of exactly STREAM_TOKENS tokens, read chunk by chunk."""

    def __init__(self, url: str, model: str) -> None:
        super().__init__(daemon=True)
        self.url, self.model = url, model
        self.under_way = threading.Event()
        self.chunks = 0
        self.tokens = 0  # as the final usage chunk counts them (a chunk may carry several)
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.ended_at = 0.0

    def run(self) -> None:
        body = {"model": self.model, "prompt": "hello", "max_tokens": STREAM_TOKENS,
                "ignore_eos": True, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        try:
            with requests.post(f"{self.url}/v1/completions", json=body, stream=True,
                               timeout=(10, 300)) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    chunk = json.loads(line[len(b"data: "):])
                    if chunk.get("usage"):
                        self.tokens = chunk["usage"]["completion_tokens"]
                    if not chunk["choices"]:
                        continue
                    self.chunks += 1
                    self.finish_reason = chunk["choices"][0].get("finish_reason") or self.finish_reason
                    if self.chunks == SIGTERM_AFTER:
                        self.under_way.set()
        except requests.RequestException as error:
            self.error = repr(error)
        finally:
            self.ended_at = time.monotonic()
            self.under_way.set()


@pytest.fixture
def own_engine(tmp_path: Path):
    settings = serve.local_environment("dev", model="tiny", port=free_port(),
                                       overrides={"ENFORCE_EAGER": "true"})
    log_path = tmp_path / "vllm.log"
    url = f"http://127.0.0.1:{settings['PORT']}"
    with engine_start_slot():
        process = serve.start_server(settings, log_path)
        report = health.wait_until_ready(
            url, VLLM_READY_TIMEOUT, interval=0.5,
            give_up=lambda: None if process.poll() is None else f"exited with {process.returncode}")
    try:
        assert report.ready, f"vLLM did not start:\n{serve.log_tail(log_path, 40)}"
        yield process, url, report.model, settings, log_path
    finally:
        serve.stop_server(process)


def test_sigterm_lets_the_stream_in_flight_finish_then_vllm_exits_0(own_engine):
    process, url, model, settings, log_path = own_engine
    assert int(settings["SHUTDOWN_TIMEOUT"]) > 0, "the overlay must let vLLM drain"
    stream = Stream(url, model)
    stream.start()
    assert stream.under_way.wait(120) and stream.error is None, stream.error

    os.kill(process.pid, signal.SIGTERM)  # what the kubelet does after the preStop sleep
    time.sleep(0.5)
    try:
        late = requests.post(f"{url}/v1/completions", timeout=30,
                             json={"model": model, "prompt": "hi", "max_tokens": 2}).status_code
    except requests.ConnectionError:
        late = "connection refused"
    stream.join(timeout=300)

    assert stream.error is None, stream.error
    assert (stream.tokens, stream.finish_reason) == (STREAM_TOKENS, "length"), (
        "the stream was cut by the shutdown:\n" + serve.log_tail(log_path, 40))
    assert late == "connection refused" or late >= 500, (
        f"a request after SIGTERM got {late}: vLLM no longer refuses new work while draining, "
        "so the preStop sleep may be shorter")
    process.wait(timeout=ENGINE_TEARDOWN_SECONDS + 30)
    exited_after = time.monotonic() - stream.ended_at
    assert process.returncode == 0, serve.log_tail(log_path, 40)
    assert exited_after <= ENGINE_TEARDOWN_SECONDS, (
        f"vLLM took {exited_after:.0f} s to exit after its drain; the grace period allows "
        f"{ENGINE_TEARDOWN_SECONDS} s (tests/manifests/policy.py)")
