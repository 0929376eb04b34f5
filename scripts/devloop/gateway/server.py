"""One gateway worker: both apps on their already-bound sockets, until a signal stops it.

Signals, as a Kubernetes citizen (and the supervisor of `--reload`) expects them:

- SIGTERM (Kubernetes stopping the pod): /ready turns 503 at once so the endpoint leaves every
  Service; new and in-flight requests, streams included, are still served for `drain_seconds`
  (each response now closes its connection, so keep-alive clients reconnect elsewhere); then the
  sockets stop accepting and in-flight requests get up to `shutdown_timeout_seconds`; exit 0.
  A second SIGTERM or SIGINT ends the drain window early.
- SIGINT (Ctrl-C): the same without the drain window.
- SIGUSR1 (`--reload`: a newer worker accepts on the same sockets already): stop accepting now,
  finish in-flight requests, exit 0. Readiness stays 200: the pod is still serving.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from devloop.gateway.app import AccessLogger, access_log, build_admin_app, build_api_app
from devloop.gateway.config import GatewayConfig
from devloop.gateway.sockets import Listeners, signal_ready
from devloop.gateway.state import GatewayState, close_state, open_state

log = logging.getLogger("devloop.gateway")

RETIRE_SIGNAL = signal.SIGUSR1
# After the sockets stop accepting: how long open keep-alive connections may still bring a
# request (answered, then closed) before idle ones are closed.
LINGER_SECONDS = 1.0


class Lifecycle:
    """Turns signals into a stop mode ("drain", "stop" or "retire") and a hurry flag."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.stop_requested = asyncio.Event()
        self.hurry = asyncio.Event()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, RETIRE_SIGNAL):
            loop.add_signal_handler(signum, self.on_signal, signum)

    def on_signal(self, signum: int) -> None:
        if self.mode is None:
            self.mode = {signal.SIGTERM: "drain", signal.SIGINT: "stop"}.get(signum, "retire")
            self.stop_requested.set()
        elif signum != RETIRE_SIGNAL:
            self.hurry.set()


def _install_uvloop() -> None:
    """uvloop when it is there (the vLLM image has it): a faster event loop, same semantics."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(config: GatewayConfig, listeners: Listeners) -> int:
    """Serve until stopped by a signal; the exit code (0 after a clean shutdown)."""
    _install_uvloop()
    return asyncio.run(_serve(config, listeners))


async def _start(state: GatewayState, listeners: Listeners) -> list[web.AppRunner]:
    pairs = [(build_api_app(state), listeners.api)]
    if listeners.admin is not None:
        pairs.append((build_admin_app(state), listeners.admin))
    runners = []
    for app, sock in pairs:
        runner = web.AppRunner(
            app,
            access_log_class=AccessLogger,
            access_log=access_log,
            handle_signals=False,  # Lifecycle does
            # A proxy relays the body as the client encoded it, with its Content-Encoding: the
            # engine decides what it accepts, and a body that is not valid gzip is no error here.
            auto_decompress=False,
            shutdown_timeout=state.config.shutdown_timeout_seconds,
        )
        await runner.setup()
        runners.append(runner)
        await web.SockSite(runner, sock).start()
    return runners


async def _serve(config: GatewayConfig, listeners: Listeners) -> int:
    lifecycle = Lifecycle()
    lifecycle.install(asyncio.get_running_loop())
    state = await open_state(config)
    try:
        runners = await _start(state, listeners)
        log.info(
            "gateway on %s -> %s (admin %s, redis %s, policy %s)",
            _address(listeners.api), state.upstream.base,
            _address(listeners.admin) if listeners.admin else "off",
            config.redis_url or "disabled", config.cache_policy.value,
        )
        signal_ready()
        await lifecycle.stop_requested.wait()
        await _drain(state, lifecycle)
        log.info(
            "stopping: no new connections; the requests in flight get up to %g s to finish",
            config.shutdown_timeout_seconds,
        )
        await _stop_accepting(runners)
        await asyncio.gather(*(runner.cleanup() for runner in runners))
    finally:
        await close_state(state)
    log.info("stopped: every request finished or timed out; exiting")
    return 0


async def _drain(state: GatewayState, lifecycle: Lifecycle) -> None:
    state.closing_connections = True
    if lifecycle.mode == "retire":
        log.info("reload: the new code's worker is serving; this one stops taking connections "
                 "and finishes its requests in flight")
        return
    if lifecycle.mode == "stop":
        log.info("interrupted (Ctrl-C): stopping the gateway")
        return
    state.draining = True
    seconds = state.config.drain_seconds
    log.info("SIGTERM: /ready now answers 503 so Kubernetes takes this pod out of the Service; "
             "still serving new and in-flight requests for %g s", seconds)
    try:
        await asyncio.wait_for(lifecycle.hurry.wait(), seconds)
    except TimeoutError:
        pass


async def _stop_accepting(runners: list[web.AppRunner]) -> None:
    """Close the listening sockets, then give open keep-alive connections LINGER_SECONDS to
    bring their next request: it is answered with `Connection: close`, and the client opens
    its next connection to whoever accepts now. Closing an idle connection at once instead
    races a client that is sending on it at that moment, and its request fails."""
    for runner in runners:
        for site in list(runner.sites):
            await site.stop()
    deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        if not any(runner.server and runner.server.connections for runner in runners):
            return
        await asyncio.sleep(0.05)


def _address(sock: object) -> str:
    host, port = sock.getsockname()[:2]  # type: ignore[attr-defined]
    return f"{host}:{port}"
