"""`devloop gateway` as a command: registered in the CLI, and `--reload` serving new code."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import devloop


def test_the_gateway_is_a_devloop_subcommand_with_its_settings_as_flags() -> None:
    help_text = subprocess.run(
        [Path(sys.executable).parent / "devloop", "gateway", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--upstream-url",
        "--redis-url",
        "--port",
        "--cache-ttl-seconds",
        "--cache-max-entries",
        "--cache-max-bytes",
        "--cache-policy",
        "--max-body-bytes",
        "--reload",
    ):
        assert flag in help_text


def test_reload_serves_edited_code_without_restarting_by_hand(
    tmp_path: Path, start_gateway
) -> None:
    # A copy of the package, first on PYTHONPATH: editing it cannot disturb the real checkout.
    package = tmp_path / "devloop"
    shutil.copytree(
        Path(devloop.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    gateway = start_gateway("http://127.0.0.1:9", "", "--reload", env=env, cwd=tmp_path)
    assert requests.get(gateway.url + "/health", timeout=5).json()["version"] == devloop.__version__

    init = package / "__init__.py"
    delays = []
    for attempt in range(3):
        init.write_text(
            init.read_text().replace(
                f'"{devloop.__version__}"' if attempt == 0 else f'"edited-{attempt - 1}"',
                f'"edited-{attempt}"',
            )
        )
        started = time.perf_counter()
        while time.perf_counter() - started < 20:
            try:
                if (
                    requests.get(gateway.url + "/health", timeout=1).json()["version"]
                    == f"edited-{attempt}"
                ):
                    break
            except requests.RequestException:
                pass  # between the old process stopping and the new one listening
            time.sleep(0.01)
        else:
            raise AssertionError(f"edited code never answered:\n{gateway.log()}")
        delays.append(time.perf_counter() - started)
        time.sleep(0.3)
    # Functional bound only (the timing numbers come from the benchmark); generous for a busy CI box.
    assert statistics.median(delays) < 5


@pytest.mark.parametrize("taken", ["--port", "--admin-port"])
def test_a_port_in_use_is_one_line_and_exit_2_before_anything_claims_to_serve(
    taken: str,
) -> None:
    import socket

    from devloop.common.ports import free_port

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        ports = {"--port": str(free_port()), "--admin-port": str(free_port()), taken: str(busy)}
        result = subprocess.run(
            [sys.executable, "-m", "devloop", "gateway", "--host", "127.0.0.1",
             "--upstream-url", "http://127.0.0.1:9", "--redis-url", "",
             *(item for pair in ports.items() for item in pair)],
            capture_output=True, text=True, timeout=60,
            check=False,
        )
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{busy}" in lines[0] and "Address already in use" in lines[0]
    assert taken in lines[0]


def test_bench_reload_loses_no_request_while_the_code_changes_under_load() -> None:
    """The benchmark's own account, functionally: every change lands, the new code answers, and
    not one request of the steady load fails (the timing numbers are the benchmark's business)."""
    result = subprocess.run(
        [sys.executable, "-m", "devloop", "bench-reload", "--runs", "3", "--clients", "3",
         "--settle", "0.5", "--no-container"],
        capture_output=True, text=True, timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["runs"]) == 3
    assert report["requests"] > 30
    assert report["failed"] == 0, report["failures"]
