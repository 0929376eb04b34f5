"""SIGTERM, as Kubernetes sends it: the gateway turns not-ready at once, keeps serving new and
in-flight requests for the drain window, then stops accepting, lets the in-flight stream finish
and exits 0. The same through the `--reload` supervisor, which the dev overlay's pod runs.

The upstream is the toy server (a real HTTP server) so that the stream's length is known: 60
chunks 0.1 s apart outlast the 3 s drain window on any machine; the relay is the same code the
engine's streams go through (test_gateway_vllm.py)."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest
import requests

DRAIN_SECONDS = 3.0
STREAM_CHUNKS, STREAM_GAP = 60, 0.1


def _stream(url: str, started: threading.Event, result: dict) -> None:
    body = {"model": "toy", "prompt": f"stream:{STREAM_CHUNKS}:{STREAM_GAP}", "stream": True}
    with requests.post(url + "/v1/completions", json=body, stream=True, timeout=300) as answer:
        result["status"] = answer.status_code
        events = []
        for line in answer.iter_lines():
            if line.startswith(b"data: "):
                events.append(line[len(b"data: "):])
                started.set()
        result["events"] = events
        result["finished_at"] = time.monotonic()


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize("flags", [(), ("--reload",)], ids=["plain", "reload-supervisor"])
def test_sigterm_drains_then_finishes_the_stream_and_exits_0(
    start_gateway, toy_upstream, flags: tuple[str, ...]
) -> None:
    gateway = start_gateway(
        toy_upstream.url, "", "--drain-seconds", str(DRAIN_SECONDS), "--shutdown-timeout", "120",
        *flags,
    )
    assert requests.get(gateway.url + "/ready", timeout=10).status_code == 200
    started, result = threading.Event(), {}
    streamer = threading.Thread(target=_stream, args=(gateway.url, started, result))
    streamer.start()
    assert started.wait(120), "the stream never started"

    gateway.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    # "At once": the signal reaches the event loop within milliseconds (a probe comes every 5 s).
    while requests.get(gateway.url + "/ready", timeout=10).status_code == 200:
        assert time.monotonic() - signalled < 0.5, "/ready still 200 half a second after SIGTERM"
        time.sleep(0.01)
    answered = 0
    while time.monotonic() - signalled < DRAIN_SECONDS / 2:
        ready = requests.get(gateway.url + "/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == 503 and ready.json()["error"]["message"]
        health = requests.get(gateway.url + "/health", timeout=10)
        assert health.status_code == 200 and health.json()["ready"] is False
        body = {"model": "toy", "prompt": f"during drain {answered}", "temperature": 0}
        completion = requests.post(gateway.url + "/v1/completions", json=body, timeout=60)
        assert completion.status_code == 200, completion.text
        # Keep-alive clients are told to reconnect (elsewhere, once the endpoint is gone).
        assert completion.headers.get("Connection", "").lower() == "close"
        answered += 1
    assert answered >= 1

    # Past the window: no new connections, while the stream is still being served.
    deadline = signalled + DRAIN_SECONDS + 5
    while not _refuses_connections(gateway.port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _refuses_connections(gateway.port), "still accepting after the drain window"
    assert streamer.is_alive(), "the stream ended before the drain window did: make it longer"

    streamer.join(60)
    assert gateway.process.wait(60) == 0, gateway.log()
    assert result["status"] == 200
    assert result["events"][-1] == b"[DONE]"
    choices = [json.loads(event)["choices"] for event in result["events"][:-1]]
    finish = [choice[0].get("finish_reason") for choice in choices if choice]
    assert finish[-1] == "length", "the stream was cut short of its max_tokens"
    assert len(finish) == STREAM_CHUNKS
