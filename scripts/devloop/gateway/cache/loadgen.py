"""The load generators and probes of `devloop cache bench`: hits driven by wrk or aiohttp, the
cache library's Redis tier without HTTP, redis-benchmark as the ceiling, a process's CPU time."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from devloop.common.stats import percentile


def percentiles(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples, 50) * 1000, 3),
        "p99_ms": round(percentile(samples, 99) * 1000, 3),
        "mean_ms": round(statistics.fmean(samples) * 1000, 3),
        "n": len(samples),
    }


async def hit_load(
    url: str, body: dict[str, Any], concurrency: int, duration: float
) -> dict[str, Any]:
    import aiohttp

    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    not_hits = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(deadline: float) -> None:
            nonlocal not_hits
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    if response.headers.get("X-Cache") != "HIT":
                        not_hits += 1
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(
            *(worker(time.perf_counter() + 0.3) for _ in range(concurrency))
        )  # warm-up
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + duration) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        **percentiles(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "not_hits": not_hits,
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_request_ms(
    before: float | None, after: float | None, count: int, scale: float = 1000.0
) -> float | None:
    if before is None or after is None or count <= 0:
        return None
    return round((after - before) / count * scale, 3)


def wrk_unit(text: str) -> float:
    """wrk's durations ("193.00us", "1.12ms", "2.00s") in milliseconds."""
    for suffix, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(suffix):
            return round(float(text[: -len(suffix)]) * factor, 3)
    raise ValueError(text)


def wrk_load(
    url: str, body: dict[str, Any], concurrency: int, duration: float, workdir: Path, admin: str
) -> dict[str, Any]:
    """Hits driven by wrk (one C thread, like redis-benchmark): p50/p99 and requests/s. The
    gateway's own counters prove every request was a hit."""
    import requests

    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{json.dumps(body)}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    before = requests.get(admin + "/cache/stats", timeout=10).json()
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    after = requests.get(admin + "/cache/stats", timeout=10).json()
    result: dict[str, Any] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            result[f"p{parts[0][:-1]}_ms"] = wrk_unit(parts[1])
        elif line.startswith("Requests/sec:"):
            result["rps"] = float(parts[1])
        elif "requests in" in line:
            result["n"] = int(parts[0])
        elif line.strip().startswith("Non-2xx"):
            result["non_2xx"] = int(parts[-1])
    hits = (after["hits_local"] + after["hits_redis"]) - (
        before["hits_local"] + before["hits_redis"]
    )
    result["not_hits"] = (after["requests"] - before["requests"]) - hits
    return result


async def library_load(
    redis_url: str, key: str, concurrency: int, duration: float
) -> dict[str, Any]:
    from devloop.gateway.cache.store import CacheConfig, ResponseCache

    cache = ResponseCache(
        CacheConfig(max_entries=0, redis_url=redis_url, redis_timeout_seconds=1.0)
    )
    latencies: list[float] = []
    misses = 0

    async def worker(deadline: float) -> None:
        nonlocal misses
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if await cache.get(key) is None:
                misses += 1
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker(time.perf_counter() + 0.3) for _ in range(concurrency)))
    latencies.clear()
    started = time.perf_counter()
    await asyncio.gather(*(worker(started + duration) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await cache.aclose()
    return {**percentiles(latencies), "rps": round(len(latencies) / elapsed, 1), "misses": misses}


def redis_benchmark(
    host: str, port: int, concurrency: int, requests_count: int, size: int
) -> dict[str, Any]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {"error": "redis-benchmark not installed"}
    output = subprocess.run(
        [
            binary,
            "-h",
            host,
            "-p",
            str(port),
            "-t",
            "get",
            "-n",
            str(requests_count),
            "-c",
            str(concurrency),
            "-d",
            str(size),
            "--csv",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    lines = [line for line in output.splitlines() if line.startswith('"')]
    header = [cell.strip('"') for cell in lines[0].split(",")]
    values = [cell.strip('"') for cell in lines[1].split(",")]
    row = dict(zip(header, values, strict=True))
    return {
        "rps": float(row["rps"]),
        "p50_ms": float(row.get("p50_latency_ms", "nan")),
        "p99_ms": float(row.get("p99_latency_ms", "nan")),
    }
