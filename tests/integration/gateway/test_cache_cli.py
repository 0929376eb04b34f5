"""`devloop cache stats|flush|get` against a real gateway and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests

pytestmark = pytest.mark.redis


def _devloop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "devloop", "cache", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )


def test_get_stats_and_flush_see_what_the_gateway_cached(
    start_gateway, toy_upstream, redis_url, tmp_path
) -> None:
    gateway = start_gateway(toy_upstream.url, redis_url)
    body = {"prompt": "cli", "model": "toy", "temperature": 0, "max_tokens": 3}
    answer = requests.post(gateway.url + "/v1/completions", json=body, timeout=30)
    time.sleep(0.3)  # the Redis write follows the answer
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(dict(reversed(body.items())), indent=2))

    got = _devloop("get", "--redis-url", redis_url, "--request", str(request_file))
    assert got.returncode == 0, got.stderr
    stored = json.loads(got.stdout)  # the entry: the answer and the form it arrived in
    assert (stored["form"], stored["body"]) == ("json", answer.json())

    stats = _devloop("stats", "--redis-url", redis_url, "--admin-url", gateway.admin_url)
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    assert report["redis"]["keys"] == 1
    assert report["gateway"]["local_entries"] == 1 and report["gateway"]["misses"] == 1

    flushed = _devloop("flush", "--redis-url", redis_url, "--admin-url", gateway.admin_url)
    assert flushed.returncode == 0, flushed.stderr
    assert gateway.stats()["local_entries"] == 0
    missing = _devloop("get", "--redis-url", redis_url, "--request", str(request_file))
    assert missing.returncode == 1 and "no cached answer" in missing.stderr
    assert (
        requests.post(gateway.url + "/v1/completions", json=body, timeout=30).headers["X-Cache"]
        == "MISS"
    )


def test_an_unreachable_redis_is_an_error_that_says_what_to_do() -> None:
    result = _devloop("stats", "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert "is it running?" in result.stderr


def test_cache_bench_measures_misses_and_both_tiers_with_the_gateways_it_starts(
    toy_upstream, redis_url
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devloop", "cache", "bench", "--upstream-url", toy_upstream.url,
         # A short, light run: at full speed it would starve the tests running beside it.
         "--redis-url", redis_url, "--concurrency", "1,2", "--duration", "0.2", "--misses", "4",
         "--client", "python", "--redis-benchmark-requests", "100"],
        capture_output=True, check=False, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "toy" and report["redis"] == redis_url
    assert report["miss"]["direct"]["n"] == report["miss"]["via_gateway"]["n"] == 4
    assert [level["concurrency"] for level in report["hits"]] == [1, 2]
    for level in report["hits"]:
        for tier in ("local_tier", "redis_tier"):
            assert level[tier]["n"] > 0 and level[tier]["not_hits"] == 0, level
        assert level["library_redis_tier"]["n"] > 0
    assert "redis_tier" in result.stderr  # the table


def test_cache_bench_stream_mode_times_live_and_replayed_streams_side_by_side(
    toy_upstream,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devloop", "cache", "bench", "--stream", "--upstream-url",
         toy_upstream.url, "--stream-rounds", "2", "--stream-tokens", "4"],
        capture_output=True, check=False, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    stream = json.loads(result.stdout)["stream"]
    for path in ("direct", "relay", "miss", "hit"):
        assert stream[path]["done"]["n"] == 2, path
        assert stream[path]["first_event"]["p50_ms"] <= stream[path]["done"]["p50_ms"]
    # the toy engine spaces its three chunks 50 ms apart; a replay does not wait for them
    assert stream["hit"]["done"]["p50_ms"] < stream["miss"]["done"]["p50_ms"]
    assert set(stream["ratios"]) >= {"miss_over_relay_first_text_p50", "hit_over_miss_done_p50"}
    assert "first text p50" in result.stderr  # the table
