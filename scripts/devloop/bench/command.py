"""`devloop bench`: load-test any OpenAI-compatible server (vLLM, the caching gateway, a
port-forward) and report throughput, TTFT, TPOT, inter-token and end-to-end latency.

It streams every request so the first token and each later one are timed as they arrive, with
the definitions of vLLM's own `vllm bench serve` (devloop.bench.stats). The dataset is random
words generated from the seed, no download. Each load level gets prompts of its own: vLLM caches
prefixes, and a prompt seen at an earlier level would answer its first token from that cache.
When the server has vLLM's /tokenize endpoint, each prompt is grown or trimmed until it is
exactly --input-len tokens long; elsewhere a word is taken as one token and the report says the
lengths are approximate (the server's own count, from `usage`, is what the report uses).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from devloop import __version__
from devloop.bench.stats import LevelSummary, RequestResult, format_table, summarize
from devloop.common.errors import DevloopError, UsageError

# Short, frequent English words: a BPE tokenizer (Qwen, Llama, GPT) encodes each, with its
# leading space, as one token, so a prompt of N words starts close to N tokens.
WORDS = (
    "the of and to in is was for on that with as by at from his her are be this had not but "
    "they have it one which you were all we when there can an their more if been has would who "
    "will so no out up into them some could time these two may first then do any like my now "
    "over such our man me even most made after also did many before must through back years "
    "where much your way well down should because each just those people how too little state "
    "good very make world still own see men work long get here between both life being under "
    "never day same another know while last might us great old year off come since against go "
    "came right used take three house use during without again place around however home small "
    "found thought went say part once general high upon school every far light water city true "
    "point number hand show side hold tree river sound word line open book paper green stone"
).split()


@dataclass
class BenchConfig:
    """One benchmark run: every load level uses the same workload shape."""

    url: str
    model: str | None = None
    concurrency: list[int | None] = field(default_factory=lambda: [1])
    request_rates: list[float | None] = field(default_factory=lambda: [None])  # None: no pacing
    input_len: int = 128
    output_len: int = 128
    num_prompts: int = 32
    warmup: int = 1
    seed: int = 0
    api: str = "completions"  # or "chat"
    ignore_eos: bool = True
    min_tokens: bool = False  # also send min_tokens=output_len
    temperature: float = 0.0
    timeout_s: float = 600.0
    api_key: str | None = None
    calibrate: bool = True

    def levels(self) -> list[tuple[int | None, float | None]]:
        return [(c, r) for c in self.concurrency for r in self.request_rates]


def parse_int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(
            f"{name} takes comma-separated whole numbers like 1,4,8, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{name} values must be 1 or more, got {text!r}")
    return values


def parse_rate_list(text: str) -> list[float | None]:
    rates: list[float | None] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part.lower() == "inf":
            rates.append(None)
            continue
        try:
            rate = float(part)
        except ValueError:
            raise UsageError(
                f"--request-rate takes requests per second like 2 or 0.5,1,inf, got {text!r}"
            ) from None
        if not rate > 0 or math.isinf(rate):
            raise UsageError(f"--request-rate values must be positive (or inf), got {part!r}")
        rates.append(rate)
    if not rates:
        raise UsageError("--request-rate needs at least one value")
    return rates


def base_url(url: str) -> str:
    """The server root: users paste http://host:8000, .../v1 or .../v1/ alike."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url must start with http:// or https://, got {url!r}")
    return url.removesuffix("/v1")


def random_words(rng: random.Random, count: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(count)]


