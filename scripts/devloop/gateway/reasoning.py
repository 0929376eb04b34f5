"""The reasoning contract: a thinking model's thoughts reach clients under both names, whichever
engine served them. Pure functions over parsed JSON, no I/O.

vLLM 0.32 with --reasoning-parser puts them in `reasoning` (it renamed `reasoning_content`);
llama-server with --reasoning-format deepseek in `reasoning_content`. Clients are written
against one or the other (the OpenAI SDK passes unknown fields through; DeepSeek's API and
most UIs read `reasoning_content`, vLLM's newer docs `reasoning`). So the gateway gives both:

- a chat answer's `choices[].message`, and each streamed chunk's `choices[].delta`, that has a
  non-empty string under either name gets the same string under the other (a delta carries its
  own piece: joined, each name gives the whole thought);
- nothing is added where the engine separated no thinking (no null fields appear);
- `content` is never touched: it holds the answer only, as both engines send it.

docs/llamacpp.md (Reasoning) is the client-facing statement of this contract.
"""

from __future__ import annotations

import json
from typing import Any

NAMES = ("reasoning_content", "reasoning")
SSE_PREFIX = b"data:"


def _mirror(part: Any) -> bool:
    """Give `part` (a message or a delta) both names; whether it changed."""
    if not isinstance(part, dict):
        return False
    text = next((part[name] for name in NAMES if isinstance(part.get(name), str) and part[name]),
                None)
    if text is None or all(part.get(name) == text for name in NAMES):
        return False
    for name in NAMES:
        part[name] = text
    return True


def normalize_body(body: Any) -> bool:
    """Apply the contract in place to a chat completion or one streamed chunk (parsed JSON);
    whether anything changed."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        return False
    changed = False
    for choice in body["choices"]:
        if isinstance(choice, dict):
            for key in ("message", "delta"):
                changed = _mirror(choice.get(key)) or changed
    return changed


def normalize_json_bytes(raw: bytes) -> bytes:
    """A whole JSON answer's bytes under the contract; the same bytes when nothing changes (an
    error body, a completion, a non-thinking answer) or when they are not JSON."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw
    return json.dumps(body, ensure_ascii=False).encode() if normalize_body(body) else raw


def normalize_sse_line(line: bytes) -> bytes:
    """One line of an event stream under the contract: `data: {json}` lines are rewritten when
    they carry reasoning, every other line ([DONE], comments, blank) passes unchanged. The line
    ending is kept."""
    stripped = line.rstrip(b"\r\n")
    if not stripped.startswith(SSE_PREFIX):
        return line
    payload = stripped[len(SSE_PREFIX):].lstrip()
    try:
        chunk = json.loads(payload)
    except ValueError:
        return line
    if not normalize_body(chunk):
        return line
    ending = line[len(stripped):]
    return SSE_PREFIX + b" " + json.dumps(chunk, ensure_ascii=False).encode() + ending


class StreamNormalizer:
    """normalize_sse_line over a relayed stream that arrives in arbitrary pieces: complete lines
    go out rewritten, a partial line waits for its end (an engine sends each event whole, so the
    wait is within one network read)."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._partial + chunk
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if not cut:
            return b""
        return b"".join(normalize_sse_line(line) for line in data[:cut].splitlines(keepends=True))

    def flush(self) -> bytes:
        """What is left when the stream ends: a last line without its newline, as it came."""
        rest, self._partial = self._partial, b""
        return normalize_sse_line(rest) if rest else b""
