"""`devloop gateway`: a caching OpenAI-compatible reverse proxy in front of the vLLM engine.

    client -> gateway (local LRU, then Redis) -> vLLM

- POST /v1/completions and /v1/chat/completions: a reproducible non-streaming request (see
  devloop.cache.is_cacheable) is answered from the cache when it can be (`X-Cache: HIT`);
  otherwise it is forwarded and vLLM's answer is returned unchanged (`X-Cache: MISS`) and, when
  it is a success, stored. Identical concurrent misses share one upstream call (single flight).
  Other requests are forwarded untouched (`X-Cache: BYPASS`); streaming requests are relayed chunk
  by chunk as vLLM produces them.
- Upstream failures become OpenAI-style error bodies: vLLM's own 4xx/5xx pass through, connection
  refused is 502, no answer in time is 504; a body over the size limit is 413. Errors are never
  cached.
- GET /health answers by itself (200 while the engine is still loading) and reports the engine's
  and Redis's state; GET /metrics is Prometheus text; GET /cache/stats and POST /cache/flush serve
  `devloop cache`. Any other path is proxied to the engine as is (e.g. /v1/models, /tokenize).

Settings come from the environment (UPSTREAM_URL, REDIS_URL, GATEWAY_PORT, CACHE_TTL_SECONDS,
CACHE_MAX_ENTRIES, CACHE_MAX_BYTES, CACHE_POLICY, MAX_BODY_BYTES, UPSTREAM_TIMEOUT_SECONDS);
command-line flags override them. `--reload` restarts the server when the package's Python files
change, which is how Tilt's live update reaches the running pod.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from devloop import __version__, logs
from devloop.cache import CacheConfig, CachePolicy, cache_key, is_cacheable
from devloop.errors import UsageError

log = logging.getLogger("devloop.gateway")
# One line per request: its own logger, so a deployment can silence it alone.
access_log = logging.getLogger("devloop.gateway.access")

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is kept if it looks like an id (no spaces, quotes or control characters, which
# would let a client forge or break log lines); anything else gets a fresh one.
_MAX_REQUEST_ID = 128
# Probes and scrapes arrive every few seconds and say nothing: logged at debug level only.
_QUIET_PATHS = frozenset({"/health", "/metrics"})

CACHED_ENDPOINTS = ("/v1/completions", "/v1/chat/completions")
# Hop-by-hop headers (RFC 9110 7.6.1) and ones the client library recomputes.
_DROP_REQUEST_HEADERS = frozenset(
    h.lower()
    for h in (
        "Host",
        "Content-Length",
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Accept-Encoding",
        "Proxy-Authorization",
    )
)


@dataclass
class GatewayConfig:
    """Everything `devloop gateway` can be told. Units are in the names."""

    upstream_url: str = "http://localhost:8000"
    redis_url: str | None = "redis://localhost:6379/0"  # "" or None: local tier only
    host: str = "0.0.0.0"
    port: int = 8080
    cache_ttl_seconds: int = 3600
    cache_max_entries: int = 1024
    cache_max_bytes: int = 64 * 1024 * 1024
    cache_policy: CachePolicy = CachePolicy.DETERMINISTIC
    max_body_bytes: int = 4 * 1024 * 1024  # a long prompt is ~100 KB; larger bodies get 413
    upstream_timeout_seconds: float = 600.0  # longest wait for the engine's next byte
    upstream_connect_timeout_seconds: float = 5.0
    redis_timeout_seconds: float = 0.25
    redis_retry_seconds: float = 1.0
    shutdown_timeout_seconds: float = 5.0  # in-flight requests get this long on SIGTERM

    def cache_config(self) -> CacheConfig:
        return CacheConfig(
            max_entries=self.cache_max_entries,
            max_bytes=self.cache_max_bytes,
            redis_url=self.redis_url or None,
            ttl_seconds=self.cache_ttl_seconds,
            redis_timeout_seconds=self.redis_timeout_seconds,
            redis_retry_seconds=self.redis_retry_seconds,
        )


# Environment variable -> (field, parser). The gateway.env ConfigMap sets the first six.
_ENV_FIELDS: dict[str, tuple[str, Any]] = {
    "UPSTREAM_URL": ("upstream_url", str),
    "REDIS_URL": ("redis_url", str),
    "GATEWAY_PORT": ("port", int),
    "CACHE_TTL_SECONDS": ("cache_ttl_seconds", int),
    "CACHE_MAX_ENTRIES": ("cache_max_entries", int),
    "CACHE_MAX_BYTES": ("cache_max_bytes", int),
    "CACHE_POLICY": ("cache_policy", CachePolicy),
    "MAX_BODY_BYTES": ("max_body_bytes", int),
    "UPSTREAM_TIMEOUT_SECONDS": ("upstream_timeout_seconds", float),
    "REDIS_TIMEOUT_SECONDS": ("redis_timeout_seconds", float),
}


def config_from_env(environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """GatewayConfig from environment variables; a malformed value is a UsageError naming it."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, (attr, parse) in _ENV_FIELDS.items():
        raw = environ.get(name)
        if raw is None:
            continue
        try:
            values[attr] = parse(raw.strip())
        except ValueError:
            raise UsageError(f"{name}={raw!r} is not a valid {attr.replace('_', ' ')}") from None
    return GatewayConfig(**values)


