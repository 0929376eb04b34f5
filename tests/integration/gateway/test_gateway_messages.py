"""What `devloop gateway` tells its user: normal operation at info level, and a stop said in
words (what it stops, what it waits for), for Ctrl-C and for a reload hand-over."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

import devloop


def _records(log: str) -> list[dict]:
    """The gateway's JSON log records (its stderr is a file here, so it logs JSON)."""
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def _wait_for(gateway, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in gateway.log():
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{gateway.log()}"
        time.sleep(0.05)


def test_a_reloading_gateway_starts_and_stops_on_ctrl_c_without_a_warning(start_gateway) -> None:
    gateway = start_gateway("http://127.0.0.1:9", "", "--reload")
    _wait_for(gateway, "reload: watching")
    _wait_for(gateway, "gateway on ")  # the worker's signal handlers are set
    gateway.process.send_signal(signal.SIGINT)  # what Ctrl-C sends the foreground process
    assert gateway.process.wait(timeout=60) == 0
    records = _records(gateway.log())
    watching = next(r for r in records if r["message"].startswith("reload: watching"))
    assert watching["level"] == "info"
    assert [r["message"] for r in records if r["level"] not in ("info", "debug")] == []
    messages = [r["message"] for r in records]
    assert "interrupted (Ctrl-C): stopping the gateway" in messages
    assert any(m.startswith("stopping: no new connections; the requests in flight get up to")
               for m in messages)
    assert not any("handing over" in m for m in messages)


def test_a_reload_says_the_new_code_serves_and_the_old_worker_finishes(
    tmp_path: Path, start_gateway
) -> None:
    import os
    import shutil

    package = tmp_path / "devloop"
    shutil.copytree(Path(devloop.__file__).parent, package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    gateway = start_gateway("http://127.0.0.1:9", "", "--reload", env=env, cwd=tmp_path)
    _wait_for(gateway, "reload: watching")
    init = package / "__init__.py"
    init.write_text(init.read_text() + "\n# edited\n")
    _wait_for(gateway, "reload: generation 2 serves")
    _wait_for(gateway, "reload: the new code's worker is serving; this one stops taking "
                       "connections and finishes its requests in flight")
    levels = {r["message"].split(" after ")[0]: r["level"] for r in _records(gateway.log())}
    assert levels["reload: generation 2 serves"] == "info"


@pytest.mark.parametrize("reload", [[], ["--reload"]])
def test_sigterm_says_what_the_drain_does(start_gateway, reload) -> None:
    gateway = start_gateway("http://127.0.0.1:9", "", "--drain-seconds", "0.2", *reload)
    _wait_for(gateway, "reload: watching" if reload else "gateway on ")  # its handlers are set
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(timeout=60) == 0
    log = gateway.log()
    assert "SIGTERM: /ready now answers 503 so Kubernetes takes this pod out of the Service" in log
    assert "stopped: every request finished or timed out; exiting" in log
