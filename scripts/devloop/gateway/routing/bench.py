"""`devloop routing-bench`: affinity against round robin over the same engine replicas, side by
side in one run.

For each policy a gateway (`devloop gateway --routing-policy P`, no Redis, cache off) is started
over the replicas given with --upstream, and a multi-turn chat workload goes through it:
--conversations conversations at once, each --turns turns, every turn streamed and sending the
whole conversation so far (as chat UIs do). The policies alternate for --rounds rounds, each
round with fresh conversations (so no policy finds the other's prefixes cached). Measured:

- vLLM's own prefix-cache hit rate over the run: the deltas of `vllm:prefix_cache_hits_total` /
  `vllm:prefix_cache_queries_total` (tokens) summed over the replicas' /metrics;
- TTFT (request sent to first streamed token) per turn, client side; the later turns are where
  a replica that holds the conversation's prefix answers sooner.

Prints a table to stderr and JSON to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devloop.common.errors import DevloopError, UsageError
from devloop.common.ports import free_port, wait_until_listening
from devloop.common.stats import percentile

HITS, QUERIES = "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"
COMPARED = ("affinity", "round-robin")
_WORDS = ("river", "stone", "cloud", "lamp", "garden", "engine", "window", "letter", "forest",
          "market", "signal", "harbor", "violet", "copper", "meadow", "thread")


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "routing-bench",
        help="measure the gateway's affinity routing against round robin over engine replicas",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    add = parser.add_argument
    add("--upstream", action="append", required=True, metavar="URL",
        help="an engine replica (repeat: at least two of the same model)")
    add("--model", help="the model to request (default: the first of the first replica's)")
    add("--conversations", type=int, default=4, help="conversations at once (default 4)")
    add("--turns", type=int, default=4, help="turns per conversation (default 4)")
    add("--rounds", type=int, default=2, help="rounds of each policy, alternating (default 2)")
    add("--opening-words", type=int, default=200,
        help="words in a conversation's first message: its own long prefix (default 200)")
    add("--max-tokens", type=int, default=16, help="tokens per answer (default 16)")
    add("--seed", type=int, default=0, help="seed of the conversations' text (default 0)")
    parser.set_defaults(handler=run)


def _scrape(url: str) -> dict[str, float]:
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(url + "/metrics", timeout=10).text
    totals = {HITS: 0.0, QUERIES: 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals


def _prefix_counters(upstreams: list[str]) -> dict[str, float]:
    totals = {HITS: 0.0, QUERIES: 0.0}
    for url in upstreams:
        for name, value in _scrape(url).items():
            totals[name] += value
    return totals


async def _turn(session: Any, url: str, body: dict[str, Any]) -> tuple[float, str]:
    """One streamed chat turn: (TTFT seconds, the answer's text)."""
    started = time.perf_counter()
    ttft, text = None, []
    async with session.post(url + "/v1/chat/completions", json=body) as response:
        if response.status != 200:
            raise DevloopError(f"the gateway answered {response.status}: "
                               f"{(await response.text())[:300]}")
        async for line in response.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    text.append(piece)
    return (ttft if ttft is not None else time.perf_counter() - started), "".join(text)


async def _conversation(session: Any, url: str, args: argparse.Namespace, rng: random.Random,
                        ttfts: list[list[float]]) -> None:
    opening = " ".join(rng.choice(_WORDS) for _ in range(args.opening_words))
    messages = [{"role": "user", "content": f"Remember these words: {opening}"}]
    for turn in range(args.turns):
        body = {"model": args.model, "messages": messages, "max_tokens": args.max_tokens,
                "temperature": 0.8, "stream": True}
        ttft, answer = await _turn(session, url, body)
        ttfts[turn].append(ttft)
        messages = [*messages, {"role": "assistant", "content": answer or "ok"},
                    {"role": "user", "content": f"Turn {turn + 2}: which word was "
                                                f"{rng.choice(_WORDS)}?"}]


async def _workload(url: str, args: argparse.Namespace, seed: int) -> list[list[float]]:
    import aiohttp

    ttfts: list[list[float]] = [[] for _ in range(args.turns)]
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(
            _conversation(session, url, args, random.Random(seed * 1000 + index), ttfts)
            for index in range(args.conversations)
        ))
    return ttfts


