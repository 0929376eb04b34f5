"""A client that hangs up mid-stream frees the engine: the gateway drops its upstream stream, so
vLLM aborts the request instead of decoding to max_tokens for nobody (the shared tiny model)."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.redis]


def _log_since(log: Path, offset: int) -> str:
    with log.open("rb") as file:
        file.seek(offset)
        return file.read().decode(errors="replace")


def test_a_client_hanging_up_mid_stream_aborts_the_engines_request(
    start_gateway, vllm_server, vllm_served_model: str, redis_url: str
) -> None:
    gateway = start_gateway(vllm_server.base_url, redis_url)
    # The shared server's log grows with every test's requests: read only what comes after ours.
    log = Path(vllm_server.log_path)
    log_start = log.stat().st_size
    request_id = f"hangup-{uuid.uuid4().hex}"  # the gateway passes it on; vLLM's id contains it
    # Long enough that decoding it to the end takes far longer than the abort (the context is
    # 2048 tokens); ignore_eos so the random model cannot stop early by itself.
    payload = json.dumps({"model": vllm_served_model, "prompt": "Hang up on me", "max_tokens": 1900,
                          "temperature": 0, "ignore_eos": True, "stream": True}).encode()
    # A bare socket, so hanging up is one close() and nothing buffers or retries for us.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=120) as client:
        client.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: gateway\r\n"
                       b"Content-Type: application/json\r\n"
                       + f"X-Request-ID: {request_id}\r\nContent-Length: {len(payload)}\r\n\r\n"
                       .encode() + payload)
        received = b""
        while b'"text"' not in received:  # the engine is decoding for us
            chunk = client.recv(65536)
            assert chunk, f"the gateway closed before the first token: {received!r}"
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received[:300]

    deadline = time.monotonic() + 60
    while not any("Aborted request" in line and request_id in line
                  for line in _log_since(log, log_start).splitlines()):
        assert time.monotonic() < deadline, (
            "vLLM never aborted the stream the client left: the gateway kept reading it\n"
            + gateway.log()[-2000:])
        time.sleep(0.2)
    # A hang-up is routine: one line in the gateway's log, not an error with a traceback.
    assert "client hung up mid-stream" in gateway.log()
    assert "Traceback" not in gateway.log(), gateway.log()[-2000:]
