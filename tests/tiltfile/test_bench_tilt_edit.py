"""The save-to-answer benchmark (bench_tilt_edit.py), run against a local `devloop gateway
--reload` on a copy of the package, where it measures the gateway's own part of a Tilt edit: the
edit must be seen, timed and undone, and the copy left as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import devloop
from devloop.common.ports import free_port

from . import bench_tilt_edit


@pytest.fixture
def reloading_gateway(tmp_path):
    shutil.copytree(Path(devloop.__file__).parent, tmp_path / "devloop",
                    ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    gateway = subprocess.Popen(
        [sys.executable, "-m", "devloop", "gateway", "--reload", "--host", "127.0.0.1",
         "--port", str(port), "--admin-port", "0", "--upstream-url", "http://127.0.0.1:9",
         "--redis-url", ""], cwd=tmp_path, env=env,
        stdout=(tmp_path / "gateway.log").open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.1)
    try:
        yield url, tmp_path / "devloop"
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)


def test_the_benchmark_times_each_edit_and_restores_the_file(reloading_gateway):
    url, package = reloading_gateway
    before = (package / "gateway" / "routes.py").read_text()
    result = bench_tilt_edit.measure(url, runs=2, package=package, timeout=30, settle=0.2)
    assert len(result["save_to_answer_s"]) == 2 and all(s > 0 for s in result["save_to_answer_s"])
    assert result["failed_requests"] == [0, 0]
    assert (package / "gateway" / "routes.py").read_text() == before
    assert requests.get(url + "/health", timeout=5).json()["version"] == devloop.__version__


def test_a_routes_file_without_the_version_line_is_a_clear_error(tmp_path):
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "routes.py").write_text("# nothing to edit\n")
    with pytest.raises(bench_tilt_edit.BenchError, match="VERSION_LINE"):
        bench_tilt_edit.measure("http://127.0.0.1:9", 1, tmp_path, timeout=1, settle=0)