class SSEParser:
    """Splits a text/event-stream into the payloads of its `data:` lines, whatever the network
    chunking: an event may arrive in pieces, or several in one read."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        payloads = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                payloads.append(line[5:].strip().decode("utf-8"))
        return payloads


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


class Client:
    """The HTTP side: one aiohttp session, the request bodies, and the timing of each stream."""

    def __init__(self, config: BenchConfig, session: Any) -> None:
        self.config = config
        self.session = session
        self.root = base_url(config.url)
        self.headers = {"Content-Type": "application/json"}
        if config.api_key:
            self.headers["Authorization"] = f"Bearer {config.api_key}"

    async def discover_model(self) -> str:
        async with self.session.get(f"{self.root}/v1/models", headers=self.headers) as resp:
            if resp.status != 200:
                raise DevloopError(
                    f"GET {self.root}/v1/models answered {resp.status}: pass --model NAME "
                    "or check --url and --api-key"
                )
            body = await resp.json()
        models = [m["id"] for m in body.get("data", [])]
        if not models:
            raise DevloopError(f"{self.root}/v1/models lists no model: pass --model NAME")
        return models[0]

    async def count_tokens(self, model: str, text: str) -> int | None:
        """The server's token count for a completions prompt (special tokens included, as the
        server counts them): vLLM's /tokenize, else llama-cpp-python's /extras/tokenize; None
        when the server has neither."""
        for path, payload, key in (
            ("/tokenize", {"model": model, "prompt": text}, "count"),
            ("/extras/tokenize", {"model": model, "input": text}, "tokens"),
        ):
            async with self.session.post(
                f"{self.root}{path}", json=payload, headers=self.headers
            ) as resp:
                if resp.status != 200:
                    continue
                body = await resp.json()
            count = body.get(key)
            count = len(count) if isinstance(count, list) else count
            return count if isinstance(count, int) else None
        return None

    async def make_prompt(
        self, model: str, rng: random.Random, calibrated: bool
    ) -> tuple[str, int | None]:
        """A random prompt and its token count by the server's tokenizer (None uncalibrated).

        Calibrated, it is the longest prefix of a random word sequence that has at most
        --input-len tokens, found by bisection over its characters: a tokenizer may split a
        word into several tokens (small or byte-level vocabularies do), so word counts cannot
        be steered reliably, while a character prefix can stop inside a word."""
        target = self.config.input_len
        words = random_words(rng, target)
        if not calibrated:
            return " ".join(words), None
        text = " ".join(words)
        count = await self.count_tokens(model, text)
        # Grow until the text is long enough; a tokenizer gives at least one token per word
        # only roughly, so double rather than add.
        while count is not None and count < target:
            words += random_words(rng, len(words))
            text = " ".join(words)
            count = await self.count_tokens(model, text)
        if count is None:
            return text, None
        if count == target:
            return text, count
        low, high = 1, len(text)  # count(text[:low]) <= target < count(text[:high])
        low_count = await self.count_tokens(model, text[:1]) or 0
        while high - low > 1:
            middle = (low + high) // 2
            middle_count = await self.count_tokens(model, text[:middle])
            if middle_count is None:
                return text[:low], low_count
            if middle_count <= target:
                low, low_count = middle, middle_count
            else:
                high = middle
        return text[:low], low_count

    def payload(self, model: str, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": self.config.output_len,
            "temperature": self.config.temperature,
            "stream": True,
            # The last chunk then carries the server's own token counts.
            "stream_options": {"include_usage": True},
        }
        if self.config.ignore_eos:
            # vLLM's extension: generate exactly max_tokens, so every request does the same work.
            body["ignore_eos"] = True
        if self.config.min_tokens:
            # The same for servers without ignore_eos (llama-cpp-python): no end before the end.
            body["min_tokens"] = self.config.output_len
        if self.config.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    async def send(self, model: str, prompt: str) -> RequestResult:
        import aiohttp

        path = "/v1/chat/completions" if self.config.api == "chat" else "/v1/completions"
        result = RequestResult(ok=False, prompt_tokens=self.config.input_len)
        chunks = 0
        start = time.perf_counter()
        last = start
        try:
            async with self.session.post(
                f"{self.root}{path}", json=self.payload(model, prompt), headers=self.headers
            ) as resp:
                if resp.status != 200:
                    body = (await resp.text())[:300]
                    return _failed(result, f"http_{resp.status}", body)
                parser = SSEParser()
                async for raw in resp.content.iter_any():
                    now = time.perf_counter()
                    for data in parser.feed(raw):
                        if data == "[DONE]":
                            continue
                        event = json.loads(data)
                        if "error" in event:
                            return _failed(result, "server_error", json.dumps(event["error"])[:300])
                        if event.get("choices"):
                            if chunks == 0:
                                result.ttft = now - start
                            else:
                                result.itl.append(now - last)
                            last = now
                            chunks += 1
                        usage = event.get("usage")
                        if usage:
                            result.prompt_tokens = usage.get("prompt_tokens", result.prompt_tokens)
                            result.output_tokens = usage.get("completion_tokens", 0)
                result.e2e = time.perf_counter() - start
        except asyncio.TimeoutError:
            return _failed(
                result, "timeout", f"no complete answer within {self.config.timeout_s:g} s"
            )
        except aiohttp.ClientPayloadError as error:
            return _failed(result, "stream_broken", str(error))
        except aiohttp.ClientError as error:
            return _failed(result, "connection", f"{type(error).__name__}: {error}")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return _failed(result, "invalid_response", str(error))
        if chunks == 0:
            return _failed(result, "empty_response", "the stream ended before any token")
        if result.output_tokens == 0:
            # No usage from this server: one streamed chunk per token is the best estimate.
            result.output_tokens = chunks
        result.ok = True
        return result


def _failed(result: RequestResult, kind: str, message: str) -> RequestResult:
    result.ok = False
    result.error_kind = kind
    result.error = message.strip().splitlines()[0] if message.strip() else kind
    return result


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


async def run_benchmark(config: BenchConfig, log: TextIO = sys.stderr) -> dict[str, Any]:
    """Every load level of `config` against the server; the report as a JSON-ready dict."""
    try:
        import aiohttp
    except ImportError:
        raise DevloopError("devloop bench needs aiohttp: .venv/bin/pip install aiohttp") from None

    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    # limit=0: the connector must not cap concurrency below what the user asked for.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        client = Client(config, session)
        try:
            model = config.model or await client.discover_model()
            calibrated = False
            if config.calibrate and config.api == "completions":
                calibrated = await client.count_tokens(model, "hello") is not None
        except aiohttp.ClientError as error:
            raise DevloopError(
                f"cannot reach {client.root}: {error}; is the server up and --url right?"
            ) from None
        if not calibrated:
            print(
                "devloop bench: no /tokenize on this server (or --api chat): prompts are "
                f"{config.input_len} words, about as many tokens; the report uses the "
                "server's counts",
                file=log,
            )
        summaries: list[LevelSummary] = []
        counts: set[int] = set()  # token counts of the calibrated prompts
        for index, (concurrency, rate) in enumerate(config.levels()):
            # One generator per level, from the seed: a level's prompts do not depend on the
            # levels before it, and no prompt repeats across levels (prefix cache).
            rng = random.Random(f"{config.seed}:{index}")
            label = f"concurrency {concurrency or 'unlimited'}" + (
                f", {rate:g} req/s" if rate else ""
            )
            made = [
                await client.make_prompt(model, rng, calibrated)
                for _ in range(config.warmup + config.num_prompts)
            ]
            prompts = [text for text, _ in made]
            counts.update(count for _, count in made if count is not None)
            if config.warmup:
                print(f"{label}: {config.warmup} warm-up requests", file=log)
                warm, _ = await run_level(
                    client, model, prompts[: config.warmup], concurrency, None, rng
                )
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
            summaries.append(summarize(results, duration, concurrency, rate))
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


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Latency and throughput against concurrency (or request rate when that is what varies)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed; the plot goes to a file
        import matplotlib.pyplot as plt
    except ImportError:
        raise DevloopError(
            "--plot needs matplotlib: .venv/bin/pip install matplotlib (or -e '.[plot]')"
        ) from None
    levels = report["levels"]
    by_rate = len({lv["concurrency"] for lv in levels}) == 1 and len(levels) > 1
    xs = [lv["request_rate"] if by_rate else lv["concurrency"] for lv in levels]
    xs = [x if x is not None else math.inf for x in xs]
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, name in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E")):
        for q, style in (("p50", "-o"), ("p99", "--x")):
            ys = [lv[key][q] if lv[key][q] is not None else math.nan for lv in levels]
            lat.plot(xs, ys, style, label=f"{name} {q}")
    lat.set_yscale("log")
    lat.set_ylabel("latency (ms)")
    thr.plot(xs, [lv["output_throughput"] for lv in levels], "-o", label="output tok/s")
    thr.set_ylabel("output tokens/s")
    req = thr.twinx()
    req.plot(
        xs, [lv["request_throughput"] for lv in levels], "--s", color="tab:orange", label="req/s"
    )
    req.set_ylabel("requests/s")
    for axis in (lat, thr):
        axis.set_xlabel("request rate (req/s)" if by_rate else "concurrency")
        axis.grid(True, alpha=0.3)
    lat.legend(fontsize=8)
    thr.legend(loc="upper left", fontsize=8)
    req.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"{report['model']} at {report['url']}: {report['config']['input_len']} in / "
        f"{report['config']['output_len']} out"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="load-test an OpenAI-compatible server: throughput, TTFT, TPOT, latency",
        description="Stream random prompts to an OpenAI-compatible server (vLLM, the gateway, a "
        "port-forward) at each concurrency and/or request rate, and print request and token "
        "throughput with TTFT, TPOT, inter-token and end-to-end latency percentiles. Exits 1 "
        "when any request failed (the table is printed all the same).",
    )
    parser.add_argument("--url", required=True, help="server root, e.g. http://localhost:8000")
    parser.add_argument("--model", help="model name to send (default: the first of /v1/models)")
    parser.add_argument(
        "--concurrency",
        help="comma-separated requests in flight, one load level each (default: 1, or "
        "unlimited when --request-rate is given)",
    )
    parser.add_argument(
        "--request-rate",
        help="comma-separated arrival rates in requests/s (Poisson), or inf (default: inf, "
        "send as fast as the concurrency allows)",
    )
    parser.add_argument("--input-len", type=int, default=128, help="prompt tokens (default 128)")
    parser.add_argument("--output-len", type=int, default=128, help="output tokens (default 128)")
    parser.add_argument("--num-prompts", type=int, default=32, help="measured requests per level")
    parser.add_argument(
        "--warmup", type=int, default=1, help="unmeasured requests before each level"
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset and arrival seed (default 0)")
    parser.add_argument(
        "--api",
        choices=("completions", "chat"),
        default="completions",
        help="which endpoint to drive (default: completions, whose prompt length is exact)",
    )
    parser.add_argument(
        "--no-ignore-eos",
        dest="ignore_eos",
        action="store_false",
        help="do not send vLLM's ignore_eos (for servers that reject unknown fields); "
        "outputs may then stop before --output-len",
    )
    parser.add_argument(
        "--min-tokens",
        action="store_true",
        help="also send min_tokens = --output-len, which servers without ignore_eos honour "
        "(llama-cpp-python), so they too generate exactly --output-len tokens",
    )
    parser.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="do not size prompts with the server's /tokenize",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument(
        "--api-key",
        default=None,
        help="bearer token for servers started with --api-key (default: $OPENAI_API_KEY)",
    )
    parser.add_argument("--json", dest="json_path", help="write the full report as JSON here")
    parser.add_argument("--plot", help="write a PNG of latency and throughput (needs matplotlib)")
    parser.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    import os

    for name in ("input_len", "output_len", "num_prompts"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be 1 or more")
    if args.warmup < 0:
        raise UsageError("--warmup must be 0 or more")
    rates = parse_rate_list(args.request_rate) if args.request_rate else [None]
    if args.concurrency:
        concurrency: list[int | None] = list(parse_int_list(args.concurrency, "--concurrency"))
    else:
        concurrency = [None] if args.request_rate else [1]
    base_url(args.url)  # reject a malformed URL before any work
    return BenchConfig(
        url=args.url,
        model=args.model,
        concurrency=concurrency,
        request_rates=rates,
        input_len=args.input_len,
        output_len=args.output_len,
        num_prompts=args.num_prompts,
        warmup=args.warmup,
        seed=args.seed,
        api=args.api,
        ignore_eos=args.ignore_eos,
        min_tokens=args.min_tokens,
        timeout_s=args.timeout,
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY"),
        calibrate=args.calibrate,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.plot:
        # Fail before a long run, not after it.
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise DevloopError(
                "--plot needs matplotlib: .venv/bin/pip install matplotlib (or -e '.[plot]')"
            ) from None
    report = asyncio.run(run_benchmark(config))
    summaries = [LevelSummary(**level) for level in report["levels"]]
    print(
        f"devloop bench: {report['model']} at {report['url']}, {config.input_len} in / "
        f"{config.output_len} out, {config.num_prompts} prompts per level, "
        f"prompt lengths {report['prompt_lengths']}"
    )
    print(format_table(summaries))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json_path}", file=sys.stderr)
    if args.plot:
        write_plot(report, Path(args.plot))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0 if all(s.failed == 0 for s in summaries) else 1
