"""Fixtures every test level shares: one real vLLM CPU server per test run, and `busy_port`.

The server is what the dev overlay's pod runs (`devloop entrypoint` with the overlay's rendered
ConfigMap), with the model replaced by the offline `tiny` one, eager mode and a 1 GiB KV cache.
Under pytest-xdist every worker asks for it: the first to take a file lock starts it and
records its URL in a state file; the others wait on the lock and read the file. The controller
process (which outlives the workers) stops it when the run ends.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from devloop.common.ports import free_port as _free_port

STATE_DIR_ENV = "DEVLOOP_TEST_STATE_DIR"
_OWNS_STATE_DIR = pytest.StashKey[bool]()
VLLM_READY_TIMEOUT = 420.0  # a cold start is ~30 s; a machine busy with other tests needs more


@dataclass(frozen=True)
class VllmServer:
    """A shared engine server (vLLM or llama-server): where it listens and what it serves."""

    base_url: str
    served_model: str
    pid: int
    log_path: str


EngineServer = VllmServer  # the same record for the llama.cpp server

def pytest_configure(config: pytest.Config) -> None:
    # Only the controller (or a run without xdist) creates the directory; workers inherit the
    # variable because xdist starts them after this hook ran.
    owner = not hasattr(config, "workerinput") and STATE_DIR_ENV not in os.environ
    config.stash[_OWNS_STATE_DIR] = owner
    if owner:
        os.environ[STATE_DIR_ENV] = tempfile.mkdtemp(prefix="devloop-tests-")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not config.stash.get(_OWNS_STATE_DIR, False):
        return
    state_dir = Path(os.environ.pop(STATE_DIR_ENV))
    for server in ("vllm", "llamacpp"):
        state_file = state_dir / f"{server}.json"
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            if "pid" in state:
                _stop_process_group(state["pid"])
    # The container tests' containers, networks, volumes and image tags, if the run made any.
    from tests.container import lifecycle

    lifecycle.cleanup(state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)


def _stop_process_group(pid: int) -> None:
    import signal
    import time

    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                # Without xdist the server is this process's child: reap it, or its zombie
                # keeps the group "alive" for the whole grace period.
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)



@contextmanager
def engine_start_slot() -> Iterator[None]:
    """Hold the run's one engine-start slot: an engine's start (import torch, load, warm-up) is
    the heaviest thing a test does, and two at once on a 2-core machine, with a third serving
    load, made a restart wait past 900 s in CI. Tests that start their own vLLM hold it from
    the start until the server answers (no longer: the server keeps running unlocked), so one
    xdist worker's start never competes with another's. Nothing that waits for another lock
    runs inside it."""
    state_dir = os.environ.get(STATE_DIR_ENV)
    if not state_dir:  # outside pytest's session (a test module run by hand)
        yield
        return
    with open(Path(state_dir) / "engine-start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _start_vllm(state_dir: Path) -> dict:
    """Start the server and wait until the health check passes; the state to share."""
    from devloop.engine import health, serve

    if importlib.util.find_spec("vllm") is None:
        return {"error": "vLLM is not installed in this environment: run "
                         "`bash scripts/bootstrap.sh` (or deselect with -m 'not vllm')"}
    port = _free_port()
    overlay_args = serve.overlay_engine_settings("dev").get("EXTRA_ARGS", "")
    settings = serve.local_environment(
        "dev",
        model="tiny",
        port=port,
        # --enable-log-requests: vLLM logs "Aborted request(s) <id>", which the client-disconnect
        # test looks for (vLLM's metrics do not count aborts by the client). The overlay's own
        # arguments (tool calling) stay.
        overrides={"ENFORCE_EAGER": "true", "VLLM_CPU_KVCACHE_SPACE": "1",
                   "EXTRA_ARGS": f"{overlay_args} --enable-log-requests".strip()},
    )
    log_path = state_dir / "vllm.log"
    url = f"http://127.0.0.1:{port}"
    with engine_start_slot():
        process = serve.start_server(settings, log_path)

        def exited() -> str | None:
            return None if process.poll() is None else "the server process exited"

        report = health.wait_until_ready(url, VLLM_READY_TIMEOUT, interval=0.5, give_up=exited)
    if not report.ready:
        why = serve.explain_failure(process, log_path, report)
        serve.stop_server(process)
        return {"error": f"the vLLM server did not become ready: {why}"}
    server = VllmServer(url, report.model or "tiny", process.pid, str(log_path))
    return asdict(server)


@pytest.fixture(scope="session")
def vllm_server() -> VllmServer:
    """The run's one vLLM server (started on first use, stopped when the run ends)."""
    state_dir = Path(os.environ[STATE_DIR_ENV])
    state_file = state_dir / "vllm.json"
    with open(state_dir / "vllm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if state_file.is_file():
            state = json.loads(state_file.read_text())
        else:
            state = _start_vllm(state_dir)
            # A failed start is recorded too, so the other workers fail at once instead of
            # each trying again for minutes.
            state_file.write_text(json.dumps(state))
    if "error" in state:
        pytest.fail(state["error"], pytrace=False)
    return VllmServer(**state)


@pytest.fixture(scope="session")
def vllm_base_url(vllm_server: VllmServer) -> str:
    """Base URL of the shared real vLLM server, like http://127.0.0.1:PORT (no /v1)."""
    return vllm_server.base_url


@pytest.fixture(scope="session")
def vllm_served_model(vllm_server: VllmServer) -> str:
    """The model name clients put in requests to the shared server."""
    return vllm_server.served_model


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something really listens on (127.0.0.1), as a server left running on 8000 does:
    a start that checks the port first must still name the real mistake."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


# The run's llama-server: llama.cpp's own server on the offline tiny GGUF, with the gguf
# overlay's settings (`devloop serve --overlay gguf --model tiny` would run the same), shared by
# the xdist workers like the vLLM server. It starts in about 2 s. Without a llama-server on this
# machine the tests skip with the reason, except where $DEVLOOP_REQUIRE_LLAMACPP is set (.ci/run
# builds it), where they fail.
LLAMACPP_REQUIRE_ENV = "DEVLOOP_REQUIRE_LLAMACPP"
LLAMACPP_READY_TIMEOUT = 120.0


def llamacpp_unavailable(why: str) -> None:
    """Skip (or, in CI, fail) a test that needs llama-server."""
    if os.environ.get(LLAMACPP_REQUIRE_ENV):
        pytest.fail(f"{why} (${LLAMACPP_REQUIRE_ENV} is set: CI builds llama-server)", pytrace=False)
    pytest.skip(why)


def start_llamacpp(log_path: Path, overrides: dict[str, str] | None = None,
                   timeout: float = LLAMACPP_READY_TIMEOUT) -> dict:
    """Start llama-server on the tiny GGUF with the gguf overlay's settings and wait until it
    is ready; the state to share ({"error": ...} when it did not start)."""
    from devloop.common.errors import DevloopError
    from devloop.engine import health, serve
    from devloop.engine.llamacpp import local

    port = _free_port()
    try:
        settings = local.local_environment(
            local.overlay_settings("gguf"), serve.default_cache_dir(), model="tiny", port=port,
            overrides={"LLAMA_ARG_CTX_SIZE": "1024", **(overrides or {})},
        )
        process = local.start_server(settings, log_path, serve.stop_with_parent)
    except DevloopError as error:
        return {"error": str(error)}
    url = f"http://127.0.0.1:{port}"

    def exited() -> str | None:
        return None if process.poll() is None else "llama-server exited"

    report = health.wait_until_ready(url, timeout, interval=0.2, give_up=exited)
    if not report.ready:
        why = serve.explain_failure(process, log_path, report)
        serve.stop_server(process)
        return {"error": f"llama-server did not become ready: {why}"}
    return asdict(EngineServer(url, report.model or "tiny", process.pid, str(log_path)))


@pytest.fixture(scope="session")
def llamacpp_server() -> EngineServer:
    """The run's one llama-server (started on first use, stopped when the run ends)."""
    from devloop.engine.llamacpp import binary

    missing = binary.available()
    if missing:
        llamacpp_unavailable(missing)
    state_dir = Path(os.environ[STATE_DIR_ENV])
    state_file = state_dir / "llamacpp.json"
    with open(state_dir / "llamacpp.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if state_file.is_file():
            state = json.loads(state_file.read_text())
        else:
            state = start_llamacpp(state_dir / "llamacpp.log")
            state_file.write_text(json.dumps(state))
    if "error" in state:
        pytest.fail(state["error"], pytrace=False)
    return EngineServer(**state)
