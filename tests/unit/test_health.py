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

import pytest
from devloop import health


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


@pytest.fixture
def unready_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotVllm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
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
