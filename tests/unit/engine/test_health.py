"""`devloop health` against servers that are absent or not (yet) a working vLLM.

The ready case runs against the real vLLM server in tests/e2e/test_health_and_models.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devloop.engine import health


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _NotVllm(BaseHTTPRequestHandler):
    """A real HTTP server that is up but is not a ready vLLM: /health fails with 503, as a
    proxy in front of a loading engine answers."""

    def do_GET(self):
        self.send_response(503)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"loading")

    def log_message(self, *args):
        pass


class _DeadEngine(BaseHTTPRequestHandler):
    """vLLM after its engine process died: /health and /v1/models still answer, a completion
    gets the 500 the real server sends (body copied from a real vLLM 0.32 log)."""

    def do_GET(self):
        body = b'{"object": "list", "data": [{"id": "tiny"}]}' if self.path == "/v1/models" else b""
        self._answer(200, body)

    def do_POST(self):
        self._answer(500, b'{"error":{"message":"EngineCore encountered an issue. See stack trace '
                          b'(above) for the root cause.","type":"InternalServerError","param":null,'
                          b'"code":500}}')

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(handler: type[BaseHTTPRequestHandler]):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def dead_engine_url():
    server = _serve(_DeadEngine)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def unready_url():
    server = _serve(_NotVllm)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def devloop_health(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devloop", "health", *args],
                          check=False, capture_output=True, text=True, timeout=60)


def test_nothing_listening_is_unreachable_exit_3():
    result = devloop_health("--url", f"http://127.0.0.1:{_closed_port()}", "--json")
    assert result.returncode == health.EXIT_UNREACHABLE
    report = json.loads(result.stdout)
    assert report["status"] == "unreachable" and report["ready"] is False
    assert "connection refused" in report["checks"][0]["detail"]


def test_a_server_that_answers_but_is_not_healthy_is_not_ready_exit_1(unready_url):
    result = devloop_health("--url", unready_url)
    assert result.returncode == health.EXIT_NOT_READY
    assert "FAIL  /health" in result.stdout and "HTTP 503" in result.stdout


def test_wait_shows_elapsed_time_and_what_it_waits_for_then_times_out(unready_url):
    started = time.monotonic()
    result = devloop_health("--url", unready_url, "--wait", "--timeout", "2", "--interval", "0.5")
    assert result.returncode == health.EXIT_NOT_READY
    assert time.monotonic() - started < 30
    assert "s] waiting for /health: HTTP 503" in result.stderr
    assert "not ready after 2 s" in result.stderr


def test_wait_gives_up_at_once_when_the_engine_died_and_says_so(dead_engine_url):
    started = time.monotonic()
    result = devloop_health("--url", dead_engine_url, "--wait", "--timeout", "120", "--json")
    assert result.returncode == health.EXIT_NOT_READY
    assert time.monotonic() - started < 60, "waited for a dead engine to come back"
    report = json.loads(result.stdout)
    assert report["engine_dead"] is True
    assert "the vLLM engine died (EngineDeadError)" in report["checks"][-1]["detail"]
    assert "kubectl logs" in report["checks"][-1]["detail"]


def test_wait_on_a_closed_port_ends_unreachable():
    result = devloop_health("--url", f"127.0.0.1:{_closed_port()}", "--wait", "--timeout", "1")
    assert result.returncode == health.EXIT_UNREACHABLE
    assert "waiting for /health: cannot connect" in result.stderr or "cannot connect" in result.stderr


@pytest.mark.parametrize("args", [["--url", "ftp://host"], ["--timeout", "0"], ["--bogus"]])
def test_bad_usage_is_exit_2(args):
    assert devloop_health(*args).returncode == health.EXIT_USAGE


def test_help_documents_every_exit_code():
    text = devloop_health("--help").stdout
    for code, meaning in ((0, "ready"), (1, "not ready"), (2, "bad usage"), (3, "unreachable")):
        assert f"{code}  {meaning}" in text


def test_a_url_without_scheme_means_http():
    assert health.normalize_url("localhost:8000/") == "http://localhost:8000"


def test_wait_says_a_closed_port_may_be_a_server_still_loading():
    result = devloop_health("--url", f"127.0.0.1:{_closed_port()}", "--wait", "--timeout", "2",
                            "--interval", "0.5")
    assert "s] nothing answers at http://127.0.0.1:" in result.stderr
    assert "a server still loading its model looks like this" in result.stderr


def test_wait_with_the_servers_log_shows_its_start_up_phase(tmp_path):
    """A real vLLM 0.32 log cut where the worker starts loading the weights."""
    real = (Path(__file__).parent / "data" / "vllm-0.32-start-eager.log").read_text().splitlines()
    cut = next(i for i, line in enumerate(real) if "Starting to load model" in line)
    log = tmp_path / "engine.log"
    log.write_text("\n".join(real[: cut + 1]) + "\n")
    result = devloop_health("--url", f"127.0.0.1:{_closed_port()}", "--wait", "--timeout", "2",
                            "--interval", "0.5", "--log", str(log))
    assert result.returncode == health.EXIT_UNREACHABLE
    assert "starting: downloading or reading the model weights" in result.stderr


def test_wait_with_a_log_that_is_not_there_yet_says_so(tmp_path):
    result = devloop_health("--url", f"127.0.0.1:{_closed_port()}", "--wait", "--timeout", "1",
                            "--log", str(tmp_path / "later.log"))
    assert f"starting: no log at {tmp_path / 'later.log'} yet" in result.stderr


def test_log_without_wait_is_bad_usage(tmp_path):
    result = devloop_health("--log", str(tmp_path / "x.log"))
    assert result.returncode == health.EXIT_USAGE
    assert "pass --wait" in result.stderr