def request_id_from(header: str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new random one."""
    if header and len(header) <= _MAX_REQUEST_ID and all(
        33 <= ord(char) <= 126 and char not in '"\\' for char in header
    ):
        return header
    return uuid.uuid4().hex


def openai_error(status: int, message: str, error_type: str) -> dict[str, Any]:
    """The error body OpenAI clients parse (`error.message`, `error.type`, `error.code`)."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": status}}


@dataclass
class UpstreamAnswer:
    """A complete non-streaming answer, from the engine or made up for an upstream failure."""

    status: int
    body: bytes
    content_type: str = "application/json"
    upstream_seconds: float = 0.0


class Metrics:
    """Counters and gauges for /metrics, in Prometheus text exposition format."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.duration_sum: dict[str, float] = {}
        self.upstream_requests = 0
        self.upstream_errors: dict[str, int] = {}
        self.coalesced = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] = self.requests.get((route, status), 0) + 1
        self.duration_sum[route] = self.duration_sum.get(route, 0.0) + seconds

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + 1

    def render(self, cache_stats: dict[str, Any]) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{labels} {value}")

        metric(
            "devloop_cache_requests_total",
            "counter",
            "Cache lookups (one per cacheable request).",
            [("", cache_stats["requests"])],
        )
        metric(
            "devloop_cache_hits_total",
            "counter",
            "Cache hits by tier.",
            [
                ('{tier="local"}', cache_stats["hits_local"]),
                ('{tier="redis"}', cache_stats["hits_redis"]),
            ],
        )
        metric(
            "devloop_cache_misses_total",
            "counter",
            "Cache lookups that found nothing.",
            [("", cache_stats["misses"])],
        )
        metric(
            "devloop_cache_stores_total",
            "counter",
            "Answers stored.",
            [("", cache_stats["stores"])],
        )
        metric(
            "devloop_cache_evictions_total",
            "counter",
            "Entries evicted from the local tier by its entry or byte bound.",
            [("", cache_stats["evictions"])],
        )
        metric(
            "devloop_cache_redis_errors_total",
            "counter",
            "Failed or timed-out Redis calls (each one degrades to the local tier).",
            [("", cache_stats["redis_errors"])],
        )
        metric(
            "devloop_cache_redis_degraded",
            "gauge",
            "1 while Redis is failing and the cache serves from the local tier only.",
            [("", 1 if cache_stats["redis"] == "degraded" else 0)],
        )
        metric(
            "devloop_cache_local_entries",
            "gauge",
            "Entries in the local tier.",
            [("", cache_stats["local_entries"])],
        )
        metric(
            "devloop_cache_local_bytes",
            "gauge",
            "Bytes of answers in the local tier.",
            [("", cache_stats["local_bytes"])],
        )
        metric(
            "devloop_gateway_requests_total",
            "counter",
            "Requests answered, by route and status.",
            [(f'{{route="{r}",code="{s}"}}', n) for (r, s), n in sorted(self.requests.items())],
        )
        metric(
            "devloop_gateway_request_duration_seconds_sum",
            "counter",
            "Total time spent answering, by route.",
            [(f'{{route="{r}"}}', round(v, 6)) for r, v in sorted(self.duration_sum.items())],
        )
        metric(
            "devloop_gateway_upstream_requests_total",
            "counter",
            "Requests sent to the engine.",
            [("", self.upstream_requests)],
        )
        metric(
            "devloop_gateway_upstream_errors_total",
            "counter",
            "Engine calls that failed before an answer (connect, timeout, disconnect).",
            [(f'{{kind="{k}"}}', n) for k, n in sorted(self.upstream_errors.items())],
        )
        metric(
            "devloop_gateway_coalesced_total",
            "counter",
            "Requests that waited for an identical in-flight miss instead of calling the engine.",
            [("", self.coalesced)],
        )
        return "\n".join(lines) + "\n"


@dataclass
class Gateway:
    """The aiohttp application and its state. `build_app()` returns the web.Application."""

    config: GatewayConfig = field(default_factory=GatewayConfig)

    def build_app(self) -> Any:
        from aiohttp import web

        self.metrics = Metrics()
        self._inflight: dict[str, asyncio.Task[UpstreamAnswer]] = {}

        @web.middleware
        async def request_context(request: Any, handler: Any) -> Any:
            return await self._request_context(request, handler)

        app = web.Application(
            client_max_size=self.config.max_body_bytes, middlewares=[request_context]
        )
        # Set on every response just before its headers go out: streaming handlers prepare their
        # response themselves, after which a middleware could no longer add a header.
        app.on_response_prepare.append(self._add_request_id)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_endpoint)
        app.router.add_get("/cache/stats", self.cache_stats)
        app.router.add_post("/cache/flush", self.cache_flush)
        for path in CACHED_ENDPOINTS:
            app.router.add_post(path, self.completion)
        app.router.add_route("*", "/{tail:.*}", self.passthrough)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    async def _lifecycle(self, app: Any) -> Any:
        import aiohttp

        from devloop.cache import ResponseCache

        self.cache = ResponseCache(self.config.cache_config())
        self.upstream = self.config.upstream_url.rstrip("/")
        # No total timeout: a long generation is fine as long as bytes keep coming (sock_read).
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=30),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.config.upstream_connect_timeout_seconds,
                sock_read=self.config.upstream_timeout_seconds,
            ),
            auto_decompress=False,
        )
        log.info(
            "gateway on %s:%d -> %s (redis %s, policy %s)",
            self.config.host,
            self.config.port,
            self.upstream,
            self.config.redis_url or "disabled",
            self.config.cache_policy.value,
        )
        yield
        await self.session.close()
        await self.cache.aclose()

    # -- request id and access log ----------------------------------------------------------

    @staticmethod
    async def _add_request_id(request: Any, response: Any) -> None:
        if "request_id" in request:
            response.headers[REQUEST_ID_HEADER] = request["request_id"]

    async def _request_context(self, request: Any, handler: Any) -> Any:
        """The middleware: a request id for every request, one access-log line when answered."""
        from aiohttp import web

        request["request_id"] = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        started = time.perf_counter()
        status = 500
        response = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away first (nginx's code for it)
            raise
        finally:
            level = logging.DEBUG if request.path in _QUIET_PATHS else logging.INFO
            access_log.log(
                level,
                "request",
                extra={
                    "request_id": request["request_id"],
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "cache": response.headers.get("X-Cache") if response is not None else None,
                },
            )

    # -- helpers -----------------------------------------------------------------------------

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> Any:
        from aiohttp import web

        return web.Response(
            status=status,
            body=json.dumps(payload).encode(),
            content_type="application/json",
            headers=headers,
        )

    def _forward_headers(self, request: Any) -> dict[str, str]:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in _DROP_REQUEST_HEADERS and k.lower() != REQUEST_ID_HEADER.lower()
        }
        # The engine sees the same id, so its logs and ours can be joined on it.
        headers[REQUEST_ID_HEADER] = request.get("request_id") or request_id_from(None)
        return headers

    def _failure(self, error: BaseException) -> UpstreamAnswer:
        """An upstream failure as an OpenAI-style error answer: 504 for no answer in time, 502
        for everything that means the engine is not reachable or broke the connection."""
        import aiohttp

        if isinstance(error, asyncio.TimeoutError):
            self.metrics.upstream_error("timeout")
            status, kind = 504, "upstream_timeout"
            message = (
                f"the engine at {self.upstream} did not answer within "
                f"{self.config.upstream_timeout_seconds:g}s"
            )
        elif isinstance(error, aiohttp.ClientConnectorError):
            self.metrics.upstream_error("connect")
            status, kind = 502, "upstream_unavailable"
            message = (
                f"cannot connect to the engine at {self.upstream} ({error.os_error}); "
                "is it running? `devloop gateway --upstream-url` sets where it is"
            )
        else:
            self.metrics.upstream_error("disconnect")
            status, kind = 502, "upstream_error"
            message = (
                f"the engine at {self.upstream} failed mid-answer: {type(error).__name__}: {error}"
            )
        return UpstreamAnswer(status, json.dumps(openai_error(status, message, kind)).encode())

    async def _fetch(
        self, method: str, path_qs: str, body: bytes, headers: dict[str, str]
    ) -> UpstreamAnswer:
        """One complete upstream call. Never raises for upstream trouble: failures come back as
        error answers. A non-JSON error body (a proxy's HTML page, say) is wrapped."""
        import aiohttp

        self.metrics.upstream_requests += 1
        started = time.perf_counter()
        try:
            async with self.session.request(
                method, self.upstream + path_qs, data=body, headers=headers
            ) as response:
                payload = await response.read()
                content_type = response.headers.get("Content-Type", "application/octet-stream")
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as error:
            return self._failure(error)
        elapsed = time.perf_counter() - started
        if status >= 400 and not content_type.startswith("application/json"):
            text = payload.decode("utf-8", "replace").strip()[:500]
            payload = json.dumps(
                openai_error(status, f"engine answered {status}: {text}", "upstream_error")
            ).encode()
            content_type = "application/json"
        return UpstreamAnswer(status, payload, content_type, elapsed)

    def _answer(self, answer: UpstreamAnswer, cache_state: str) -> Any:
        from aiohttp import web

        headers = {"X-Cache": cache_state}
        if answer.upstream_seconds:
            # How long the engine took, so a client can tell the gateway's own share of latency.
            headers["Server-Timing"] = f"upstream;dur={answer.upstream_seconds * 1000:.3f}"
        response = web.Response(status=answer.status, body=answer.body, headers=headers)
        response.headers["Content-Type"] = answer.content_type
        return response

    # -- endpoints ---------------------------------------------------------------------------

    async def completion(self, request: Any) -> Any:
        from aiohttp import web

        started = time.perf_counter()
        route = request.path
        try:
            response = await self._completion(request)
        except web.HTTPRequestEntityTooLarge:
            response = self._json(
                413,
                openai_error(
                    413,
                    f"request body is larger than the gateway's limit of "
                    f"{self.config.max_body_bytes} bytes (MAX_BODY_BYTES)",
                    "request_too_large",
                ),
            )
        self.metrics.observe(route, response.status, time.perf_counter() - started)
        return response

    async def _completion(self, request: Any) -> Any:
        from aiohttp import web

        if (
            request.content_length is not None
            and request.content_length > self.config.max_body_bytes
        ):
            raise web.HTTPRequestEntityTooLarge(
                max_size=self.config.max_body_bytes, actual_size=request.content_length
            )
        raw = await request.read()
        headers = self._forward_headers(request)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # Not a JSON object: the engine's validation error is the right answer; relay it.
            return self._answer(await self._fetch("POST", request.path_qs, raw, headers), "BYPASS")
        if body.get("stream"):
            return await self._stream(request, raw, headers)
        if not is_cacheable(body, self.config.cache_policy):
            return self._answer(await self._fetch("POST", request.path_qs, raw, headers), "BYPASS")

        key = cache_key(request.path, body, request.headers.get("Authorization", ""))
        cached = await self.cache.get(key)
        if cached is not None:
            return self._answer(UpstreamAnswer(200, cached), "HIT")
        task = self._inflight.get(key)
        leader = task is None
        if leader and (stored := self.cache.local.peek(key)) is not None:
            # An identical request finished while this one was looking in Redis.
            return self._answer(UpstreamAnswer(200, stored), "HIT")
        if leader:
            # The fetch runs as its own task: a leader whose client hangs up does not cancel the
            # call the followers are waiting on.
            task = asyncio.get_running_loop().create_task(
                self._fetch_and_store(key, request.path_qs, raw, headers)
            )
            self._inflight[key] = task
        else:
            self.metrics.coalesced += 1
        answer = await asyncio.shield(task)
        response = self._answer(answer, "MISS")
        if leader and self._storable(answer):
            # Send the answer first, then write it to Redis: the Redis round trip stays off the
            # client's latency (the local tier was filled already, in _fetch_and_store).
            try:
                await response.prepare(request)
                await response.write_eof()
            finally:
                self.cache.set_shared_in_background(key, answer.body)
        return response

    @staticmethod
    def _storable(answer: UpstreamAnswer) -> bool:
        """Only complete successes are cached: never an error, a timeout or a refusal."""
        return answer.status == 200 and answer.content_type.startswith("application/json")

    async def _fetch_and_store(
        self, key: str, path_qs: str, raw: bytes, headers: dict[str, str]
    ) -> UpstreamAnswer:
        try:
            answer = await self._fetch("POST", path_qs, raw, headers)
            if self._storable(answer):
                # In the local tier before leaving the in-flight table, so no identical request
                # falls between the two and calls the engine again.
                self.cache.set_local(key, answer.body)
            return answer
        finally:
            self._inflight.pop(key, None)

    async def _stream(self, request: Any, raw: bytes, headers: dict[str, str]) -> Any:
        """Relay a streaming answer chunk by chunk (no buffering, no caching)."""
        import aiohttp
        from aiohttp import web

        self.metrics.upstream_requests += 1
        try:
            upstream = await self.session.post(
                self.upstream + request.path_qs, data=raw, headers=headers
            )
        except (TimeoutError, aiohttp.ClientError) as error:
            return self._answer(self._failure(error), "BYPASS")
        async with upstream:
            if upstream.status != 200:
                payload = await upstream.read()
                ctype = upstream.headers.get("Content-Type", "")
                if not ctype.startswith("application/json"):
                    text = payload.decode("utf-8", "replace").strip()[:500]
                    payload = json.dumps(
                        openai_error(
                            upstream.status,
                            f"engine answered {upstream.status}: {text}",
                            "upstream_error",
                        )
                    ).encode()
                return self._answer(UpstreamAnswer(upstream.status, payload), "BYPASS")
            response = web.StreamResponse(
                status=200,
                headers={
                    "Content-Type": upstream.headers.get("Content-Type", "text/event-stream"),
                    "Cache-Control": "no-cache",
                    "X-Cache": "BYPASS",
                    # nginx-style proxies in front must not buffer a token stream.
                    "X-Accel-Buffering": "no",
                },
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (TimeoutError, aiohttp.ClientError) as error:
                # Headers are gone already: report the failure in-band, as vLLM itself does.
                failure = self._failure(error)
                await response.write(b"data: " + failure.body + b"\n\n")
            await response.write_eof()
            return response

    async def passthrough(self, request: Any) -> Any:
        """Any other path (/v1/models, /tokenize, /version...): forwarded as is, never cached."""
        from aiohttp import web

        started = time.perf_counter()
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._json(413, openai_error(413, "request body too large", "request_too_large"))
        answer = await self._fetch(
            request.method, request.path_qs, raw, self._forward_headers(request)
        )
        response = self._answer(answer, "BYPASS")
        route = request.path if request.path in ("/v1/models", "/version") else "other"
        self.metrics.observe(route, response.status, time.perf_counter() - started)
        return response

    async def health(self, request: Any) -> Any:
        """200 as long as the gateway itself runs: the engine may still be loading its model,
        and a gateway that answers (with 502/504 bodies) is better than one Kubernetes restarts."""
        import aiohttp

        upstream: dict[str, Any] = {"url": self.upstream}
        try:
            async with self.session.get(
                self.upstream + "/health", timeout=aiohttp.ClientTimeout(total=1.0)
            ) as response:
                upstream["status"] = response.status
                upstream["state"] = "up" if response.status == 200 else "unhealthy"
        except (TimeoutError, aiohttp.ClientError) as error:
            upstream["state"] = "down"
            upstream["error"] = f"{type(error).__name__}: {error}"
        redis_state = await self.cache.ping_redis()
        return self._json(
            200,
            {
                "status": "ok",
                "version": __version__,
                "pid": os.getpid(),
                "upstream": upstream,
                "redis": redis_state,
            },
        )

    async def metrics_endpoint(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(
            text=self.metrics.render(self.cache.snapshot()),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    async def cache_stats(self, request: Any) -> Any:
        return self._json(
            200,
            {
                **self.cache.snapshot(),
                "inflight": len(self._inflight),
                "coalesced": self.metrics.coalesced,
                "upstream_requests": self.metrics.upstream_requests,
            },
        )

    async def cache_flush(self, request: Any) -> Any:
        deleted = await self.cache.flush()
        return self._json(200, {"flushed": True, "redis_keys_deleted": deleted})


# -- running it ------------------------------------------------------------------------------


def _install_uvloop() -> None:
    """uvloop when it is there (the vLLM image has it): a faster event loop, same semantics."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(config: GatewayConfig) -> None:
    """Run the gateway in the foreground until SIGINT/SIGTERM."""
    from aiohttp import web

    logs.configure_logging()
    _install_uvloop()
    app = Gateway(config).build_app()
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        access_log=None,
        print=None,
        shutdown_timeout=config.shutdown_timeout_seconds,
        reuse_address=True,
    )


def serve_with_reload(config: GatewayConfig) -> int:
    """Run `serve` in a child process and restart it whenever a .py file of the package changes.

    step=20 ms: changes are yielded 20 ms after the last write (a Tilt sync writes a file at once),
    so most of the restart time is the new process importing aiohttp. A short shutdown timeout,
    since in the dev loop a fast restart matters more than draining a request.
    """
    import watchfiles

    import devloop

    package_dir = Path(devloop.__file__).resolve().parent
    child_config = replace(config, shutdown_timeout_seconds=0.2)
    log.warning("reload: watching %s", package_dir)
    return watchfiles.run_process(
        package_dir,
        target=serve,
        args=(child_config,),
        target_type="function",
        watch_filter=watchfiles.PythonFilter(),
        debounce=400,
        step=20,
        sigint_timeout=2,
        callback=lambda changes: log.warning(
            "reloading after %d change(s)", len(changes), extra={"changes": len(changes)}
        ),
    )


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run the caching OpenAI-compatible proxy in front of vLLM",
        description="Serve /v1/completions, /v1/chat/completions (streaming and not), /v1/models, "
        "/health and /metrics, answering reproducible requests from a local LRU and Redis. "
        "Flags override the environment variables named in their help.",
    )
    parser.add_argument(
        "--upstream-url", help="the vLLM server (UPSTREAM_URL; default http://localhost:8000)"
    )
    parser.add_argument(
        "--redis-url",
        help="the shared cache tier; '' for local only "
        "(REDIS_URL; default redis://localhost:6379/0)",
    )
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (GATEWAY_PORT; default 8080)")
    parser.add_argument(
        "--cache-ttl-seconds", type=int, help="lifetime in Redis (CACHE_TTL_SECONDS; default 3600)"
    )
    parser.add_argument(
        "--cache-max-entries",
        type=int,
        help="local tier entries, 0 disables it (CACHE_MAX_ENTRIES; default 1024)",
    )
    parser.add_argument(
        "--cache-max-bytes", type=int, help="local tier bytes (CACHE_MAX_BYTES; default 64 MiB)"
    )
    parser.add_argument(
        "--cache-policy",
        choices=[p.value for p in CachePolicy],
        help="which requests are cached: 'deterministic' (temperature 0 or a seed; "
        "default), 'all' (sampled ones too, replayed), 'none' (CACHE_POLICY)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        help="larger request bodies get 413 (MAX_BODY_BYTES; default 4 MiB)",
    )
    parser.add_argument(
        "--upstream-timeout-seconds",
        type=float,
        help="longest wait for the engine's "
        "next byte before 504 (UPSTREAM_TIMEOUT_SECONDS; default 600)",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="restart when the package's Python files change (the dev loop)",
    )
    parser.set_defaults(handler=run)


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """The environment's settings with every flag that was given applied on top."""
    config = config_from_env(environ)
    overrides = {
        name: getattr(args, name)
        for name in (
            "upstream_url",
            "redis_url",
            "host",
            "port",
            "cache_ttl_seconds",
            "cache_max_entries",
            "cache_max_bytes",
            "max_body_bytes",
            "upstream_timeout_seconds",
        )
        if getattr(args, name, None) is not None
    }
    if getattr(args, "cache_policy", None):
        overrides["cache_policy"] = CachePolicy(args.cache_policy)
    return replace(config, **overrides)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if not config.upstream_url.startswith(("http://", "https://")):
        raise UsageError(
            f"upstream URL {config.upstream_url!r} must start with http:// or https://"
        )
    logs.configure_logging()
    if args.reload:
        serve_with_reload(config)
        return 0
    serve(config)
    return 0

