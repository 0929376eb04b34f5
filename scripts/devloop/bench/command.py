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
import os
import sys
from pathlib import Path

from devloop.bench import plot
from devloop.bench.client import BenchConfig, base_url
from devloop.bench.driver import run_benchmark
from devloop.bench.stats import LevelSummary, format_table
from devloop.common.errors import UsageError


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


def _add_workload_options(parser: argparse.ArgumentParser) -> None:
    """What each request looks like: lengths, prompts, endpoint, the fields that fix the length."""
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
        help="also send min_tokens = --output-len, which some servers without ignore_eos "
        "honour, so they too generate exactly --output-len tokens (vLLM and llama-server "
        "take ignore_eos)",
    )
    parser.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="do not size prompts with the server's /tokenize",
    )


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
    _add_workload_options(parser)
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
        plot.require_matplotlib()
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
        plot.write_plot(report, Path(args.plot))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0 if all(s.failed == 0 for s in summaries) else 1
