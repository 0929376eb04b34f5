"""The engines behind the gateway: whole answers and relayed streams, each sent to the replica
the router picks (devloop.gateway.routing), and sent again to another one when the first failed
before anything reached the client.

Nothing here raises for upstream trouble: no ready engine is a 503 with Retry-After (after a
bounded wait), an unknown model a 404 listing the models, no next byte in time a 504 naming the
timeout that fired, a connection that breaks mid-answer a 502, each with an OpenAI error body; the
engine's own errors keep their status and get the OpenAI shape if they lack it
(devloop.gateway.errors).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from devloop.gateway.config import GatewayConfig
from devloop.gateway.errors import as_openai_error, error_body
from devloop.gateway.metrics import GatewayMetrics, ReplicaCollector
from devloop.gateway.reasoning import StreamNormalizer, normalize_json_bytes
from devloop.gateway.routing.endpoints import Endpoint, EndpointPool
from devloop.gateway.routing.health import HealthMonitor
from devloop.gateway.routing.router import NoEndpoint, Router, is_retryable_answer, target_for

log = logging.getLogger("devloop.gateway")

REQUEST_ID_HEADER = "X-Request-ID"
# Hop-by-hop headers (RFC 9110 7.6.1), ones the client library recomputes, and the request id,
# which the gateway sets itself.
_DROP_REQUEST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Host", "Content-Length", "Connection", "Keep-Alive", "Proxy-Connection", "TE",
        "Trailer", "Transfer-Encoding", "Upgrade", "Accept-Encoding", "Proxy-Authorization",
        REQUEST_ID_HEADER,
    )
)
# Engine response headers a client acts on, kept on every relayed answer: Allow (RFC 9110
# 15.5.6: a 405 MUST carry it), Retry-After (503/429: when to come back), WWW-Authenticate
# (a 401 MUST carry it), Location. The rest (Date, Server, framing) the gateway sets itself.
KEPT_RESPONSE_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", "Location")


class StreamRecorder(Protocol):
    """Told what a relayed stream carried, after each piece went to the client."""

    def feed(self, chunk: bytes) -> None: ...

    def finished(self) -> None:
        """The engine's stream ended cleanly and all of it went to the client."""


@dataclass
class UpstreamAnswer:
    """A complete non-streaming answer, from the engine or made up for an upstream failure."""

    status: int
    body: bytes
    content_type: str = "application/json"
    upstream_seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)  # KEPT_RESPONSE_HEADERS sent


