"""Driving a server through `devloop bench`'s load levels: fresh prompts per level, warm-up,
concurrency limit and Poisson pacing, progress on stderr; the report as a JSON-ready dict."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TextIO

from devloop import __version__
from devloop.bench.client import BenchConfig, Client, base_url
from devloop.bench.stats import LevelSummary, RequestResult, summarize
from devloop.common.errors import DevloopError

KEEPALIVE_S = 2.0  # seconds an idle connection is kept for reuse


class Progress:
    """One line on stderr: a redrawn bar on a terminal, a line per tenth in a log."""

    def __init__(self, label: str, total: int, stream: TextIO = sys.stderr) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.done = self.failed = 0
        self.start = time.perf_counter()
        self.tty = stream.isatty()
        self._last_tenth = -1

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        tenth = self.done * 10 // max(self.total, 1)
        if self.tty:
            self._draw("\r")
        elif tenth != self._last_tenth:
            self._draw("")
            self.stream.write("\n")
        self._last_tenth = tenth
        if self.tty and self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()

    def _draw(self, prefix: str) -> None:
        width = 30
        filled = width * self.done // max(self.total, 1)
        elapsed = time.perf_counter() - self.start
        self.stream.write(
            f"{prefix}{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} done, {self.failed} failed, {elapsed:.1f} s"
        )


async def run_level(
    client: Client,
    model: str,
    prompts: Sequence[str],
    concurrency: int | None,
    request_rate: float | None,
    rng: random.Random,
    on_done: Callable[[bool], None] | None = None,
) -> tuple[list[RequestResult], float]:
    """Send every prompt, at most `concurrency` in flight, arrivals paced as a Poisson process
    of `request_rate` per second when one is given (as vLLM's benchmark does). Returns the
    results and the wall time from the first send to the last answer."""
    limit = asyncio.Semaphore(concurrency or len(prompts) or 1)

    async def one(prompt: str) -> RequestResult:
        async with limit:
            result = await client.send(model, prompt)
        if on_done:
            on_done(result.ok)
        return result

    start = time.perf_counter()
    tasks = []
    for prompt in prompts:
        tasks.append(asyncio.create_task(one(prompt)))
        if request_rate is not None:
            await asyncio.sleep(rng.expovariate(request_rate))
    results = await asyncio.gather(*tasks)
    return list(results), time.perf_counter() - start


async def _connect(client: Client) -> tuple[str, bool]:
    """The model to send and whether prompts can be sized with the server's tokenizer."""
    import aiohttp

    config = client.config
    try:
        model = config.model or await client.discover_model()
        calibrated = False
        if config.calibrate and config.api == "completions":
            calibrated = await client.count_tokens(model, "hello") is not None
    except aiohttp.ClientError as error:
        raise DevloopError(
            f"cannot reach {client.root}: {error}; is the server up and --url right?"
        ) from None
    return model, calibrated


async def _measure_level(client: Client, model: str, calibrated: bool, index: int,
                         concurrency: int | None, rate: float | None, counts: set[int],
                         log: TextIO) -> LevelSummary:
    """One load level: its own prompts (their token counts added to `counts`), the warm-up,
    then the measured requests."""
    config = client.config
    # One generator per level, from the seed: a level's prompts do not depend on the levels
    # before it, and no prompt repeats across levels (prefix cache).
    rng = random.Random(f"{config.seed}:{index}")
    label = f"concurrency {concurrency or 'unlimited'}" + (f", {rate:g} req/s" if rate else "")
    made = [
        await client.make_prompt(model, rng, calibrated)
        for _ in range(config.warmup + config.num_prompts)
    ]
    prompts = [text for text, _ in made]
    counts.update(count for _, count in made if count is not None)
    if config.warmup:
        print(f"{label}: {config.warmup} warm-up requests", file=log)
        warm, _ = await run_level(client, model, prompts[: config.warmup], concurrency, None, rng)
        failed = [r for r in warm if not r.ok]
        if len(failed) == len(warm):
            raise DevloopError(
                f"every warm-up request failed ({failed[0].error_kind}: "
                f"{failed[0].error}); check --url, --model and the server's log"
            )
    progress = Progress(label, config.num_prompts, log)
    results, duration = await run_level(
        client, model, prompts[config.warmup :], concurrency, rate, rng, progress.update
    )
    return summarize(results, duration, concurrency, rate)


async def run_benchmark(config: BenchConfig, log: TextIO = sys.stderr) -> dict[str, Any]:
    """Every load level of `config` against the server; the report as a JSON-ready dict."""
    try:
        import aiohttp
    except ImportError:
        raise DevloopError("devloop bench needs aiohttp: .venv/bin/pip install aiohttp") from None

    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    # limit=0: the connector must not cap concurrency below what the user asked for. Idle
    # connections are dropped after KEEPALIVE_S, before the server closes them (vLLM's uvicorn
    # and llama-server's httplib after 5 s): reusing one the server closed fails at once with
    # ServerDisconnectedError.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        client = Client(config, session)
        model, calibrated = await _connect(client)
        if not calibrated:
            print(
                "devloop bench: no /tokenize on this server (or --api chat): prompts are "
                f"{config.input_len} words, about as many tokens; the report uses the "
                "server's counts",
                file=log,
            )
        counts: set[int] = set()  # token counts of the calibrated prompts
        summaries = [
            await _measure_level(client, model, calibrated, index, concurrency, rate, counts, log)
            for index, (concurrency, rate) in enumerate(config.levels())
        ]
    return {
        "tool": "devloop bench",
        "version": __version__,
        "url": base_url(config.url),
        "model": model,
        "prompt_lengths": _describe_lengths(config.input_len, counts if calibrated else None),
        "config": {k: v for k, v in asdict(config).items() if k != "api_key"},
        "levels": [s.to_dict() for s in summaries],
    }


def _describe_lengths(target: int, counts: set[int] | None) -> str:
    if counts is None:
        return "approximate (no /tokenize: one word taken as one token)"
    if counts == {target}:
        return "exact (calibrated with /tokenize)"
    # A tokenizer whose smallest step over the target is several tokens cannot hit it exactly.
    return f"calibrated with /tokenize to {min(counts)}-{max(counts)} tokens"
