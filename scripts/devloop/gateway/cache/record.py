"""A stored answer: what the cache keeps for one request, and how it is handed out again.

An entry holds the answer in the form it arrived in, as JSON bytes:

    {"form": "json",   "stored_at": T, "body":   {...}}         a whole answer, as the engine sent it
    {"form": "stream", "stored_at": T, "chunks": [{...}, ...]}  every event of a complete stream
                                                                 (the final [DONE] implied)

and answers a request in either form: a stream is replayed chunk for chunk (the usage chunk only
when `stream_options.include_usage` asks for it) or assembled into the whole answer
(assemble.py); a whole answer is served as is or cut into vLLM's chunks (synthesize.py).

Every answer handed out gets a fresh `id` (the engine's prefix and this request's id, which is
what vLLM itself names a request sent with an X-Request-ID) and a fresh `created`; the stored
ones stay in the entry (the gateway sends the original id as X-Cache-Original-Id).

Only complete answers become entries: a stream that carries an error event, lacks its final
[DONE], breaks off mid-event or leaves a choice without a finish_reason is refused (None).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from devloop.gateway.cache import assemble, synthesize
from devloop.gateway.cache.sse import DONE, event_data, format_event


def dumps(value: Any) -> str:
    """JSON as vLLM (pydantic's model_dump_json) writes it: compact, UTF-8 kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class StoredAnswer:
    form: str  # "json" or "stream"
    body: dict[str, Any] | None = None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    stored_at: float = field(default_factory=time.time)

    # -- building and (de)serialising --------------------------------------------------------

    @classmethod
    def from_json_answer(cls, payload: bytes) -> StoredAnswer | None:
        """A whole answer, or None when it is not a JSON object with choices."""
        try:
            body = json.loads(payload)
        except (ValueError, RecursionError):
            return None
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            return None
        return cls("json", body=body)

    @classmethod
    def from_stream(cls, raw: bytes) -> StoredAnswer | None:
        """A complete stream's chunks, or None for anything short of one (see the docstring)."""
        events, on_boundary = event_data(raw)
        if not on_boundary or not events or events[-1] != DONE or DONE in events[:-1]:
            return None
        chunks = []
        for data in events[:-1]:
            try:
                chunk = json.loads(data)
            except (ValueError, RecursionError):
                return None
            if not isinstance(chunk, dict) or "error" in chunk:
                return None  # vLLM reports a failure mid-stream as an error event, then [DONE]
            chunks.append(chunk)
        if not chunks or not _every_choice_finished(chunks):
            return None
        return cls("stream", chunks=chunks)

    def to_bytes(self) -> bytes:
        value: dict[str, Any] = {"form": self.form, "stored_at": self.stored_at}
        if self.form == "json":
            value["body"] = self.body
        else:
            value["chunks"] = self.chunks
        return dumps(value).encode()

    @classmethod
    def from_bytes(cls, value: bytes) -> StoredAnswer | None:
        """The entry, or None when it is not one (a foreign or damaged value: a miss)."""
        try:
            entry = json.loads(value)
            form = entry["form"]
            if form == "json" and isinstance(entry["body"], dict):
                return cls("json", body=entry["body"], stored_at=float(entry["stored_at"]))
            if form == "stream" and isinstance(entry["chunks"], list):
                return cls("stream", chunks=entry["chunks"], stored_at=float(entry["stored_at"]))
        except (ValueError, KeyError, TypeError, RecursionError):
            pass
        return None

    # -- what it can answer ------------------------------------------------------------------

    @property
    def original_id(self) -> str | None:
        source = self.body if self.form == "json" else (self.chunks[0] if self.chunks else {})
        value = (source or {}).get("id")
        return value if isinstance(value, str) else None

    def age_seconds(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.stored_at)

    def _usage(self) -> dict[str, Any] | None:
        if self.form == "json":
            usage = (self.body or {}).get("usage")
        else:
            usage = next((c["usage"] for c in self.chunks if c.get("usage")), None)
        return usage if isinstance(usage, dict) else None

    def can_answer(self, stream: bool, include_usage: bool) -> bool:
        """Whether this entry holds everything the requested form shows. A whole answer needs
        the token usage, which a stream carries only when its request asked for it: a stream
        stored without usage answers later streams without usage, and the first request that
        needs usage goes to the engine (its answer then replaces the entry)."""
        needs_usage = (stream and include_usage) or (not stream and self.form == "stream")
        return not needs_usage or self._usage() is not None

    # -- the two forms -----------------------------------------------------------------------

    def render_json(self, fresh_id: str, created: int) -> bytes:
        body = self.body if self.form == "json" else assemble.whole_answer(self.chunks)
        assert body is not None
        return dumps(_restamped(body, fresh_id, created)).encode()

    def render_stream(self, fresh_id: str, created: int, include_usage: bool) -> bytes:
        if self.form == "stream":
            chunks = synthesize.as_requested(self.chunks, include_usage)
        else:
            assert self.body is not None
            chunks = synthesize.stream_chunks(self.body, include_usage)
        parts = [format_event(dumps(_restamped(chunk, fresh_id, created))) for chunk in chunks]
        parts.append(format_event(DONE))
        return b"".join(parts)


def fresh_id(original: str | None, request_id: str, chat: bool) -> str:
    """`<prefix>-<request id>`: the engine's own prefix (cmpl, chatcmpl) and this request's id,
    exactly what vLLM names a request that arrives with that X-Request-ID."""
    if original and "-" in original:
        prefix = original.split("-", 1)[0]
    else:
        prefix = "chatcmpl" if chat else "cmpl"
    return f"{prefix}-{request_id}"


def _restamped(value: dict[str, Any], new_id: str, created: int) -> dict[str, Any]:
    """`value` with its id and created replaced (neither is added where the engine sent none)."""
    out = dict(value)
    if "id" in out:
        out["id"] = new_id
    if "created" in out:
        out["created"] = created
    return out


def _every_choice_finished(chunks: list[dict[str, Any]]) -> bool:
    seen: dict[int, bool] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                return False
            index = choice.get("index", 0)
            seen[index] = seen.get(index, False) or choice.get("finish_reason") is not None
    return bool(seen) and all(seen.values())