def kept_headers(headers: CIMultiDict[str] | dict[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in KEPT_RESPONSE_HEADERS if name in headers}


# Failures that happen before the engine can have started on the request: another replica may
# take it. A reset or a closed keep-alive connection is tried once more on a fresh connection.
_CONNECT_FAILURES = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
_DISCONNECTS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class Lease:
    """An engine's answer and the replica it came from, held until the answer is read (`async
    with`): the replica's outstanding count, which the least-outstanding policy reads, includes
    this request until then."""

    def __init__(
        self, pool: EndpointPool, endpoint: Endpoint, client: aiohttp.ClientSession,
        response: aiohttp.ClientResponse,
    ) -> None:
        self.pool, self.endpoint, self.client, self.response = pool, endpoint, client, response

    async def __aenter__(self) -> aiohttp.ClientResponse:
        return self.response

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.response.__aexit__(kind, error, tb)
        finally:
            self.pool.release(self.endpoint, self.client)


class Upstream:
    """The engines' HTTP clients (one per replica, so a replica that leaves takes its keep-alive
    connections with it). `start()` and `close()` run inside the server's event loop."""

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.base = " ".join(config.upstream_urls)  # for log lines
        self.pool = EndpointPool(self._new_client)
        self.router = Router(
            self.pool, config.routing_policy, config.upstream_ready_wait_seconds,
            retry_after_seconds=max(1, round(config.upstream_health_interval_seconds * 2)),
        )
        self.monitor = HealthMonitor(
            self.pool, config.upstream_urls, config.upstream_health_interval_seconds
        )
        metrics.registry.register(ReplicaCollector(
            lambda: [(e.upstream, e.state, e.outstanding) for e in self.pool.endpoints]
        ))

    def _new_client(self) -> aiohttp.ClientSession:
        # No total timeout: a long generation is fine as long as bytes keep coming (sock_read).
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=5),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.config.upstream_connect_timeout_seconds,
                sock_read=self.config.upstream_timeout_seconds,
            ),
            auto_decompress=False,
        )

    async def start(self) -> None:
        await self.monitor.start()

    async def close(self) -> None:
        await self.monitor.stop()
        await self.pool.aclose()

    def url_for(self, request: web.BaseRequest) -> URL:
        """This request's path and query, exactly as the client encoded them (re-encoding could
        turn one path into another); the replica's base URL goes in front when it is sent."""
        return URL(request.rel_url.raw_path_qs, encoded=True)

    @staticmethod
    def forward_headers(request: web.BaseRequest) -> CIMultiDict[str]:
        headers = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _DROP_REQUEST_HEADERS
        )
        # The engine sees the same id, so its logs and ours can be joined on it.
        headers[REQUEST_ID_HEADER] = request["request_id"]
        return headers

    def failure(self, error: BaseException, phase: str, url: str) -> UpstreamAnswer:
        """An upstream failure as an OpenAI-style error answer: 504 for no answer in time (naming
        the timeout that fired: connect, first byte or between bytes, and its value), 502 for
        everything that means the engine is not reachable or broke the connection."""
        if isinstance(error, asyncio.TimeoutError):
            self.metrics.upstream_error("timeout")
            status, kind = 504, "upstream_timeout"
            message = self.timeout_message(error, phase, url)
        elif isinstance(error, aiohttp.ClientConnectorError):
            self.metrics.upstream_error("connect")
            status, kind = 502, "upstream_unavailable"
            message = (
                f"cannot connect to the engine at {url} ({error.os_error}); "
                "is it running? `devloop gateway --upstream` sets where it is"
            )
        else:
            self.metrics.upstream_error("disconnect")
            status, kind = 502, "upstream_error"
            message = f"the engine at {url} failed mid-answer: {type(error).__name__}: {error}"
        return UpstreamAnswer(status, error_body(status, message, kind))

    def timeout_message(self, error: BaseException, phase: str, url: str) -> str:
        if isinstance(error, aiohttp.ConnectionTimeoutError):
            return (
                f"could not connect to the engine at {url} within "
                f"{self.config.upstream_connect_timeout_seconds:g}s (the connect timeout, "
                "UPSTREAM_CONNECT_TIMEOUT_SECONDS)"
            )
        which = "first byte" if phase == "first byte" else "next byte"
        return (
            f"the engine at {url} sent no {which} within "
            f"{self.config.upstream_timeout_seconds:g}s (the {phase} timeout, "
            "--upstream-timeout-seconds / UPSTREAM_TIMEOUT_SECONDS)"
        )

    async def open(
        self, method: str, url: URL, body: bytes, headers: CIMultiDict[str]
    ) -> Lease | UpstreamAnswer:
        """Send the request to the replica the router picks; on a failure before the engine can
        have started on it (devloop.gateway.routing.router), to another one. The engine's answer
        (headers read, body not yet), or an error answer."""
        target = target_for(body, headers)
        tried: set[Endpoint] = set()
        fresh_retried: set[Endpoint] = set()
        last: UpstreamAnswer | None = None
        for _attempt in range(2 * len(self.pool.endpoints) + 2):
            try:
                endpoint = await self.router.pick(target, tried)
            except NoEndpoint as refusal:
                return self._refusal(refusal)
            client = self.pool.acquire(endpoint)
            self.metrics.routed(endpoint.upstream, self._model_label(target.model))
            retry_reason = None
            try:
                response = await client.request(
                    method, URL(endpoint.url + str(url), encoded=True), data=body, headers=headers
                )
            except _CONNECT_FAILURES as error:
                last, retry_reason = self.failure(error, "connect", endpoint.url), "connect"
                self.pool.mark_down(endpoint, self._reason(error, endpoint.url))
            except _DISCONNECTS as error:
                # A keep-alive connection the engine had closed, or a reset: once more on a
                # fresh connection, then elsewhere.
                last, retry_reason = self.failure(error, "first byte", endpoint.url), "disconnect"
                self.pool.retire_connections(endpoint)
                if endpoint in fresh_retried:
                    self.pool.mark_down(endpoint, self._reason(error, endpoint.url))
                fresh_retried.add(endpoint)
            except (TimeoutError, aiohttp.ClientError) as error:
                self.pool.release(endpoint, client)
                return self.failure(error, "first byte", endpoint.url)
            else:
                lease = Lease(self.pool, endpoint, client, response)
                if response.status not in (500, 503):
                    return lease
                try:
                    payload = await response.read()  # kept: read() again returns it
                except (TimeoutError, aiohttp.ClientError):
                    payload = b""
                if not is_retryable_answer(response.status, payload):
                    return lease
                retry_reason = f"status {response.status}"
                last = UpstreamAnswer(response.status, as_openai_error(
                    response.status, payload, response.headers.get("Content-Type", "")))
                response.release()
                self.pool.mark_down(endpoint, f"answered {response.status}: {payload[:200]!r}")
            self.pool.release(endpoint, client)
            self.metrics.retried(endpoint.upstream, retry_reason)
            if not endpoint.usable:
                tried.add(endpoint)
            log.info("retrying on another replica: %s failed (%s)", endpoint.url, retry_reason)
        assert last is not None
        return last

    def _refusal(self, refusal: NoEndpoint) -> UpstreamAnswer:
        # A 404 is typed as vLLM types its own unknown-model answer, so clients see one shape.
        kind = "NotFoundError" if refusal.status == 404 else "upstream_unavailable"
        headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else {}
        return UpstreamAnswer(refusal.status, error_body(refusal.status, refusal.message, kind),
                              headers=headers)

    def _reason(self, error: BaseException, url: str) -> str:
        if isinstance(error, asyncio.TimeoutError):
            return self.timeout_message(error, "connect", url)
        return f"{type(error).__name__}: {error}"

    def _model_label(self, model: str | None) -> str:
        """The metrics label: only models some engine lists (bounded cardinality)."""
        if model is None:
            return "none"
        return model if model in self.pool.models() else "other"

    async def fetch(
        self, method: str, url: URL, body: bytes, headers: CIMultiDict[str]
    ) -> UpstreamAnswer:
        """One complete upstream call; failures come back as error answers."""
        started = time.perf_counter()
        lease = await self.open(method, url, body, headers)
        if isinstance(lease, UpstreamAnswer):
            return lease
        try:
            async with lease as response:
                payload = await response.read()
                content_type = response.headers.get("Content-Type", "application/octet-stream")
                status = response.status
                kept = kept_headers(response.headers)
        except (TimeoutError, aiohttp.ClientError) as error:
            return self.failure(error, "between bytes", lease.endpoint.url)
        elapsed = time.perf_counter() - started
        if status >= 400:
            payload = as_openai_error(status, payload, content_type)
            content_type = "application/json"
        elif content_type.startswith("application/json"):
            # The thinking under both names, whichever engine answered (devloop.gateway.reasoning).
            payload = normalize_json_bytes(payload)
        return UpstreamAnswer(status, payload, content_type, elapsed, kept)

    async def stream(
        self,
        request: web.Request,
        body: bytes,
        headers: CIMultiDict[str],
        cache_state: str,
        recorder: StreamRecorder | None = None,
    ) -> web.StreamResponse:
        """Relay a streaming answer chunk by chunk as the engine produces it (no buffering). A
        `recorder` is handed each chunk after it was written to the client (so recording never
        delays the stream) and told `finished()` only when the whole stream went through. A
        client that hangs up makes the next write fail, which closes the upstream connection:
        vLLM then aborts the request instead of generating for nobody."""
        lease = await self.open("POST", self.url_for(request), body, headers)
        if isinstance(lease, UpstreamAnswer):
            return answer_response(lease, cache_state)
        upstream = lease.response
        async with lease:
            if upstream.status != 200:
                payload = await upstream.read()
                content_type = upstream.headers.get("Content-Type", "")
                return answer_response(
                    UpstreamAnswer(upstream.status, as_openai_error(upstream.status, payload,
                                                                    content_type),
                                   headers=kept_headers(upstream.headers)),
                    cache_state,
                )
            response = web.StreamResponse(
                status=200,
                headers={
                    "Content-Type": upstream.headers.get("Content-Type", "text/event-stream"),
                    "Cache-Control": "no-cache",
                    "X-Cache": cache_state,
                    # nginx-style proxies in front must not buffer a token stream.
                    "X-Accel-Buffering": "no",
                },
            )
            await response.prepare(request)
            # Each event's thinking under both names (devloop.gateway.reasoning), as recorded.
            normalizer = StreamNormalizer()
            try:
                async for piece in upstream.content.iter_any():
                    chunk = normalizer.feed(piece)
                    if not chunk:
                        continue
                    await response.write(chunk)
                    if recorder is not None:
                        recorder.feed(chunk)
                rest = normalizer.flush()
                if rest:
                    await response.write(rest)
                    if recorder is not None:
                        recorder.feed(rest)
            except (TimeoutError, aiohttp.ClientError) as error:
                if isinstance(error, ConnectionResetError):
                    # Our client hung up. Returning leaves `async with upstream`, which closes
                    # the engine's connection so vLLM aborts the request; aiohttp then logs an
                    # access line for a closed client (raising would log a 500 traceback).
                    log.info("client hung up mid-stream; the engine's request is closed")
                    return response
                # Headers are gone already: report the failure in-band, as vLLM itself does.
                failure = self.failure(error, "between bytes", lease.endpoint.url)
                await response.write(b"data: " + failure.body + b"\n\n")
                recorder = None  # a stream that broke off is never stored
            await response.write_eof()
            if recorder is not None:
                recorder.finished()
            return response

    def health(self) -> dict[str, object]:
        """Every replica's state as the background probes last saw it."""
        endpoints = [e for e in self.pool.endpoints if e.state != "gone"]
        ready = sum(e.state == "ready" for e in endpoints)
        summary = "up" if endpoints and ready == len(endpoints) else "degraded" if ready else "down"
        return {"state": summary, "ready": ready, "replicas": len(endpoints),
                "urls": list(self.config.upstream_urls),
                "engines": [e.describe() for e in endpoints]}


def answer_response(answer: UpstreamAnswer, cache_state: str) -> web.Response:
    """The answer as the client gets it. An error is never stored, so it says BYPASS whatever
    the request was."""
    if answer.status >= 400:
        cache_state = "BYPASS"
    headers = {**answer.headers, "X-Cache": cache_state, "Content-Type": answer.content_type}
    if answer.upstream_seconds:
        # How long the engine took, so a client can tell the gateway's own share of latency.
        headers["Server-Timing"] = f"upstream;dur={answer.upstream_seconds * 1000:.3f}"
    return web.Response(status=answer.status, body=answer.body, headers=headers)