def _start_gateway(policy: str, upstreams: list[str], log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    argv = [sys.executable, "-m", "devloop", "gateway", "--host", "127.0.0.1", "--port", str(port),
            "--admin-port", "0", "--redis-url", "", "--cache-policy", "none",
            "--routing-policy", policy, "--upstream-health-interval-seconds", "1"]
    for upstream in upstreams:
        argv += ["--upstream", upstream]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    wait_until_listening(port, process, timeout=60)
    return process, f"http://127.0.0.1:{port}"


def _summary(ttfts: list[list[float]], before: dict[str, float], after: dict[str, float]
             ) -> dict[str, Any]:
    queries = after[QUERIES] - before[QUERIES]
    hits = after[HITS] - before[HITS]
    later = [value for turn in ttfts[1:] for value in turn]
    return {
        "prefix_cache_queries_tokens": queries,
        "prefix_cache_hits_tokens": hits,
        "prefix_cache_hit_rate": round(hits / queries, 4) if queries else None,
        "ttft_p50_ms_by_turn": [round(percentile(turn, 50) * 1000, 1) for turn in ttfts],
        "ttft_p50_ms_later_turns": round(percentile(later, 50) * 1000, 1) if later else None,
        "ttft_p90_ms_later_turns": round(percentile(later, 90) * 1000, 1) if later else None,
        "requests": sum(len(turn) for turn in ttfts),
    }


def _table(result: dict[str, Any]) -> str:
    header = (f"{'policy':<12} {'hit rate':>9} {'TTFT p50 later turns':>21} {'p90':>8}  "
              "TTFT p50 by turn (ms)")
    lines = [header]
    for policy in COMPARED:
        row = result["policies"][policy]
        rate = row["prefix_cache_hit_rate"]
        lines.append(
            f"{policy:<12} {('-' if rate is None else f'{rate:.1%}'):>9} "
            f"{row['ttft_p50_ms_later_turns']!s:>18} ms {row['ttft_p90_ms_later_turns']!s:>8}  "
            + " ".join(str(v) for v in row["ttft_p50_ms_by_turn"])
        )
    ratio = result.get("ttft_later_turns_ratio_round_robin_over_affinity")
    lines.append(f"round-robin / affinity TTFT p50 (later turns): {ratio}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import tempfile

    import requests

    upstreams = [url.rstrip("/") for url in args.upstream]
    if len(upstreams) < 2:
        raise UsageError("give at least two replicas of one model: --upstream A --upstream B")
    for value, flag in ((args.conversations, "--conversations"), (args.turns, "--turns"),
                        (args.rounds, "--rounds")):
        if value < 1:
            raise UsageError(f"{flag} is {value}; give at least 1")
    try:
        args.model = args.model or requests.get(
            upstreams[0] + "/v1/models", timeout=10).json()["data"][0]["id"]
        _prefix_counters(upstreams)
    except (requests.RequestException, KeyError, IndexError, ValueError) as error:
        raise DevloopError(f"cannot read the replicas' /v1/models and /metrics ({error}); "
                           "start them first (docs/routing.md)") from None
    ttfts = {policy: [[] for _ in range(args.turns)] for policy in COMPARED}
    counters = {policy: {HITS: 0.0, QUERIES: 0.0} for policy in COMPARED}
    workdir = Path(tempfile.mkdtemp(prefix="devloop-routingbench-"))
    gateways = {policy: _start_gateway(policy, upstreams, workdir / f"{policy}.log")
                for policy in COMPARED}
    try:
        for round_index in range(args.rounds):
            for offset, policy in enumerate(COMPARED):
                print(f"round {round_index + 1}: {policy} ...", file=sys.stderr)
                before = _prefix_counters(upstreams)
                seed = args.seed * 100 + round_index * len(COMPARED) + offset
                for turn, values in enumerate(asyncio.run(
                        _workload(gateways[policy][1], args, seed))):
                    ttfts[policy][turn].extend(values)
                after = _prefix_counters(upstreams)
                for name in (HITS, QUERIES):
                    counters[policy][name] += after[name] - before[name]
    finally:
        for process, _url in gateways.values():
            process.terminate()
            process.wait(timeout=30)
    zero = {HITS: 0.0, QUERIES: 0.0}
    result: dict[str, Any] = {
        "upstreams": upstreams, "model": args.model, "conversations": args.conversations,
        "turns": args.turns, "rounds": args.rounds, "opening_words": args.opening_words,
        "max_tokens": args.max_tokens,
        "policies": {policy: _summary(ttfts[policy], zero, counters[policy])
                     for policy in COMPARED},
    }
    affinity = result["policies"]["affinity"]["ttft_p50_ms_later_turns"]
    baseline = result["policies"]["round-robin"]["ttft_p50_ms_later_turns"]
    if affinity and baseline:
        result["ttft_later_turns_ratio_round_robin_over_affinity"] = round(baseline / affinity, 3)
    print(_table(result), file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0
