"""Answers from the cache, and streams recorded into it.

- `hit_response`: a stored answer (devloop.gateway.cache.record) in the form the request asks
  for: a whole JSON answer, or an SSE stream an OpenAI client reads exactly like the engine's.
  Every HIT carries a fresh `id` and `created` (clients treat ids as unique); the stored id is
  in `X-Cache-Original-Id` and the entry's age in `Age` (RFC 9111 5.1).
- `relay_and_record`: a cacheable stream that missed: relayed to the client exactly as the
  engine sends it, each piece written first and only then appended to a buffer (recording
  adds no latency to the live stream); once its final [DONE] went out, a complete stream is
  stored (record.StoredAnswer.from_stream decides). A stream that broke off, ended in an error
  event or lost its client before [DONE] is not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from devloop.gateway.cache.record import StoredAnswer, fresh_id
from devloop.gateway.state import GatewayState

log = logging.getLogger("devloop.gateway")

# A recorded stream longer than this is relayed but not stored (a runaway generation must not
# grow the gateway's memory without bound; the cache's entries are far smaller).
MAX_RECORDED_BYTES = 16 * 1024 * 1024
ORIGINAL_ID_HEADER = "X-Cache-Original-Id"


def hit_response(
    request: web.Request, entry: StoredAnswer, stream: bool, include_usage: bool, label: str = "HIT"
) -> web.Response:
    """The stored answer for this request, restamped with its own id and the current time."""
    new_id = fresh_id(entry.original_id, request["request_id"], request.path.endswith("/chat/completions"))
    created = int(time.time())
    headers = {"X-Cache": label}
    if entry.original_id:
        headers[ORIGINAL_ID_HEADER] = entry.original_id
    if label == "HIT":
        headers["Age"] = str(int(entry.age_seconds()))
    if stream:
        headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return web.Response(
            body=entry.render_stream(new_id, created, include_usage),
            headers={**headers, "Content-Type": "text/event-stream; charset=utf-8"},
        )
    return web.Response(
        body=entry.render_json(new_id, created),
        headers={**headers, "Content-Type": "application/json"},
    )


class StreamTee:
    """The proxy's StreamRecorder: keeps what went to the client and hands the stream to
    `on_complete` as soon as its final `data: [DONE]` was written (not when the engine's body
    ends, one more read later: a client asking again the moment it read [DONE] must hit), or
    when the proxy says the stream finished."""

    _END = b"data: [DONE]\n\n"

    def __init__(self, on_complete: Callable[[bytes], None]) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._tail = b""
        self._done = False
        self._on_complete = on_complete

    def feed(self, chunk: bytes) -> None:
        if self._done:
            return
        if self._size <= MAX_RECORDED_BYTES:
            self._parts.append(chunk)
            self._size += len(chunk)
        self._tail = (self._tail + chunk)[-len(self._END):]
        if self._tail == self._END:
            self.finished()

    def finished(self) -> None:
        if self._done:
            return
        self._done = True
        if self._size > MAX_RECORDED_BYTES:
            log.info("a stream of over %d bytes was relayed but not cached", MAX_RECORDED_BYTES)
            return
        self._on_complete(b"".join(self._parts))


async def relay_and_record(
    state: GatewayState, request: web.Request, raw: bytes, headers: Any, key: str
) -> web.StreamResponse:
    """Relay a cacheable stream that missed (X-Cache: MISS) and store it if it completes."""

    def store(recorded: bytes) -> None:
        entry = StoredAnswer.from_stream(recorded)
        if entry is None:
            log.info("a stream that did not end cleanly was not cached",
                     extra={"request_id": request.get("request_id")})
            return
        state.cache.set_in_background(key, entry.to_bytes())

    return await state.upstream.stream(request, raw, headers, "MISS", recorder=StreamTee(store))
