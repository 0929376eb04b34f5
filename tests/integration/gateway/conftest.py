"""Two more real vLLM servers for the routing tests: replicas of one model.

`vllm_replicas` starts two tiny vLLM servers serving `tiny-replica` (the run's shared server,
`vllm_base_url`, serves `tiny`: together they are two engines with different
--served-model-name). They are started in parallel, once per test session (per xdist worker
that runs a routing test), and a test may stop and restart one (`restart` keeps its port, as a
pod restarting behind a Service keeps its name).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import engine_start_slot

REPLICA_MODEL = "tiny-replica"
READY_TIMEOUT = 420.0  # as tests/conftest.py: ~30 s alone, minutes on a busy machine
# A restart under load shares the cores with the other replica, the gateway, the clients and the
# other xdist worker: CI saw `import torch` alone take 4 minutes there, and 420 s ran out.
RESTART_READY_TIMEOUT = 900.0


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; macOS uses 49152-65535, also above it


def port_outside_the_ephemeral_range() -> int:
    """A free port below the range the kernel picks outgoing connections' source ports from.
    A replica keeps its port across a restart, and while it is down the gateway and the test
    keep connecting to it: with an ephemeral port, one of those connections can take it as its
    own source port (or connect to itself), and the restarted server cannot bind it."""
    import random
    import socket

    low = _ephemeral_range()[0]
    for _ in range(100):
        candidate = random.randrange(20000, min(low, 32768))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
        return candidate
    raise RuntimeError("no free port found between 20000 and the ephemeral range")


@dataclass
class EngineReplica:
    """One vLLM server process: `devloop entrypoint` with the dev overlay's settings, as a pod."""

    log_dir: Path
    name: str
    cpu: int  # the one core its OpenMP threads are bound to, as a pod has its own CPUs
    port: int = field(default_factory=port_outside_the_ephemeral_range)
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        """This start's log: a restart writes its own, so that a failure is explained from the
        restarted process's lines, not from the shutdown the previous one logged."""
        suffix = "" if self.starts <= 1 else f".restart-{self.starts - 1}"
        return self.log_dir / f"{self.name}{suffix}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from devloop.engine import serve

        self.starts += 1
        settings = serve.local_environment(
            "dev", model="tiny", port=self.port,
            # A short drain: SIGTERM lets in-flight requests finish for up to 30 s.
            # Each replica on a core of its own: both bound to every core, the busy one's
            # spinning OpenMP threads starve a restarting one's start-up for minutes (seen here).
            overrides={"ENFORCE_EAGER": "true", "VLLM_CPU_KVCACHE_SPACE": "1",
                       "SERVED_MODEL_NAME": REPLICA_MODEL, "SHUTDOWN_TIMEOUT": "30",
                       "CPU_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": str(self.cpu),
                       "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
        )
        self.process = serve.start_server(settings, self.log_path)
        # The whole replica on its core, not only its OpenMP threads: vLLM put a restarted
        # replica's engine core on the other replica's core, where that replica's busy worker
        # left it 0.3 s of CPU in 9 minutes (a full run here). Set before the server spawns its
        # engine processes (seconds after this), which inherit it.
        try:
            os.sched_setaffinity(self.process.pid, {self.cpu})
        except (AttributeError, OSError):  # no sched_setaffinity (macOS), or it already exited
            pass

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        from devloop.engine import health, serve

        process = self.process
        assert process is not None
        report = health.wait_until_ready(
            self.url, timeout, interval=0.5,
            give_up=lambda: None if process.poll() is None else "the server process exited",
        )
        if not report.ready:
            why = serve.explain_failure(process, self.log_path, report)
            pytest.fail(f"replica on {self.url} did not become ready: {why}", pytrace=False)

    def stop(self) -> None:
        from devloop.engine import serve

        if self.process is not None:
            serve.stop_server(self.process)

    def metric(self, name: str) -> float:
        """A counter of its /metrics, summed over labels (vllm:prefix_cache_hits_total...)."""
        import requests
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(self.url + "/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )


@pytest.fixture(scope="session")
def vllm_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EngineReplica]]:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed in this environment: run `bash scripts/bootstrap.sh`")
    logs = tmp_path_factory.mktemp("replicas")
    cpus = sorted(os.sched_getaffinity(0))
    replicas = [EngineReplica(logs, f"replica-{index}", cpus[index % len(cpus)])
                for index in range(2)]
    try:
        with engine_start_slot():
            for replica in replicas:
                replica.start()
            for replica in replicas:
                replica.wait_ready()
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()
