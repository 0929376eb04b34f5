"""Benchmark the caching gateway side by side with what it sits on, in one run:

  miss   added latency of a gateway miss versus calling the engine directly (alternating unique
         prompts, temperature 0, max_tokens 1). Two views: the difference of the client-side
         percentiles, and per request "total minus the engine time the gateway measured" (its
         Server-Timing header), which is not drowned in the engine's own jitter.
  hit    latency p50/p99 and requests/s at each concurrency for the local tier (a gateway with the
         default LRU) and the Redis tier (a gateway with CACHE_MAX_ENTRIES=0, so every hit is a
         Redis GET), plus the cache library's Redis-tier get() without HTTP.
  ceiling  `redis-benchmark -t get` at the same concurrencies and value size: what Redis itself does.
  --stream  instead: streamed answers direct, relayed by a non-caching gateway, missed (relayed
         and recorded) and hit (replayed), interleaved: time to first event, first text and
         [DONE] (devloop.gateway.cache.streambench).

Two gateways (devloop gateway) and, unless --redis-url is given, a private redis-server
are started and stopped by the benchmark. The load generator is an aiohttp client in this process,
so on a small machine it competes with the gateway for CPU: the numbers are a floor.
Prints a table to stderr and JSON to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlparse

from devloop.common.errors import DevloopError, UsageError
from devloop.common.ports import free_port as _free_port
from devloop.common.ports import wait_until_listening
from devloop.gateway.cache import loadgen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--upstream-url",
        default=os.environ.get("UPSTREAM_URL", "http://localhost:8000"),
        help="the vLLM server (default $UPSTREAM_URL or http://localhost:8000)",
    )
    parser.add_argument("--model", help="model name to request (default: the first of /v1/models)")
    parser.add_argument(
        "--redis-url", help="an existing Redis (default: start a private redis-server)"
    )
    parser.add_argument(
        "--concurrency", default="1,16,64", help="hit concurrencies (default 1,16,64)"
    )
    parser.add_argument(
        "--duration", type=float, default=3.0, help="seconds per hit measurement (default 3)"
    )
    parser.add_argument(
        "--misses",
        type=int,
        default=60,
        help="miss requests each way, direct and through the gateway (default 60)",
    )
    parser.add_argument(
        "--redis-benchmark-requests",
        type=int,
        default=100000,
        help="GETs per redis-benchmark run (default 100000)",
    )
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="hit load generator: wrk (C, like redis-benchmark; the fair comparison) or this "
        "process's aiohttp client (default: wrk when it is installed)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="measure streams instead: live (direct, relayed, recorded miss) against replayed hits",
    )
    parser.add_argument(
        "--stream-rounds", type=int, default=30, help="--stream: rounds of four streams (default 30)"
    )
    parser.add_argument(
        "--stream-tokens", type=int, default=32, help="--stream: tokens per stream (default 32)"
    )



def _random_prompt(rng: random.Random) -> str:
    words = ["alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "papa", "tango", "zulu"]
    # A unique number first, so no two prompts share a prefix the engine could reuse.
    return f"{rng.randrange(10**12)} " + " ".join(rng.choice(words) for _ in range(12))


async def _miss_overhead(
    upstream: str, gateway: str, model: str, count: int, gateway_pid: int
) -> dict[str, Any]:
    import aiohttp

    rng = random.Random(1234)
    direct: list[float] = []
    via: list[float] = []
    added: list[float] = []
    async with aiohttp.ClientSession() as session:

        async def call(base: str) -> tuple[float, Any]:
            body = {
                "model": model,
                "prompt": _random_prompt(rng),
                "temperature": 0,
                "max_tokens": 1,
            }
            started = time.perf_counter()
            async with session.post(base + "/v1/completions", json=body) as response:
                await response.read()
                elapsed = time.perf_counter() - started
                if response.status != 200:
                    raise DevloopError(f"{base} answered {response.status}; is --model right?")
                return elapsed, response.headers

        for _ in range(3):  # warm up both paths (connections, engine)
            await call(upstream)
            await call(gateway)
        # After the warm-up: the first requests import modules lazily and open connections.
        cpu_before = loadgen.cpu_seconds(gateway_pid)
        for _ in range(count):
            elapsed, _ = await call(upstream)
            direct.append(elapsed)
            elapsed, headers = await call(gateway)
            via.append(elapsed)
            if headers.get("X-Cache") != "MISS":
                raise DevloopError(
                    "a unique prompt was not a MISS: is the gateway caching by prefix?"
                )
            timing = headers.get("Server-Timing", "")
            upstream_ms = float(timing.split("dur=")[1]) if "dur=" in timing else 0.0
            added.append(elapsed - upstream_ms / 1000)
    direct_p, via_p = loadgen.percentiles(direct), loadgen.percentiles(via)
    return {
        "direct": direct_p,
        "via_gateway": via_p,
        "added_p50_ms_by_difference": round(via_p["p50_ms"] - direct_p["p50_ms"], 3),
        "added_p99_ms_by_difference": round(via_p["p99_ms"] - direct_p["p99_ms"], 3),
        "added_by_server_timing": loadgen.percentiles(added),
        "gateway_cpu_ms_per_request": loadgen.per_request_ms(cpu_before, loadgen.cpu_seconds(gateway_pid), count),
    }


def _table(result: dict[str, Any]) -> str:
    lines = []
    miss = result["miss"]
    lines.append("miss overhead (gateway vs direct, ms)       p50      p99")
    lines.append(
        f"  direct to engine                      {miss['direct']['p50_ms']:8.2f} {miss['direct']['p99_ms']:8.2f}"
    )
    lines.append(
        f"  through gateway                       {miss['via_gateway']['p50_ms']:8.2f} {miss['via_gateway']['p99_ms']:8.2f}"
    )
    st = miss["added_by_server_timing"]
    lines.append(f"  added (total - engine time)           {st['p50_ms']:8.3f} {st['p99_ms']:8.3f}")
    lines.append(f"  gateway CPU per miss (ms)             {miss['gateway_cpu_ms_per_request']}")
    lines.append("")
    lines.append(
        "hits                      conc   p50 ms   p99 ms      req/s  of redis-bench  not hit  cpu us/req"
    )
    for level in result["hits"]:
        ceiling = level["redis_benchmark"].get("rps")
        for name in ("local_tier", "redis_tier", "library_redis_tier"):
            row = level[name]
            share = f"{row['rps'] / ceiling:8.1%}" if ceiling else ""
            lines.append(
                f"  {name:22} {level['concurrency']:5} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} "
                f"{row['rps']:10.0f}  {share:>13}  {row.get('not_hits', row.get('misses', 0)):>7}  "
                f"{row.get('gateway_cpu_us_per_request') or '':>10}"
            )
        rb = level["redis_benchmark"]
        if "rps" in rb:
            lines.append(
                f"  {'redis-benchmark GET':22} {level['concurrency']:5} {rb['p50_ms']:8.3f} "
                f"{rb['p99_ms']:8.3f} {rb['rps']:10.0f}"
            )
    return "\n".join(lines)


def _levels(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--concurrency {text!r}: give integers like 1,16,64") from None


def _model(args: argparse.Namespace, upstream: str) -> str:
    import requests

    try:
        return (
            args.model or requests.get(upstream + "/v1/models", timeout=10).json()["data"][0]["id"]
        )
    except (requests.RequestException, KeyError, IndexError, ValueError) as error:
        raise DevloopError(
            f"cannot list models at {upstream} ({error}); start vLLM or pass --upstream-url"
        ) from None


def _hit_client(choice: str) -> str:
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise DevloopError(
            "wrk is not installed (scripts/bootstrap.sh installs it); use --client python"
        )
    return choice


class _Servers:
    """The private redis-server and the two gateways of one run, stopped (logs closed, work
    directory removed) on exit."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="devloop-cachebench-"))
        self.logs = contextlib.ExitStack()
        self.gateways: dict[str, str] = {}
        self.admins: dict[str, str] = {}
        self.pids: dict[str, int] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.logs.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def start_redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise DevloopError("redis-server is not installed: install it or pass --redis-url")
        port = _free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir)]
        self.processes.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        wait_until_listening(port, self.processes[-1], timeout=10)
        return f"redis://127.0.0.1:{port}/0"

    def start_gateway(self, name: str, upstream: str, redis_url: str, extra: list[str]) -> None:
        port, admin_port = _free_port(), _free_port()
        argv = [sys.executable, "-m", "devloop", "gateway", "--host", "127.0.0.1",
                "--port", str(port), "--admin-port", str(admin_port),
                "--upstream-url", upstream, "--redis-url", redis_url, *extra]
        log_path = self.workdir / f"gateway-{name}.log"
        log = self.logs.enter_context(open(log_path, "wb"))  # noqa: SIM115 - the ExitStack closes it
        self.processes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log))
        self.gateways[name] = f"http://127.0.0.1:{port}"
        self.admins[name] = f"http://127.0.0.1:{admin_port}"
        self.pids[name] = self.processes[-1].pid
        wait_until_listening(port, self.processes[-1], timeout=30)


