"""The engine behind the gateway: one HTTP client, whole answers and relayed streams.

Nothing here raises for upstream trouble: connection refused is a 502, no next byte in time a
504, a connection that breaks mid-answer a 502, each with an OpenAI error body; the engine's own
errors keep their status and get the OpenAI shape if they lack it (devloop.gateway.errors).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from devloop.gateway.config import GatewayConfig
from devloop.gateway.errors import as_openai_error, error_body
from devloop.gateway.metrics import GatewayMetrics

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


class Upstream:
    """The engine's HTTP client. `start()` and `close()` run inside the server's event loop."""

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.base = config.upstream_url.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
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

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def url_for(self, request: web.BaseRequest) -> URL:
        """The engine's URL for this request's path and query, exactly as the client encoded
        them (re-encoding could turn one path into another)."""
        return URL(self.base + request.rel_url.raw_path_qs, encoded=True)

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

    def failure(self, error: BaseException) -> UpstreamAnswer:
        """An upstream failure as an OpenAI-style error answer: 504 for no answer in time, 502
        for everything that means the engine is not reachable or broke the connection."""
        if isinstance(error, asyncio.TimeoutError):
            self.metrics.upstream_error("timeout")
            status, kind = 504, "upstream_timeout"
            message = (
                f"the engine at {self.base} did not answer within "
                f"{self.config.upstream_timeout_seconds:g}s"
            )
        elif isinstance(error, aiohttp.ClientConnectorError):
            self.metrics.upstream_error("connect")
            status, kind = 502, "upstream_unavailable"
            message = (
                f"cannot connect to the engine at {self.base} ({error.os_error}); "
                "is it running? `devloop gateway --upstream-url` sets where it is"
            )
        else:
            self.metrics.upstream_error("disconnect")
            status, kind = 502, "upstream_error"
            message = f"the engine at {self.base} failed mid-answer: {type(error).__name__}: {error}"
        return UpstreamAnswer(status, error_body(status, message, kind))

    async def fetch(
        self, method: str, url: URL, body: bytes, headers: CIMultiDict[str]
    ) -> UpstreamAnswer:
        """One complete upstream call; failures come back as error answers."""
        assert self.session is not None
        self.metrics.upstream_requests.inc()
        started = time.perf_counter()
        try:
            async with self.session.request(method, url, data=body, headers=headers) as response:
                payload = await response.read()
                content_type = response.headers.get("Content-Type", "application/octet-stream")
                status = response.status
                kept = kept_headers(response.headers)
        except (TimeoutError, aiohttp.ClientError) as error:
            return self.failure(error)
        elapsed = time.perf_counter() - started
        if status >= 400:
            payload = as_openai_error(status, payload, content_type)
            content_type = "application/json"
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
        assert self.session is not None
        self.metrics.upstream_requests.inc()
        try:
            upstream = await self.session.post(self.url_for(request), data=body, headers=headers)
        except (TimeoutError, aiohttp.ClientError) as error:
            return answer_response(self.failure(error), cache_state)
        async with upstream:
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
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                    if recorder is not None:
                        recorder.feed(chunk)
            except (TimeoutError, aiohttp.ClientError) as error:
                if isinstance(error, ConnectionResetError):
                    # Our client hung up. Returning leaves `async with upstream`, which closes
                    # the engine's connection so vLLM aborts the request; aiohttp then logs an
                    # access line for a closed client (raising would log a 500 traceback).
                    log.info("client hung up mid-stream; the engine's request is closed")
                    return response
                # Headers are gone already: report the failure in-band, as vLLM itself does.
                await response.write(b"data: " + self.failure(error).body + b"\n\n")
                recorder = None  # a stream that broke off is never stored
            await response.write_eof()
            if recorder is not None:
                recorder.finished()
            return response

    async def health(self) -> dict[str, object]:
        """The engine's /health, answered within a second either way."""
        assert self.session is not None
        state: dict[str, object] = {"url": self.base}
        try:
            async with self.session.get(
                self.base + "/health", timeout=aiohttp.ClientTimeout(total=1.0)
            ) as response:
                state["status"] = response.status
                state["state"] = "up" if response.status == 200 else "unhealthy"
        except (TimeoutError, aiohttp.ClientError) as error:
            state["state"] = "down"
            state["error"] = f"{type(error).__name__}: {error}"
        return state


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
