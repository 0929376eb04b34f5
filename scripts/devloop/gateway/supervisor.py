"""`devloop gateway --reload`: new code answering within a fraction of a second of a live update,
and not one request refused meanwhile.

The supervisor binds the listening sockets once and keeps them for its whole life. Each worker
generation is forked from it and inherits those sockets. When a .py file of the package changes
(Tilt's live update syncs it into the container), the supervisor forks a new worker, which
imports the package afresh from disk; once that worker accepts connections it tells the
supervisor, which only then tells the old worker to stop accepting and finish its in-flight
requests (SIGUSR1). The port never closes, so nothing is refused; at worst a connection waits in
the accept queue for a few milliseconds. A change that breaks the import leaves the old worker
serving, and the next change tries again.

Why fork from a supervisor that has already imported aiohttp, redis and prometheus_client: those
imports took about 0.3, 0.25 and 0.1 s on the development VM under load (`python -X importtime`),
more than the whole 0.3 s budget; a forked worker imports only the project's gateway modules
(`devloop bench-reload` measures the result). Why not watchfiles.run_process (what `--reload`
used before): it stops the old process before starting the new one, closing the port for the
whole restart. Why not gunicorn's reload: its worker exits on a change and the arbiter starts
the next one only then, and its SIGTERM closes the listeners at once, not after a drain window.

Signals: SIGTERM and SIGINT are forwarded to the serving worker (which drains as in
devloop.gateway.server) and the supervisor exits with that worker's code once every worker has
exited. As a container's PID 1 it also reaps any orphaned child.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devloop.common.errors import DEBUG_ENV
from devloop.gateway.config import GatewayConfig
from devloop.gateway.sockets import (
    LISTEN_FDS_ENV,
    READY_FD_ENV,
    Listeners,
    bind_all,
    encode_fds,
)

log = logging.getLogger("devloop.gateway.reload")

# Third-party modules a worker needs, imported once here so that each fork has them already.
# Never the project's own modules: those must be imported fresh by each generation.
PRELOAD = ("aiohttp.web", "multidict", "yarl", "redis.asyncio", "prometheus_client", "uvloop")
READY_TIMEOUT_SECONDS = 60.0  # a worker that has not started by then is given up on
# watchfiles: a change is yielded once no other change arrived for STEP_MS (a synced file is
# written at once); the watcher wakes every TICK_MS to reap workers that exited.
STEP_MS = 10
TICK_MS = 200


@dataclass
class Worker:
    pid: int
    ready_fd: int
    generation: int


def supervise(argv: list[str], config: GatewayConfig) -> int:
    listeners = bind_all(config.host, config.port, config.admin_host, config.admin_port)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # optional (uvloop); the worker does without it too
    import devloop

    package_dir = Path(devloop.__file__).resolve().parent
    return Supervisor(argv, listeners, package_dir).run()


class Supervisor:
    def __init__(self, argv: list[str], listeners: Listeners, package_dir: Path) -> None:
        self.argv = argv
        self.listeners = listeners
        self.package_dir = package_dir
        self.generation = 0
        self.current: Worker | None = None
        self.starting: Worker | None = None
        self.exit_codes: dict[int, int] = {}
        self.stopping = threading.Event()  # watchfiles polls it (it has is_set())

    # -- signals ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping.set()
        for worker in (self.current, self.starting):
            if worker is not None:
                try:
                    os.kill(worker.pid, signum)
                except ProcessLookupError:
                    pass

    # -- workers ---------------------------------------------------------------------------

    def spawn(self) -> Worker:
        self.generation += 1
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            _run_worker(self.argv, self.listeners, write_fd)
        os.close(write_fd)
        return Worker(pid, read_fd, self.generation)

    def wait_ready(self, worker: Worker) -> bool:
        """True once the worker accepts connections; False if it exited first (its own error
        message is in the log already) or took longer than READY_TIMEOUT_SECONDS."""
        self.starting = worker
        try:
            deadline = time.monotonic() + READY_TIMEOUT_SECONDS
            while time.monotonic() < deadline:
                readable, _, _ = select.select([worker.ready_fd], [], [], 0.1)
                if readable:
                    return os.read(worker.ready_fd, 1) == b"1"  # b"": it exited
            os.kill(worker.pid, signal.SIGKILL)
            return False
        finally:
            os.close(worker.ready_fd)
            self.starting = None

    def reap(self) -> None:
        """Collect every child that exited (workers and, as PID 1, orphans), without waiting."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exit_codes[pid] = os.waitstatus_to_exitcode(status)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        changes = self._changes()
        next(changes)  # watching starts now, before the first worker: no later edit is missed
        first = self.spawn()
        if not self.wait_ready(first):
            self._wait_for_children()
            return self.exit_codes.get(first.pid, 1) or 1
        self.current = first
        # Normal operation: info, not a warning (a warning is something to act on).
        log.info("reload: watching %s for changed .py files", self.package_dir)
        for changed in changes:
            if self.stopping.is_set():
                break
            self._step(changed)
        # The worker keeps its own copies of the sockets for its drain window; once it closes
        # them, the port must refuse connections, not queue them for a supervisor that will
        # never hand them to anyone.
        self.listeners.close()
        return self._wait_for_children()

    def _changes(self) -> Iterator[set[tuple[Any, str]]]:
        """Sets of changed .py files; an empty set every TICK_MS (time to reap workers)."""
        import watchfiles

        return watchfiles.watch(
            self.package_dir,
            watch_filter=watchfiles.PythonFilter(),
            step=STEP_MS,
            rust_timeout=TICK_MS,
            yield_on_timeout=True,
            stop_event=self.stopping,
            raise_interrupt=False,
        )

    def _step(self, changes: set[tuple[Any, str]]) -> None:
        self.reap()
        if self.current is not None and self.current.pid in self.exit_codes:
            # Crashed, or killed (OOM): start another once; if that fails too, wait for the
            # next change rather than retrying in a loop.
            log.error(
                "the gateway worker exited (code %s); starting another",
                self.exit_codes[self.current.pid],
            )
            self.current = None
            self._replace([])
        elif changes:
            self._replace([path for _, path in changes])

    def _replace(self, changed: list[str]) -> None:
        _drop_stale_bytecode(changed)
        started = time.perf_counter()
        worker = self.spawn()
        if not self.wait_ready(worker):
            log.error(
                "reload: the changed code did not start (see the error above); the previous "
                "code keeps serving until the next change"
            )
            return
        old, self.current = self.current, worker
        if old is not None and old.pid not in self.exit_codes:
            os.kill(old.pid, signal.SIGUSR1)
        log.info(
            "reload: generation %d serves after %d change(s), started in %.0f ms",
            worker.generation, len(changed), (time.perf_counter() - started) * 1000,
            extra={"changes": len(changed)},
        )

    def _wait_for_children(self) -> int:
        """Block until every child has exited; the serving worker's exit code."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0)  # signals are handled and the wait resumed
            except ChildProcessError:
                break
            self.exit_codes[pid] = os.waitstatus_to_exitcode(status)
        if self.current is None:
            return 1
        return self.exit_codes.get(self.current.pid, 0)


def _drop_stale_bytecode(paths: list[str]) -> None:
    """Remove the cached bytecode of changed files: Python checks a .pyc against the source's
    mtime in whole seconds and its size, so an edit of the same size within the same second
    (or a sync that keeps the file's mtime) could otherwise run the old code."""
    for path in paths:
        if path.endswith(".py"):
            try:
                os.unlink(importlib.util.cache_from_source(path))
            except (OSError, ValueError, NotImplementedError):
                pass


def _run_worker(argv: list[str], listeners: Listeners, ready_fd: int) -> None:
    """In the forked child: forget the project's modules, import them from disk again, and run
    `devloop gateway` on the inherited sockets. Exits the child; never returns."""
    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        os.environ[LISTEN_FDS_ENV] = encode_fds(listeners.fds())
        os.environ[READY_FD_ENV] = str(ready_fd)
        for name in [m for m in sys.modules if m == "devloop" or m.startswith("devloop.")]:
            del sys.modules[name]
        importlib.invalidate_caches()
        os.environ[DEBUG_ENV] = "1"  # a broken edit's traceback goes to the log below
        cli = importlib.import_module("devloop.cli")
        code = cli.main(argv, modules=("devloop.gateway",))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # a broken edit: report it, keep the old worker
        log.exception("reload: the new code failed to start")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