def _hit_level(servers: _Servers, client: str, body: dict[str, Any], key: str, redis_url: str,
               concurrency: int, answer_bytes: int, args: argparse.Namespace) -> dict[str, Any]:
    """Hits at one concurrency: both gateway tiers, the library's Redis tier, redis-benchmark."""
    level: dict[str, Any] = {"concurrency": concurrency}
    for name in ("local", "redis"):
        url = servers.gateways[name] + "/v1/completions"
        pid = servers.pids[name]
        cpu_before = loadgen.cpu_seconds(pid)
        if client == "wrk":
            tier = loadgen.wrk_load(url, body, concurrency, args.duration, servers.workdir,
                                    servers.admins[name])
        else:
            tier = asyncio.run(loadgen.hit_load(url, body, concurrency, args.duration))
        # CPU per hit does not depend on how busy the machine is, unlike latency.
        tier["gateway_cpu_us_per_request"] = loadgen.per_request_ms(
            cpu_before, loadgen.cpu_seconds(pid), tier.get("n", 0), 1e6
        )
        level[f"{name}_tier"] = tier
    level["library_redis_tier"] = asyncio.run(
        loadgen.library_load(redis_url, key, concurrency, args.duration)
    )
    parsed = urlparse(redis_url)
    level["redis_benchmark"] = loadgen.redis_benchmark(
        parsed.hostname or "127.0.0.1", parsed.port or 6379, concurrency,
        args.redis_benchmark_requests, answer_bytes,
    )
    ceiling = level["redis_benchmark"].get("rps")
    if ceiling:
        # The local tier's share is the bound for the Redis tier: it is the same HTTP path
        # without the Redis call, so the gap between the two is what Redis costs.
        for name in ("local_tier", "redis_tier", "library_redis_tier"):
            level[f"{name}_share_of_ceiling"] = round(level[name]["rps"] / ceiling, 4)
    return level


