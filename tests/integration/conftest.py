"""Real servers for the integration tests: redis-server, the gateway, a small HTTP upstream.

- `redis_server`: one redis-server per test session (per xdist worker: it is cheap, ~10 ms, and
  tests that flush it must not see another worker's keys), on a free port. `redis_url` hands each
  test an empty database of it.
- `own_redis`: a redis-server of the test's own, for tests that stop and restart it.
- `start_gateway(...)`: `devloop gateway` as a real subprocess on a free port, stopped after the test.
- `toy_upstream`: a real aiohttp server in a thread, for failure modes the real engine cannot be
  asked to produce (5xx, HTML error pages, hangs, slow answers) and for counting arrivals. Tests of
  caching correctness, streaming and single flight against the engine use `vllm_base_url`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from devloop.common.errors import DevloopError
from devloop.common.ports import free_port, wait_until_listening

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"



@dataclass
class RedisServer:
    """A redis-server process: no persistence, a fixed port so a restart comes back at the same URL."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _attempt in range(5):
            self.process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                    "--protected-mode",
                    "no",
                    "--maxmemory",
                    "64mb",
                    "--maxmemory-policy",
                    "allkeys-lru",
                    "--loglevel",
                    "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until_listening(self.port, self.process, timeout=10)
                return
            except DevloopError:
                # Someone took the port between free_port() and bind: pick another.
                self.stop()
                self.port = free_port()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: Redis accepts connections but answers nothing (a stuck server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def client(self):  # a plain synchronous client for assertions
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not os.path.exists(REDIS_SERVER):
        pytest.skip(
            "redis-server is not installed (scripts/bootstrap.sh installs it; macOS: brew install redis)"
        )
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    client = redis_server.client()
    client.flushdb()
    client.close()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.resume()  # a paused server ignores SIGTERM until continued
    server.stop()


@dataclass
class GatewayProcess:
    """A running `devloop gateway` subprocess."""

    process: subprocess.Popen
    port: int
    admin_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stats(self) -> dict:
        return requests.get(self.admin_url + "/cache/stats", timeout=5).json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM, what Kubernetes sends
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """start_gateway(upstream_url, redis_url="", *extra_flags, env=None) -> GatewayProcess.

    Runs `python -m devloop gateway`, the command the pod runs."""
    started: list[GatewayProcess] = []

    def start(
        upstream_url: str,
        redis_url: str = "",
        *flags: str,
        env: dict | None = None,
        cwd: Path | None = None,
    ) -> GatewayProcess:
        port, admin_port = free_port(), free_port()
        log_path = tmp_path / f"gateway-{port}.log"
        environment = {
            k: v
            for k, v in os.environ.items()
            if k not in ("UPSTREAM_URL", "REDIS_URL", "GATEWAY_PORT")
        }
        environment.update(env or {})
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devloop",
                "gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--admin-port",
                str(admin_port),
                "--upstream-url",
                upstream_url,
                "--redis-url",
                redis_url,
                # No drain window at teardown (the default 5 s made each test 5 s longer);
                # a test of the drain gives its own, which wins (argparse: the last one).
                "--drain-seconds",
                "0",
                *flags,
            ],
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=cwd,
        )
        gateway = GatewayProcess(process, port, admin_port, log_path)
        started.append(gateway)
        try:
            wait_until_listening(port, process, timeout=30)
        except DevloopError as error:
            raise RuntimeError(f"{error}\n{gateway.log()}") from None
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


class ToyUpstream:
    """A real OpenAI-shaped HTTP server whose behaviour the prompt selects:

    "status:N"   answers N with a JSON error body      "html:N"   answers N with an HTML page
    "sleep:S"    waits S seconds, then answers 200     "hang"     never answers (until shutdown)
    "stream:N:S" (with "stream": true) N chunks, S seconds apart
    "cut:N" / "nodone:N" / "errorevent"  (streams) N chunks, then the connection is cut / the
                 stream ends without [DONE] / vLLM's mid-stream failure: an error event, [DONE]
    anything else: 200 with a completion that names the prompt and the arrival number.
    `arrivals` counts requests per prompt; streaming requests get three SSE chunks.
    """

    def __init__(self) -> None:
        self.arrivals: Counter[str] = Counter()
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    async def _stream(request, prompt: str):
        """An SSE answer: 3 chunks 50 ms apart, or `stream:COUNT:GAP`."""
        from aiohttp import web

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        count, gap = 3, 0.05
        if prompt.startswith("stream:"):
            count, gap = int(prompt.split(":")[1]), float(prompt.split(":")[2])
        if prompt.startswith(("cut:", "nodone:")):
            count = int(prompt.split(":")[1]) + 1  # the last chunk, with its finish, never comes
        for index in range(count):
            if prompt.startswith(("cut:", "nodone:")) and index == count - 1:
                if prompt.startswith("cut:"):
                    request.transport.close()  # mid-answer: the chunked body never ends
                return response
            chunk = {"choices": [{"text": "abc"[index % 3], "finish_reason":
                                  "length" if index == count - 1 else None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(gap)
        if prompt == "errorevent":
            error = {"error": {"message": "toy failure mid-stream", "type": "InternalServerError",
                               "param": None, "code": 500}}
            await response.write(f"data: {json.dumps(error)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    async def _completions(self, request):
        """What the prompt asks for: `status:N`, `html:N`, `hang`, `sleep:S`, a stream, or an
        answer numbered by how often this prompt arrived."""
        from aiohttp import web

        body = await request.json()
        prompt = str(body.get("prompt", body.get("messages", "")))
        self.arrivals[prompt] += 1
        number = self.arrivals[prompt]
        if prompt.startswith("status:"):
            status = int(prompt.split(":")[1])
            error = {"message": "toy failure", "type": "BadRequestError", "param": None,
                     "code": status}
            return web.json_response({"error": error}, status=status)
        if prompt.startswith("html:"):
            return web.Response(status=int(prompt.split(":")[1]),
                                text="<html>bad gateway</html>", content_type="text/html")
        if prompt == "hang":
            await asyncio.sleep(3600)
        if prompt.startswith("sleep:"):
            await asyncio.sleep(float(prompt.split(":")[1]))
        if body.get("stream"):
            return await self._stream(request, prompt)
        return web.json_response({
            "id": f"cmpl-{number}",
            "object": "text_completion",
            "choices": [{"index": 0, "text": f"{prompt}#{number}", "finish_reason": "length"}],
        })

    def _run(self) -> None:
        from aiohttp import web

        async def models(request: web.Request) -> web.Response:
            return web.json_response({"object": "list", "data": [{"id": "toy", "object": "model"}]})

        async def health(request: web.Request) -> web.Response:
            return web.Response(text="")

        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", models)
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        # Clean up inside the loop (cancels a "hang" handler), then stop it.
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def toy_upstream() -> Iterator[ToyUpstream]:
    server = ToyUpstream()
    server.start()
    yield server
    server.stop()
