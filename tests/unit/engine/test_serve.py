"""`devloop serve`'s local environment: the overlay's ConfigMap, with only what a laptop needs
changed. (Serving itself is what the session's vLLM fixture does, through the same functions.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from devloop.common.ports import free_port as _free_port
from devloop.engine import serve


def test_settings_are_the_dev_overlays_rendered_configmap():
    settings = serve.overlay_engine_settings("dev")
    assert settings["ENFORCE_EAGER"] == "true"  # the overlay's literal over the base's false
    assert settings["MODEL_NAME"] == "Qwen/Qwen3-0.6B"
    assert settings["HF_HOME"] == "/models/huggingface"


def test_pod_volume_paths_move_under_the_local_cache(tmp_path):
    settings = serve.local_environment("dev", cache_dir=tmp_path)
    assert settings["HF_HOME"] == str(tmp_path / "huggingface")
    assert settings["VLLM_CACHE_ROOT"] == str(tmp_path / "vllm-cache")
    assert settings["HOST"] == "127.0.0.1"


def test_a_model_override_clears_the_overlays_served_name(tmp_path):
    settings = serve.local_environment("optimized", model="tiny", cache_dir=tmp_path)
    assert settings["MODEL_NAME"] == "tiny"
    assert settings["SERVED_MODEL_NAME"] == ""


def test_set_overrides_win_over_the_overlay(tmp_path):
    settings = serve.local_environment(
        "dev", port=9001, overrides={"MAX_NUM_SEQS": "2", "PORT": "9002"}, cache_dir=tmp_path
    )
    assert settings["MAX_NUM_SEQS"] == "2"
    assert settings["PORT"] == "9002"


def test_the_cache_directory_follows_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(serve.CACHE_DIR_ENV, str(tmp_path))
    assert serve.default_cache_dir() == tmp_path


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devloop", "serve", *args],
                          check=False, capture_output=True, text=True, timeout=60)


def test_a_busy_port_is_refused_before_anything_starts(busy_port):
    result = _serve("--port", str(busy_port))
    assert result.returncode == 2
    assert "is in use" in result.stderr and "--port" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--set", "NOEQUALS"], "expected KEY=VALUE"),
    (["--set", "MAX_NUM_SEQ=2"], "unknown engine setting MAX_NUM_SEQ (did you mean MAX_NUM_SEQS?)"),
    (["--set", "VLLM_CPU_KV_CACHE_SPACE=2"],
     "VLLM_CPU_KV_CACHE_SPACE (did you mean VLLM_CPU_KVCACHE_SPACE?)"),
    (["--set", "COLOUR=blue"], "unknown engine setting COLOUR; the settings are MODEL_NAME, "),
    (["--host", "192.0.2.1"], "cannot listen on 192.0.2.1:8000"),
    (["--overlay", "nope"], "unknown overlay 'nope'"),
    (["--port", "0"], "give a port from 1 to 65535"),
    (["--set", "PORT=9000"], "--set PORT: pass --port instead"),
])
def test_bad_arguments_are_usage_errors(args, message):
    if "--port" not in args:
        args = [*args, "--port", "8000" if "--host" in args else str(_free_port())]
    result = _serve(*args)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--overlay", "nosuch"], "unknown overlay 'nosuch'"),
    (["--set", "MAX_NUM_SEQ=4"], "unknown engine setting MAX_NUM_SEQ (did you mean MAX_NUM_SEQS?)"),
    (["--set", "MAX_NUM_SEQS=abc"], "MAX_NUM_SEQS"),
    (["--set", "CPU_THREADS=999"], "CPU_THREADS=999 is more than the CPUs"),
    (["--set", "DTYPE=float64"], "DTYPE='float64' is not one of"),
])
def test_the_real_mistake_is_named_while_the_port_is_busy(busy_port, tmp_path, args, message):
    """Arguments and settings are checked before the port: a busy port must not hide them."""
    result = _serve("--port", str(busy_port), "--cache-dir", str(tmp_path), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "in use" not in result.stderr


def test_an_invalid_setting_fails_at_once_before_serving_is_announced(tmp_path):
    """`--set MAX_NUM_SEQS=abc` is the entrypoint's own check, run by serve before it starts
    anything: exit 2, no "serving ..." line, no server log."""
    started = time.monotonic()
    result = _serve("--model", "tiny", "--port", str(_free_port()), "--cache-dir", str(tmp_path),
                    "--set", "MAX_NUM_SEQS=abc")
    assert result.returncode == 2
    assert "MAX_NUM_SEQS" in result.stderr and "invalid engine settings" in result.stderr
    assert "serving overlay" not in result.stderr
    assert not (tmp_path / "logs").exists()
    assert time.monotonic() - started < 30


def test_valid_settings_on_a_busy_port_name_the_port(busy_port, tmp_path):
    result = _serve("--port", str(busy_port), "--cache-dir", str(tmp_path), "--model", "tiny")
    assert result.returncode == 2
    assert f"port {busy_port} on 127.0.0.1 is in use" in result.stderr
    assert "serving overlay" not in result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux-only")
def test_the_server_process_dies_with_a_killed_serve(tmp_path):
    """`devloop serve` SIGKILLed (no chance to clean up) must not leave its server running."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "from devloop.engine.serve import stop_with_parent\n"
        "child = subprocess.Popen(['sleep', '60'], start_new_session=True, preexec_fn=stop_with_parent)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )])
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while _is_running(child_pid):
        assert time.monotonic() < deadline, f"child {child_pid} outlived its killed parent"
        time.sleep(0.05)


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent (now init) has yet to reap it


# A server's leader that exits at SIGTERM at once, and a child of it (as vLLM's engine core is)
# that takes `linger` seconds to exit after its SIGTERM.
_LEADER_WITH_A_SLOW_CHILD = (
    "import signal, subprocess, sys, time\n"
    "child = ('import signal, sys, time\\n'\n"
    "         'signal.signal(signal.SIGTERM, lambda *_: (time.sleep(float(sys.argv[1])), sys.exit(0)))\\n'\n"
    "         'print(\"ready\", flush=True)\\n'\n"
    "         'time.sleep(60)')\n"
    "subprocess.Popen([sys.executable, '-c', child, sys.argv[1]])\n"
    "time.sleep(60)\n"
)


def _leader_with_a_slow_child(linger: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", _LEADER_WITH_A_SLOW_CHILD, str(linger)],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout.readline().strip() == "ready"  # the child has its handler
    return process


def test_stop_returns_once_the_servers_other_processes_are_gone_too():
    process = _leader_with_a_slow_child(linger=1.5)
    started = time.monotonic()
    serve.stop_server(process, grace=10)
    assert time.monotonic() - started >= 1.4  # it waited for the child, not just the leader
    assert not serve._group_alive(process.pid)


def test_a_child_that_outlives_the_grace_is_killed():
    process = _leader_with_a_slow_child(linger=30)
    started = time.monotonic()
    serve.stop_server(process, grace=1)
    assert time.monotonic() - started < 10
    assert not serve._group_alive(process.pid)


def test_processes_left_by_a_leader_that_died_first_are_stopped_too():
    process = _leader_with_a_slow_child(linger=0.5)
    process.kill()  # the API server gone (a crash), its engine processes still running
    process.wait()
    started = time.monotonic()
    serve.stop_server(process, grace=20)
    assert time.monotonic() - started < 5  # told to stop at once, not left to the grace
    assert not serve._group_alive(process.pid)