def _measure(servers: _Servers, args: argparse.Namespace, upstream: str, model: str,
             redis_url: str, client: str) -> dict[str, Any]:
    import requests

    from devloop.gateway.cache.key import cache_key

    result: dict[str, Any] = {
        "upstream": upstream, "model": model, "redis": redis_url, "cpus": os.cpu_count(),
        "duration_s": args.duration, "hit_client": client,
    }
    print(f"miss overhead: {args.misses} requests each way ...", file=sys.stderr)
    result["miss"] = asyncio.run(_miss_overhead(
        upstream, servers.gateways["local"], model, args.misses, servers.pids["local"]
    ))
    body = {"model": model, "prompt": "The cache benchmark prompt.", "temperature": 0,
            "max_tokens": 16}
    prefill = requests.post(servers.gateways["local"] + "/v1/completions", json=body, timeout=120)
    if prefill.status_code != 200:
        raise DevloopError(f"prefill failed: {prefill.status_code} {prefill.text[:200]}")
    time.sleep(0.2)  # the Redis write follows the answer
    key = cache_key("/v1/completions", body)
    result["answer_bytes"] = len(prefill.content)
    result["hits"] = []
    for concurrency in _levels(args.concurrency):
        print(f"hits at concurrency {concurrency} ...", file=sys.stderr)
        result["hits"].append(_hit_level(servers, client, body, key, redis_url, concurrency,
                                         len(prefill.content), args))
    return result


def _run_streams(args: argparse.Namespace, upstream: str, model: str) -> int:
    from devloop.gateway.cache import streambench

    if args.stream_rounds < 1 or args.stream_tokens < 1:
        raise UsageError("--stream-rounds and --stream-tokens must be at least 1")
    with _Servers() as servers:
        servers.start_gateway("relay", upstream, "", ["--cache-policy", "none"])
        servers.start_gateway("local", upstream, "", [])
        result: dict[str, Any] = {"upstream": upstream, "model": model, "cpus": os.cpu_count()}
        print(f"streams: {args.stream_rounds} rounds ...", file=sys.stderr)
        result["stream"] = asyncio.run(streambench.stream_latency(
            upstream, servers.gateways["relay"], servers.gateways["local"], model,
            args.stream_rounds, args.stream_tokens,
        ))
    print(streambench.table(result["stream"]), file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    _levels(args.concurrency)  # a usage error before anything starts
    upstream = args.upstream_url.rstrip("/")
    model = _model(args, upstream)
    if args.stream:
        return _run_streams(args, upstream, model)
    client = _hit_client(args.client)
    with _Servers() as servers:
        redis_url = args.redis_url or servers.start_redis()
        for name, extra in (("local", []), ("redis", ["--cache-max-entries", "0"])):
            servers.start_gateway(name, upstream, redis_url, extra)
        result = _measure(servers, args, upstream, model, redis_url, client)
    print(_table(result), file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0
