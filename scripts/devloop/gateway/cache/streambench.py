"""`devloop cache bench --stream`: streamed answers, live and replayed, side by side in one run.

Each round sends four streams of `--stream-tokens` tokens (greedy, ignore_eos, a unique prompt
per path so no path reuses another's prefix cache), interleaved so every path sees the same
machine load:

  direct   straight to the engine
  relay    through a gateway that does not cache (--cache-policy none): the stream relayed as
           before stream caching existed
  miss     through the caching gateway, a first request: relayed and recorded into the cache
  hit      the same request again: replayed from the cache

For each: time to the first SSE event, to the first event carrying text, and to `data: [DONE]`.
miss against relay is what recording costs the live stream; hit against miss is what the cache
saves. Prints a table to stderr and JSON to stdout (with the rest of the bench).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from devloop.common.errors import DevloopError
from devloop.gateway.cache import loadgen

PATHS = ("direct", "relay", "miss", "hit")


async def _timed_stream(session: Any, url: str, body: dict[str, Any]) -> tuple[dict, str | None]:
    """(seconds to first event / first text / [DONE], X-Cache) of one streamed completion."""
    started = time.perf_counter()
    first_event = first_text = None
    async with session.post(url, json=body) as response:
        if response.status != 200:
            raise DevloopError(f"{url} answered {response.status}: {await response.text()}")
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            now = time.perf_counter() - started
            data = line[len(b"data: "):].strip()
            if first_event is None:
                first_event = now
            if data == b"[DONE]":
                return {"first_event": first_event, "first_text": first_text, "done": now}, (
                    response.headers.get("X-Cache"))
            choices = json.loads(data).get("choices") or []
            if first_text is None and any(choice.get("text") for choice in choices):
                first_text = now
    raise DevloopError(f"the stream from {url} ended without data: [DONE]")


async def stream_latency(
    upstream: str, relay: str, gateway: str, model: str, rounds: int, tokens: int
) -> dict[str, Any]:
    import aiohttp

    rng = random.Random(4321)
    samples: dict[str, dict[str, list[float]]] = {
        path: {"first_event": [], "first_text": [], "done": []} for path in PATHS
    }
    bases = {"direct": upstream, "relay": relay, "miss": gateway, "hit": gateway}

    def body() -> dict[str, Any]:
        return {"model": model, "prompt": f"{rng.randrange(10**12)} stream bench",
                "temperature": 0, "max_tokens": tokens, "ignore_eos": True, "stream": True}

    async with aiohttp.ClientSession() as session:
        for round_number in range(rounds + 2):  # two warm-up rounds, not counted
            shared = body()
            for path in PATHS:
                request = shared if path in ("miss", "hit") else body()
                timing, state = await _timed_stream(
                    session, bases[path] + "/v1/completions", request
                )
                expected = {"miss": "MISS", "hit": "HIT"}.get(path)
                if expected and state != expected:
                    raise DevloopError(f"the {path} stream said X-Cache: {state}, not {expected}")
                if round_number >= 2:
                    for name, seconds in timing.items():
                        if seconds is not None:
                            samples[path][name].append(seconds)
    result: dict[str, Any] = {"rounds": rounds, "tokens": tokens}
    for path in PATHS:
        result[path] = {name: loadgen.percentiles(values) for name, values in samples[path].items()
                        if values}
    result["ratios"] = {
        "miss_over_relay_first_text_p50": _ratio(result, "miss", "relay", "first_text"),
        "miss_over_relay_done_p50": _ratio(result, "miss", "relay", "done"),
        "hit_over_miss_done_p50": _ratio(result, "hit", "miss", "done"),
        "hit_over_miss_first_text_p50": _ratio(result, "hit", "miss", "first_text"),
    }
    return result


def _ratio(result: dict[str, Any], top: str, bottom: str, name: str) -> float | None:
    try:
        return round(result[top][name]["p50_ms"] / result[bottom][name]["p50_ms"], 4)
    except (KeyError, ZeroDivisionError):
        return None


def table(stream: dict[str, Any]) -> str:
    lines = [
        f"streams: {stream['rounds']} rounds of {stream['tokens']} tokens (ms)",
        (f"  {'path':8} {'first event p50':>16} {'first text p50':>15} {'p99':>8} "
        f"{'[DONE] p50':>11} {'p99':>8}"),
    ]
    for path in PATHS:
        row = stream[path]
        first, text, done = row["first_event"], row.get("first_text", {}), row["done"]
        lines.append(
            f"  {path:8} {first['p50_ms']:16.2f} {text.get('p50_ms', 0):15.2f} "
            f"{text.get('p99_ms', 0):8.2f} {done['p50_ms']:11.2f} {done['p99_ms']:8.2f}"
        )
    for name, value in stream["ratios"].items():
        lines.append(f"  {name:36} {value}")
    return "\n".join(lines)
