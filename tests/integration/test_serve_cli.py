"""The README's main job, `devloop serve --overlay dev --model tiny`, run for real."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devloop.ports import free_port
from devloop.serve import port_is_free

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="installed by scripts/bootstrap.sh")


def test_serve_brings_the_dev_overlay_up_and_stops_it():
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "devloop", "serve", "--overlay", "dev", "--model", "tiny",
         "--port", str(port), "--exit-when-ready", "--timeout", "600"],
        capture_output=True, text=True, timeout=700,
        env={**os.environ, "DEVLOOP_LOG_FORMAT": "text"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"http://127.0.0.1:{port}/v1 is ready: model 'tiny'" in result.stderr
    assert port_is_free("127.0.0.1", port), "the server outlived `devloop serve`"
